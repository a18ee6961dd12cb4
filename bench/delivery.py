"""Outbound delivery, each figure against a baseline measured in the same run.

Every sink is a loopback host of tests/support/sinks.py (live: answers 202 at once; hanging:
accepts and never answers; refusing: nothing listens). A host is host:port, so followers on
different ports are on different hosts, and the per-host cap applies to each.

- fan-out: ``n`` deliveries spread over :data:`HOSTS` live hosts, one follower (no shared
  inbox) each. The baseline signs every request afresh and POSTs it with httpx (every
  connection kept alive), with the worker's default total concurrency and per-host cap, to
  the same hosts. In process on SQLite (``worker.run_once``), and on PostgreSQL with 1 and 2
  ``interocc worker`` processes against the baseline in a process of its own; the processes
  are timed from the first request a sink receives until the database counts every row
  delivered, so their start-up is left out;
- dead hosts: 60 live, 30 hanging and 10 refusing hosts, one follower each; a communiqué
  published with ``worker.run_forever`` running (default settings, but a 3 s delivery
  timeout so the hanging requests end). How many live followers are served within 5 s, and
  when the last one is, against the 60 live hosts alone;
- signing: publish and delivery timed together (``communiques.publish``, which signs the
  Create{Note} once in ``outbox.send``, then ``worker.run_once`` to the same :data:`HOSTS`
  hosts), with signing as built against signing switched off in this process
  (``proofs.secure_activity`` returning the document unchanged); in process on SQLite and on
  PostgreSQL, each on fresh databases, the two alternating. The communiqué is the founding
  one (docs/founding-communique.txt), so the signed document is full size. And the
  milliseconds one ``secure_activity`` call takes on that Create{Note}.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench import inbound
from server import assemblies, communiques, migrate, worker
from server.activitypub import ldsig, proofs
from server.activitypub.delivery import host_key
from server.activitypub.signatures import generate_private_key_pem, load_private_key, sign_request
from server.config import Settings
from server.context import Context, create_context
from server.db import create_engine
from server.models import Delivery, DeliveryStatus, Follower, RemoteActor
from tests.support.sinks import Host, Sinks

HOSTS = 16
DEFAULTS = Settings(base_url="http://127.0.0.1:1", database_url="", secret_key="x" * 32)
CONCURRENCY = DEFAULTS.delivery_concurrency
PER_HOST = DEFAULTS.delivery_per_host
BODY = b'{"type":"Create","object":{"type":"Note","content":"' + b"x" * 800 + b'"}}'
SERVED_WITHIN = 5.0
FOUNDING = Path(__file__).resolve().parent.parent / "docs" / "founding-communique.txt"


def settings_for(database_url: str, **changes: object) -> Settings:
    base = replace(DEFAULTS, database_url=database_url, allow_private_addresses=True)
    return replace(base, **changes)  # type: ignore[arg-type]


def spread(hosts: Sequence[Host], n: int) -> list[str]:
    """``n`` inboxes, one per follower, dealt over ``hosts`` in turn."""
    return [hosts[i % len(hosts)].inbox(i) for i in range(n)]


# -- the baseline --------------------------------------------------------------------------


async def raw_fanout(inboxes: list[str], body: bytes) -> float:
    """Seconds to sign and POST ``body`` to every inbox (a fresh signature each), at most
    :data:`CONCURRENCY` at once and :data:`PER_HOST` per host, as the worker is allowed."""
    key = load_private_key(generate_private_key_pem()[0])
    gate = asyncio.Semaphore(CONCURRENCY)
    per_host = {host_key(url): asyncio.Semaphore(PER_HOST) for url in inboxes}
    # Every connection kept alive: the baseline is sign+POST done right, so what our client
    # loses to reconnecting counts against us.
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(trust_env=False, limits=limits) as http:

        async def one(url: str) -> None:
            async with per_host[host_key(url)], gate:
                headers = {"Content-Type": "application/activity+json"}
                headers |= sign_request(
                    "POST", url, headers, body, key_id="k", private_key=key, now=datetime.now(UTC)
                )
                (await http.post(url, content=body, headers=headers)).raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(url) for url in inboxes))
        return time.perf_counter() - start


def _raw_fanout_sync(inboxes: list[str], body: bytes) -> float:
    return asyncio.run(raw_fanout(inboxes, body))


async def raw_fanout_process(inboxes: list[str], body: bytes) -> float:
    """:func:`raw_fanout` in a fresh process, as each ``interocc worker`` is one."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return await asyncio.wrap_future(pool.submit(_raw_fanout_sync, inboxes, body))


# -- our side ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def database(engine: str) -> AsyncIterator[str]:
    """A fresh, empty database: a file in a temporary directory, or a PostgreSQL database
    dropped afterwards."""
    if engine == "SQLite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}"
        return
    pg = await inbound.postgres_database()
    assert pg is not None, "PostgreSQL does not answer"
    url, drop = pg
    try:
        yield url
    finally:
        await drop()


async def _prepare(settings: Settings, inboxes: list[str], *, publish: bool) -> None:
    """A migrated database with an approved assembly followed from every inbox; with
    ``publish``, a communiqué already queued for all of them."""
    engine = create_engine(settings.database_url)
    await migrate.upgrade(engine)
    await engine.dispose()
    ctx = await create_context(settings)
    try:
        await _follow(ctx, inboxes)
        if publish:
            await _publish(ctx, len(inboxes), wake=False)
    finally:
        await ctx.aclose()


async def _follow(ctx: Context, inboxes: list[str]) -> None:
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.create(session, handle="bench", name="Bench")
        await assemblies.approve(session, "bench", now=ctx.clock())
        actors = [
            RemoteActor(uri=inbox.removesuffix("/inbox"), domain="127.0.0.1", inbox_uri=inbox)
            for inbox in inboxes
        ]
        session.add_all(actors)
        await session.flush()
        session.add_all(
            Follower(assembly_id=assembly.id, actor_id=actor.id, follow_uri="f") for actor in actors
        )


async def _publish(ctx: Context, n: int, *, wake: bool, source: str = "Bench communiqué.") -> None:
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session,
            ctx.urls,
            handle="bench",
            source=source,
            now=ctx.clock(),
            wake=ctx.wake if wake else None,
        )
    assert published.deliveries == n, published.deliveries


async def run_once_fanout(database_url: str, inboxes: list[str]) -> float:
    """Seconds for ``worker.run_once`` (in this process) to deliver a communiqué queued for
    every inbox."""
    settings = settings_for(database_url)
    await _prepare(settings, inboxes, publish=True)
    ctx = await create_context(settings)
    try:
        start = time.perf_counter()
        done = 0
        while done < len(inboxes):
            done += await worker.run_once(ctx)
        return time.perf_counter() - start
    finally:
        await ctx.aclose()


async def _delivered(ctx: Context) -> int:
    async with ctx.sessions() as session:
        query = select(func.count()).where(Delivery.status == DeliveryStatus.DELIVERED)
        return int(await session.scalar(query) or 0)


async def processes_fanout(database_url: str, hosts: list[Host], n: int, processes: int) -> float:
    """Deliveries per second of ``processes`` ``interocc worker`` processes started with a
    communiqué already queued for ``n`` followers: from the first request a sink receives
    (process start-up left out) until the database counts every row delivered."""
    inboxes = spread(hosts, n)
    settings = settings_for(database_url)
    await _prepare(settings, inboxes, publish=True)
    for host in hosts:
        host.received.clear()
    env = inbound._env(settings)
    with tempfile.TemporaryFile() as log:
        spawned = [
            await asyncio.create_subprocess_exec(
                inbound.INTEROCC,
                "worker",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
            for _ in range(processes)
        ]
        ctx = await create_context(settings)
        try:
            deadline = time.monotonic() + 120
            while sum(len(h.received) for h in hosts) < n:
                if time.monotonic() > deadline or any(p.returncode is not None for p in spawned):
                    log.seek(0)
                    tail = log.read()[-2000:].decode(errors="replace")
                    raise SystemExit(f"bench: interocc worker stalled or stopped\n{tail}")
                await asyncio.sleep(0.005)
            while await _delivered(ctx) < n:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: deliveries received but not recorded")
                await asyncio.sleep(0.01)
            end = time.monotonic()
        finally:
            await ctx.aclose()
            for process in spawned:
                os.killpg(process.pid, signal.SIGTERM)
            for process in spawned:
                await process.wait()
    start = min(h.received[0].at for h in hosts)
    return n / (end - start)


@dataclass(frozen=True)
class Served:
    live: int
    within: int  # live followers served within SERVED_WITHIN seconds of the publication
    last: float  # seconds from the publication to the last live follower's first request


async def dead_hosts(database_url: str, live: int, hanging: int, refusing: int) -> Served:
    """Publish to followers on live, hanging and refusing hosts (one each) with the worker
    running in this process; when was each live follower served?"""
    # The defaults, but a 3 s delivery timeout so that the hanging requests end soon after.
    settings = settings_for(database_url, delivery_timeout=3.0)
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    await engine.dispose()
    with Sinks() as sinks:
        kinds = [sinks.live() for _ in range(live)]
        kinds += [sinks.hanging() for _ in range(hanging)]
        kinds += [sinks.refusing() for _ in range(refusing)]
        # Interleaved, so that dead hosts sit in front of live ones in the queue.
        ordered = [h for _, h in sorted(enumerate(kinds), key=lambda p: (p[0] % 10, p[0]))]
        live_hosts = [h for h in kinds if h.kind == "live"]
        ctx = await create_context(settings)
        stop = asyncio.Event()
        try:
            await _follow(ctx, [h.inbox() for h in ordered])
            running = asyncio.create_task(worker.run_forever(ctx, stop))
            await asyncio.sleep(0.2)  # the worker is up and idle, as in production
            started = time.monotonic()
            await _publish(ctx, len(kinds), wake=True)
            while time.monotonic() - started < 2 * SERVED_WITHIN and not all(  # noqa: ASYNC110
                h.received for h in live_hosts
            ):
                await asyncio.sleep(0.01)
            stop.set()
            await running
        finally:
            stop.set()
            await ctx.aclose()
    served = [h.received[0].at - started for h in live_hosts if h.received]
    return Served(
        live=live,
        within=sum(1 for s in served if s <= SERVED_WITHIN),
        last=max(served) if len(served) == live else float("inf"),
    )


@contextlib.contextmanager
def signing_timed(spent: list[float]) -> Iterator[None]:
    """Within: every ``proofs.secure_activity`` call runs as built, its seconds appended to
    ``spent``; restored afterwards."""
    original = proofs.secure_activity

    def timed(doc: Any, keys: proofs.SigningKeys, created: datetime) -> Any:
        start = time.perf_counter()
        try:
            return original(doc, keys, created)
        finally:
            spent.append(time.perf_counter() - start)

    proofs.secure_activity = timed
    try:
        yield
    finally:
        proofs.secure_activity = original


@contextlib.contextmanager
def signing_off() -> Iterator[None]:
    """Within: ``proofs.secure_activity`` returns the activity unchanged (no proof, no Linked
    Data signature), in this process only; restored afterwards."""
    original = proofs.secure_activity

    def unsigned(doc: Any, keys: proofs.SigningKeys, created: datetime) -> Any:
        return doc

    proofs.secure_activity = unsigned
    try:
        yield
    finally:
        proofs.secure_activity = original


async def publish_fanout(database_url: str, inboxes: list[str], source: str) -> float:
    """Seconds from the start of ``communiques.publish`` (signing included, as built or
    switched off by the caller) until ``worker.run_once`` has delivered to every inbox."""
    settings = settings_for(database_url)
    await _prepare(settings, inboxes, publish=False)
    ctx = await create_context(settings)
    try:
        start = time.perf_counter()
        await _publish(ctx, len(inboxes), wake=False, source=source)
        done = 0
        while done < len(inboxes):
            done += await worker.run_once(ctx)
        return time.perf_counter() - start
    finally:
        await ctx.aclose()


@dataclass(frozen=True)
class SigningCost:
    first: float  # seconds, the first call in the process: the new assembly's keys parsed
    warm: float  # seconds per call after it
    ld_only: float  # seconds per ldsig.sign alone, as secure_activity calls it
    size: int  # bytes of the signed JSON


async def secure_activity_cost(runs: int = 100) -> SigningCost:
    """What ``proofs.secure_activity`` costs on the Create{Note} ``communiques.publish``
    builds for the founding communiqué (caught on its way into ``secure_activity``): its first
    call, inside the publication, then per call warm, and ``ldsig.sign`` alone on the document
    as ``secure_activity`` signs it (with its two proofs)."""
    caught: list[tuple[Any, proofs.SigningKeys, datetime]] = []
    first: list[float] = []
    original = proofs.secure_activity

    def catch(doc: Any, keys: proofs.SigningKeys, created: datetime) -> Any:
        caught.append((doc, keys, created))
        start = time.perf_counter()
        try:
            return original(doc, keys, created)
        finally:
            first.append(time.perf_counter() - start)

    async with database("SQLite") as url:
        settings = settings_for(url)
        await _prepare(settings, [], publish=False)
        ctx = await create_context(settings)
        proofs.secure_activity = catch
        try:
            await _publish(ctx, 0, wake=False, source=FOUNDING.read_text())
        finally:
            proofs.secure_activity = original
            await ctx.aclose()
    [(doc, keys, created)] = caught
    signed = original(doc, keys, created)
    assert "proof" in signed and "proof" in signed["object"] and "signature" in signed
    start = time.perf_counter()
    for _ in range(runs):
        original(doc, keys, created)
    whole = (time.perf_counter() - start) / runs
    # The Linked Data signature is made last, over the document with both proofs.
    proven = {key: value for key, value in signed.items() if key != "signature"}
    rsa_key = proofs.private_key(keys.rsa_private_pem)
    start = time.perf_counter()
    for _ in range(runs):
        ldsig.sign(proven, creator=keys.rsa_key_id, private_key=rsa_key, created=created)
    ld_only = (time.perf_counter() - start) / runs
    return SigningCost(first[0], whole, ld_only, len(json.dumps(signed).encode()))


# -- the figures ---------------------------------------------------------------------------


async def sqlite_fanout(n: int) -> None:
    with Sinks() as sinks:
        hosts = [sinks.live() for _ in range(HOSTS)]
        raw = await raw_fanout(spread(hosts, n), BODY)
        async with database("SQLite") as url:
            mine = await run_once_fanout(url, spread(hosts, n))
        received = sum(len(h.received) for h in hosts)
    assert received == 2 * n, received
    print(
        f"delivery fan-out, SQLite, in process: {n} deliveries over {HOSTS} live hosts, "
        f"concurrency {CONCURRENCY}, at most {PER_HOST} per host (both sides)"
    )
    print(f"  baseline raw sign+POST: {n / raw:8.1f}/s")
    print(f"  interocc worker.run_once: {n / mine:8.1f}/s")
    print(f"  ratio (worker/baseline): {raw / mine:.2f}")


async def postgres_fanout(n: int) -> None:
    """Baseline, 1 and 2 worker processes, each on a fresh database, to the same hosts."""
    with Sinks() as sinks:
        hosts = [sinks.live() for _ in range(HOSTS)]
        raw = n / await raw_fanout_process(spread(hosts, n), BODY)
        rates = {}
        for processes in (1, 2):
            async with database("PostgreSQL") as url:
                rates[processes] = await processes_fanout(url, hosts, n, processes)
    print(
        f"delivery fan-out, PostgreSQL, worker processes: {n} deliveries over {HOSTS} live "
        f"hosts, concurrency {CONCURRENCY}, at most {PER_HOST} per host (over all processes)"
    )
    print(f"  baseline raw sign+POST, 1 process: {raw:8.1f}/s")
    for processes, rate in rates.items():
        print(
            f"  {processes} interocc worker process(es): {rate:8.1f}/s  "
            f"ratio (workers/baseline) {rate / raw:.2f}"
        )
    print(f"  ratio (2 workers/1 worker): {rates[2] / rates[1]:.2f}")


async def dead_host_figures(engine: str) -> None:
    live, hanging, refusing = 60, 30, 10
    async with database(engine) as url:
        mixed = await dead_hosts(url, live, hanging, refusing)
    async with database(engine) as url:
        alone = await dead_hosts(url, live, 0, 0)
    print(
        f"dead hosts, {engine}: {live} live, {hanging} hanging, {refusing} refusing hosts, "
        "one follower each, worker.run_forever with default settings (delivery timeout 3 s)"
    )
    print(
        f"  live followers served within {SERVED_WITHIN:.0f} s / all live: "
        f"{mixed.within / mixed.live:.2f} ({mixed.within}/{mixed.live})"
    )
    print(
        f"  last live follower served after {mixed.last:.2f} s; with the {live} live hosts "
        f"alone {alone.last:.2f} s; ratio (with dead/alone) {mixed.last / alone.last:.2f}"
    )


async def signing_fanout(engine: str, n: int, rounds: int = 3) -> None:
    """Publish + delivery, signed as built and unsigned, alternating on fresh databases to the
    same hosts; the fastest of ``rounds`` each."""
    source = FOUNDING.read_text()
    times: dict[bool, list[float]] = {True: [], False: []}
    spent: list[float] = []  # seconds inside secure_activity, in the signed runs
    with Sinks() as sinks:
        hosts = [sinks.live() for _ in range(HOSTS)]
        for _ in range(rounds):
            for signed in (False, True):
                for host in hosts:
                    host.received.clear()
                async with database(engine) as url:
                    if signed:
                        with signing_timed(spent):
                            seconds = await publish_fanout(url, spread(hosts, n), source)
                    else:
                        with signing_off():
                            seconds = await publish_fanout(url, spread(hosts, n), source)
                times[signed].append(seconds)
                sample = hosts[0].received[0].json
                assert sum(len(h.received) for h in hosts) == n
                assert ("signature" in sample and "proof" in sample) == signed, sample.keys()
    signed_rate = n / min(times[True])
    unsigned_rate = n / min(times[False])
    print(
        f"signing, {engine}, in process: communiques.publish + worker.run_once, {n} deliveries "
        f"over {HOSTS} live hosts, the founding communiqué, best of {rounds} (alternating)"
    )
    print(f"  signing switched off:     {unsigned_rate:8.1f}/s")
    print(f"  signed as built:          {signed_rate:8.1f}/s")
    print(
        f"  ratio (signed/unsigned): {signed_rate / unsigned_rate:.2f}  "
        f"cost {100 * (unsigned_rate / signed_rate - 1):+.1f} % time"
    )
    # The difference above is within the run-to-run spread; this share is not. Each run has a
    # new assembly, so its one signing is a first call (its RSA key parsed, as after a restart).
    assert len(spent) == rounds, spent  # one signing per publication, none per delivery
    share = sum(spent) / sum(times[True])
    print(
        f"  inside secure_activity: {1000 * sum(spent) / rounds:.2f} ms per publication "
        f"(first call), {100 * share:.2f} % of the signed runs' time"
    )


async def signing_cost() -> None:
    cost = await secure_activity_cost()
    print(f"signing one Create{{Note}} (the founding communiqué, {cost.size} bytes signed):")
    print(f"  proofs.secure_activity, first call: {cost.first * 1000:8.2f} ms (keys parsed)")
    print(f"  proofs.secure_activity, warm:       {cost.warm * 1000:8.2f} ms")
    print(
        f"  of which ldsig.sign:                {cost.ld_only * 1000:8.2f} ms "
        "(URDNA2015 + RSA, over both proofs)"
    )


async def signing_figures(n: int) -> None:
    """The signing figures alone (``python -m bench signing [N]``)."""
    await signing_cost()
    await signing_fanout("SQLite", n)
    pg = await inbound.postgres_database()
    if pg is None:
        print("PostgreSQL: not answering at 127.0.0.1:5432, not measured")
        return
    await pg[1]()  # only asked whether it answers; signing_fanout makes its own
    await signing_fanout("PostgreSQL", n)
