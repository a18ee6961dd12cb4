"""Measurements, each a ratio against a baseline measured in the same run.

1. Delivery fan-out (bench/delivery.py): N deliveries spread over 16 live loopback hosts
   (the worker allows 2 requests in flight per host), against raw sign+POST to the same
   hosts with the same total concurrency and per-host cap: in process on SQLite
   (``worker.run_once``), and on PostgreSQL with 1 and 2 ``interocc worker`` processes.
2. Dead hosts (bench/delivery.py): followers on 60 live, 30 hanging and 10 refusing hosts,
   a communiqué published with ``worker.run_forever`` running: the live followers served
   within 5 s over all of them (reads 1.00), and when the last one is, against the 60 live
   hosts alone; on SQLite and on PostgreSQL.
3. Incoming JSON-LD: ``normalise`` (expand, coerce, compact against our context) against a
   bare pyld expansion of the same Mastodon Create, both with our offline loader.
4. Signing (bench/delivery.py): publish + delivery timed together, with the proofs and Linked
   Data signature as built against signing switched off in the bench process, on SQLite and
   on PostgreSQL; and the milliseconds one ``proofs.secure_activity`` call takes.
5. Inbound federation (bench/inbound.py): signed inbox POSTs and actor GETs against bare
   Starlette apps, on SQLite and on PostgreSQL.

Whatever needs PostgreSQL is skipped, and says so, when nothing answers at 127.0.0.1:5432.
The ratios are what to watch, not the absolute numbers. Run with `make bench` (N
deliveries, default 400: `python -m bench 1000`); the signing figures alone with
`python -m bench signing [N]`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from bench import delivery, inbound


def normalise_ratio(runs: int = 200) -> tuple[float, float]:
    """Seconds per call: bare pyld expansion, then our full normalise, same document."""
    from pyld import jsonld as pyld

    from server.activitypub import jsonld
    from tests.test_jsonld import MASTODON_CREATE

    options = jsonld._options()
    jsonld.normalise(MASTODON_CREATE)  # warm both caches
    pyld.expand(MASTODON_CREATE, options)
    start = time.perf_counter()
    for _ in range(runs):
        pyld.expand(MASTODON_CREATE, options)
    bare = (time.perf_counter() - start) / runs
    start = time.perf_counter()
    for _ in range(runs):
        jsonld.normalise(MASTODON_CREATE)
    ours = (time.perf_counter() - start) / runs
    return bare, ours


async def main(n: int) -> None:
    await delivery.sqlite_fanout(n)
    await delivery.signing_cost()
    await delivery.signing_fanout("SQLite", n)
    await delivery.dead_host_figures("SQLite")
    bare, full = normalise_ratio()
    print("incoming JSON-LD, one Mastodon Create:")
    print(f"baseline pyld expand:   {bare * 1000:8.2f} ms")
    print(f"interocc normalise:     {full * 1000:8.2f} ms")
    print(f"ratio (normalise/expand): {full / bare:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'inbound.sqlite3'}"
        figures = await inbound.measure(url, n_inbox=n * 10, n_get=n * 50)
        inbound.report("SQLite", figures)
    pg = await inbound.postgres_database()
    if pg is None:
        print("PostgreSQL: not answering at 127.0.0.1:5432, not measured")
        return
    url, drop = pg
    try:
        # Two web processes: what README recommends for a 2-core machine.
        figures = await inbound.measure(url, n_inbox=n * 10, n_get=n * 50, workers=2)
        inbound.report("PostgreSQL", figures)
    finally:
        await drop()
    await delivery.postgres_fanout(n)
    await delivery.signing_fanout("PostgreSQL", n)
    await delivery.dead_host_figures("PostgreSQL")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["signing"]:
        asyncio.run(delivery.signing_figures(int(args[1]) if len(args) > 1 else 400))
    else:
        asyncio.run(main(int(args[0]) if args else 400))
