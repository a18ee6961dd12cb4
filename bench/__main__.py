"""Measurements, each a ratio against a baseline measured in the same run.

1. Delivery throughput: our worker against raw sign+POST to the same loopback sink. Both
   sides sign every request afresh and POST it to a uvicorn sink on 127.0.0.1 with the
   same concurrency.
2. Incoming JSON-LD: ``normalise`` (expand, coerce, compact against our context) against a
   bare pyld expansion of the same Mastodon Create, both with our offline loader.

3. Inbound federation (bench/inbound.py): signed inbox POSTs and actor GETs against bare
   Starlette apps, on SQLite and on PostgreSQL.

The ratios are what to watch, not the absolute numbers. Run with `make bench` (N
deliveries, default 400: `python -m bench 1000`).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench import inbound
from server import assemblies, communiques, migrate, worker
from server.activitypub.signatures import generate_private_key_pem, load_private_key, sign_request
from server.config import Settings
from server.context import create_context
from server.db import create_engine
from server.models import Follower, RemoteActor
from tests.support.servers import ServerThread

CONCURRENCY = 8


def sink() -> tuple[Starlette, list[int]]:
    seen: list[int] = []

    async def inbox(request: Request) -> Response:
        await request.body()
        seen.append(1)
        return Response(status_code=202)

    return Starlette(routes=[Route("/inbox/{n}", inbox, methods=["POST"])]), seen


async def baseline(base: str, n: int, body: bytes) -> float:
    private_pem, _ = generate_private_key_pem()
    key = load_private_key(private_pem)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(trust_env=False) as http:

        async def one(i: int) -> None:
            url = f"{base}/inbox/{i}"
            async with gate:
                headers = {"Content-Type": "application/activity+json"}
                headers |= sign_request(
                    "POST", url, headers, body, key_id="k", private_key=key, now=datetime.now(UTC)
                )
                (await http.post(url, content=body, headers=headers)).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start


async def ours(base: str, n: int, workdir: Path) -> float:
    url = f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}"
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    settings = Settings(
        base_url="http://127.0.0.1:1",
        database_url=url,
        secret_key="x" * 32,
        allow_private_addresses=True,
        delivery_concurrency=CONCURRENCY,
    )
    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session, session.begin():
            assembly = await assemblies.create(session, handle="bench", name="Bench")
            await assemblies.approve(session, "bench", now=ctx.clock())
            for i in range(n):
                actor = RemoteActor(
                    uri=f"{base}/users/{i}", domain="127.0.0.1", inbox_uri=f"{base}/inbox/{i}"
                )
                session.add(actor)
                await session.flush()
                session.add(Follower(assembly_id=assembly.id, actor_id=actor.id, follow_uri="f"))
        async with ctx.sessions() as session, session.begin():
            published = await communiques.publish(
                session, ctx.urls, handle="bench", source="Bench communiqué.", now=ctx.clock()
            )
        assert published.deliveries == n
        start = time.perf_counter()
        done = 0
        while done < n:
            done += await worker.run_once(ctx, limit=200)
        return time.perf_counter() - start
    finally:
        await ctx.aclose()


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
    app, seen = sink()
    body = b'{"type":"Create","object":{"type":"Note","content":"' + b"x" * 800 + b'"}}'
    with ServerThread(app) as server, tempfile.TemporaryDirectory() as tmp:
        raw = await baseline(server.base_url, n, body)
        mine = await ours(server.base_url, n, Path(tmp))
    assert len(seen) == 2 * n, len(seen)
    print(f"deliveries: {n} each, concurrency {CONCURRENCY}, SQLite")
    print(f"baseline raw sign+POST: {n / raw:8.1f}/s")
    print(f"interocc worker:        {n / mine:8.1f}/s")
    print(f"ratio (worker/baseline): {raw / mine:.2f}")
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
        print("inbound, PostgreSQL: not answering at 127.0.0.1:5432, not measured")
        return
    url, drop = pg
    try:
        # Two web processes: what README recommends for a 2-core machine.
        figures = await inbound.measure(url, n_inbox=n * 10, n_get=n * 50, workers=2)
        inbound.report("PostgreSQL", figures)
    finally:
        await drop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 400))
