"""Inbound federation: signed inbox POSTs and actor GETs, each against a bare baseline.

Both sides run under uvicorn (uvloop, httptools) in processes of their own, with the same
number of web processes (``interocc serve --workers N`` against ``uvicorn --workers N``), and
get the same requests over 16 keep-alive connections from a load generator in another process
(bench/load.py); every request is signed before the clock starts and the signers' keys are
already cached.

- inbox: signed ``Create{Note}`` replies to a communiqué, from 50 actors, to the shared inbox,
  against a bare Starlette app that verifies the same draft-cavage signatures (Digest included)
  and parses the JSON;
- GET: ``/actors/{handle}`` as ActivityStreams, against a bare Starlette app answering the same
  document from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import bare, load
from server import assemblies, communiques, migrate
from server.activitypub.signatures import generate_private_key_pem, load_private_key, sign_request
from server.config import Settings
from server.context import create_context
from server.db import create_engine
from server.federation import inbox_queue
from server.models import RemoteActor, RemoteKey
from tests.support.servers import free_port

CONNECTIONS = 16
ACTORS = 50
INTEROCC = str(Path(sys.executable).parent / "interocc")
PG_ADMIN = os.environ.get(
    "INTEROCC_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
AS = "https://www.w3.org/ns/activitystreams"

Requests = list[tuple[str, dict[str, str], bytes]]


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    return env | {
        "INTEROCC_DATABASE_URL": settings.database_url,
        "INTEROCC_BASE_URL": settings.base_url,
        "INTEROCC_SECRET_KEY": settings.secret_key,
        "INTEROCC_ALLOW_PRIVATE_ADDRESSES": "true",
        "INTEROCC_INBOX_PER_ACTOR_PER_MINUTE": "10000000",
        "INTEROCC_INBOX_PER_HOST_PER_MINUTE": "10000000",
    }


@contextlib.asynccontextmanager
async def _serving(argv: list[str], env: dict[str, str], ready: str) -> AsyncIterator[None]:
    """A server in processes of its own (uvicorn: uvloop, httptools), until the block ends."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(trust_env=False) as http:
            while True:
                try:
                    if (await http.get(ready)).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.returncode is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: {argv[:4]} did not start")
                await asyncio.sleep(0.2)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


def _ours(settings: Settings, workers: int) -> list[str]:
    port = str(urlsplit(settings.base_url).port)
    return [INTEROCC, "serve", "--port", port, "--workers", str(workers)]


def _bare(factory: str, settings: Settings, workers: int) -> list[str]:
    port = str(urlsplit(settings.base_url).port)
    argv = [sys.executable, "-m", "uvicorn", "--factory", f"bench.bare:{factory}"]
    return argv + ["--port", port, "--workers", str(workers), "--log-level", "warning"]


async def _rate(
    argv: list[str], env: dict[str, str], ready: str, url: str, requests: list[bytes]
) -> float:
    async with _serving(argv, env, ready):
        seconds, seen = await load.drive(url, requests, CONNECTIONS)
    if set(seen) - {200, 202}:
        raise SystemExit(f"bench: {argv[:4]} answered {seen}")
    return len(requests) / seconds


async def measure(
    database_url: str, n_inbox: int, n_get: int, *, workers: int = 1
) -> dict[str, float]:
    """Requests per second: bare and ours, for the inbox and for actor GETs."""
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    await engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        base_url=base,
        database_url=database_url,
        secret_key="x" * 32,
        allow_private_addresses=True,
        inbox_per_actor=10_000_000,
        inbox_per_host=10_000_000,
    )
    private_pem, public_pem = generate_private_key_pem()
    private_key = load_private_key(private_pem)
    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session, session.begin():
            await assemblies.create(session, handle="bench", name="Bench")
            await assemblies.approve(session, "bench", now=ctx.clock())
            published = await communiques.publish(
                session, ctx.urls, handle="bench", source="Bench communiqué.", now=ctx.clock()
            )
            for i in range(ACTORS):
                actor_uri = f"https://peer{i}.bench.example/users/a"
                session.add(
                    RemoteActor(
                        uri=actor_uri, domain=f"peer{i}.bench.example", inbox_uri=f"{actor_uri}/i"
                    )
                )
                session.add(
                    RemoteKey(
                        key_id=f"{actor_uri}#main-key",
                        owner_uri=actor_uri,
                        public_key_pem=public_pem,
                        fetched_at=ctx.clock(),
                    )
                )
    finally:
        await ctx.aclose()

    inbox_url = f"{base}/inbox"
    now = datetime.now(UTC)
    posts: Requests = []
    for n in range(n_inbox):
        actor_uri = f"https://peer{n % ACTORS}.bench.example/users/a"
        note = f"{actor_uri}/notes/{n}"
        body = json.dumps(
            {
                "@context": AS,
                "id": f"{note}/activity",
                "type": "Create",
                "actor": actor_uri,
                "to": [f"{AS}#Public"],
                "object": {
                    "id": note,
                    "type": "Note",
                    "attributedTo": actor_uri,
                    "inReplyTo": published.url,
                    "to": [f"{AS}#Public"],
                    "content": f"<p>Reply number {n}</p>",
                },
            }
        ).encode()
        headers = {"Content-Type": "application/activity+json"}
        headers |= sign_request(
            "POST",
            inbox_url,
            headers,
            body,
            key_id=f"{actor_uri}#main-key",
            private_key=private_key,
            now=now,
        )
        posts.append((inbox_url, headers, body))
    gets: Requests = [
        (f"{base}/actors/bench", {"Accept": "application/activity+json"}, b"")
    ] * n_get

    raw_posts = [load.raw_request("POST", *post) for post in posts]
    raw_gets = [load.raw_request("GET", *get) for get in gets]
    env = _env(settings)
    ready = f"{base}/.well-known/nodeinfo"
    ours_inbox = await _rate(_ours(settings, workers), env, ready, base, raw_posts)
    # What the inbox queued, applied by a worker (in this process, nothing else running).
    ctx = await create_context(settings)
    try:
        started = time.perf_counter()
        processed = await inbox_queue.drain(ctx)
        ours_processing = time.perf_counter() - started
        async with ctx.sessions() as session:
            left = await inbox_queue.counts(session)
    finally:
        await ctx.aclose()
    if processed != n_inbox or any(left.values()):
        raise SystemExit(f"bench: {processed} of {n_inbox} processed, left {left}")
    ours_get = await _rate(_ours(settings, workers), env, ready, base, raw_gets)
    async with _serving(_ours(settings, 1), env, ready), httpx.AsyncClient(trust_env=False) as http:
        document = (await http.get(gets[0][0], headers=gets[0][1])).json()
    bare_env = env | {"BENCH_PUBLIC_PEM": public_pem, "BENCH_DOCUMENT": json.dumps(document)}
    bare_ready = f"{base}{bare.READY}"
    bare_inbox = await _rate(
        _bare("inbox_app", settings, workers), bare_env, bare_ready, base, raw_posts
    )
    bare_get = await _rate(
        _bare("get_app", settings, workers), bare_env, bare_ready, base, raw_gets
    )
    return {
        "workers": workers,
        "inbox_bare": bare_inbox,
        "inbox_ours": ours_inbox,
        "processing_ours": n_inbox / ours_processing,
        "get_bare": bare_get,
        "get_ours": ours_get,
    }


async def postgres_database() -> tuple[str, Callable[[], Awaitable[None]]] | None:
    """A fresh PostgreSQL database for the run, or None if PostgreSQL does not answer."""
    name = f"interocc_bench_{os.getpid()}"
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            await conn.execute(text(f"CREATE DATABASE {name}"))
    except OSError:
        await admin.dispose()
        return None

    async def drop() -> None:
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        await admin.dispose()

    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, drop


def report(engine: str, figures: dict[str, float]) -> None:
    workers = int(figures["workers"])
    print(f"inbound, {engine}, {workers} web process(es), {CONNECTIONS} connections, keys cached:")
    for what, label in (
        ("inbox", "signed Create{Note} to the shared inbox"),
        ("get", "GET actor as AS2"),
    ):
        bare, ours = figures[f"{what}_bare"], figures[f"{what}_ours"]
        print(f"  {label}: bare {bare:8.1f}/s  interocc {ours:8.1f}/s  ratio {ours / bare:.2f}")
        if what == "inbox":
            worked = figures["processing_ours"]
            print(
                f"  queued activities applied by one worker: {worked:8.1f}/s  "
                f"ratio to bare verify+parse {worked / bare:.2f}"
            )
