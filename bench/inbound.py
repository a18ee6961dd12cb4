"""Inbound federation: signed inbox POSTs and actor GETs, each against a bare baseline.

Both sides run under the same uvicorn (uvloop, httptools) on loopback and get the same
requests over 16 keep-alive connections; every request is signed before the clock starts and
the signers' keys are already cached.

- inbox: signed ``Create{Note}`` replies to a communiqué, from 50 actors, to the shared inbox,
  against a bare Starlette app that verifies the same draft-cavage signatures (Digest included)
  and parses the JSON;
- GET: ``/actors/{handle}`` as ActivityStreams, against a bare Starlette app answering the same
  document from memory.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import assemblies, communiques, migrate
from server.activitypub.signatures import (
    generate_private_key_pem,
    load_private_key,
    load_public_key,
    sign_request,
    verify_request,
)
from server.app import create_app
from server.config import Settings
from server.context import create_context
from server.db import create_engine
from server.federation import inbox_queue
from server.models import RemoteActor, RemoteKey
from tests.support.servers import ServerThread, free_port

CONNECTIONS = 16
ACTORS = 50
SERVER_OPTIONS = {"loop": "uvloop", "http": "httptools"}
PG_ADMIN = os.environ.get(
    "INTEROCC_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
AS = "https://www.w3.org/ns/activitystreams"

Requests = list[tuple[str, dict[str, str], bytes]]


async def _drive(method: str, requests: Requests) -> float:
    """Seconds to send every request over CONNECTIONS keep-alive connections."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    gate = asyncio.Semaphore(CONNECTIONS)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=60.0) as http:

        async def one(url: str, headers: dict[str, str], body: bytes) -> None:
            async with gate:
                answer = await http.request(method, url, headers=headers, content=body)
                if answer.status_code >= 300:
                    raise RuntimeError(f"{method} {url}: {answer.status_code} {answer.text}")

        start = time.perf_counter()
        await asyncio.gather(*(one(*r) for r in requests))
        return time.perf_counter() - start


def _bare_inbox(public_pem: str, settings: Settings) -> Starlette:
    public_key = load_public_key(public_pem)
    assert public_key is not None

    async def inbox(request: Request) -> Response:
        body = await request.body()
        result = verify_request(
            "POST",
            request.url.path,
            request.headers,
            body,
            public_key=public_key,
            now=datetime.now(UTC),
            window=settings.signature_window,
        )
        if not hasattr(result, "scheme"):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        json.loads(body)
        return JSONResponse({"status": "accepted"}, status_code=202)

    return Starlette(routes=[Route("/inbox", inbox, methods=["POST"])])


def _bare_get(document: dict[str, Any]) -> Starlette:
    async def actor(request: Request) -> Response:
        return JSONResponse(document, media_type="application/activity+json")

    return Starlette(routes=[Route("/actors/{handle}", actor)])


async def _timed(app: Starlette, port: int, run: Callable[[], Awaitable[float]]) -> float:
    server = ServerThread(app, port=port, options=SERVER_OPTIONS).start()
    try:
        return await run()
    finally:
        server.stop()


async def measure(database_url: str, n_inbox: int, n_get: int) -> dict[str, float]:
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

    ours_inbox = await _timed(create_app(settings), port, lambda: _drive("POST", posts))
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
    ours_get = await _timed(create_app(settings), port, lambda: _drive("GET", gets))
    async with httpx.AsyncClient(trust_env=False) as http:
        server = ServerThread(create_app(settings), port=port).start()
        try:
            document = (await http.get(gets[0][0], headers=gets[0][1])).json()
        finally:
            server.stop()
    bare_inbox = await _timed(
        _bare_inbox(public_pem, settings), port, lambda: _drive("POST", posts)
    )
    bare_get = await _timed(_bare_get(document), port, lambda: _drive("GET", gets))
    return {
        "inbox_bare": n_inbox / bare_inbox,
        "inbox_ours": n_inbox / ours_inbox,
        "processing_ours": n_inbox / ours_processing,
        "get_bare": n_get / bare_get,
        "get_ours": n_get / ours_get,
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
    print(f"inbound, {engine}, {CONNECTIONS} connections, keys cached:")
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
