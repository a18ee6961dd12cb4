"""A slow key server must not block the database: keys are fetched before the transaction.

On SQLite every write transaction holds the one write lock; if the inbox fetched a remote
key inside its transaction, publishing (or the worker) would wait for the remote server.
"""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from server.context import Context
from server.models import Follower
from tests.helpers import approved_assembly, count, post
from tests.support import httpsig
from tests.support.peer import pooled_key, public_pem
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


async def test_writes_proceed_while_a_key_fetch_is_pending(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ga")
    key = pooled_key()
    asked = threading.Event()
    release = threading.Event()

    async def actor(request: Request) -> JSONResponse:
        asked.set()
        await asyncio.to_thread(release.wait, 20)
        actor_id = str(request.url).split("#")[0]
        return JSONResponse(
            {
                "@context": [
                    "https://www.w3.org/ns/activitystreams",
                    "https://w3id.org/security/v1",
                ],
                "id": actor_id,
                "type": "Person",
                "inbox": f"{actor_id}/inbox",
                "publicKey": {
                    "id": f"{actor_id}#main-key",
                    "owner": actor_id,
                    "publicKeyPem": public_pem(key),
                },
            },
            media_type="application/activity+json",
        )

    with ServerThread(Starlette(routes=[Route("/users/slow", actor)])) as remote:
        actor_id = f"{remote.base_url}/users/slow"
        body = json.dumps(
            {
                "@context": "https://www.w3.org/ns/activitystreams",
                "id": f"{actor_id}#follow",
                "type": "Follow",
                "actor": actor_id,
                "object": ctx.urls.actor("ga"),
            }
        ).encode()
        inbox = ctx.urls.inbox("ga")
        headers = {"Content-Type": "application/activity+json"}
        headers |= httpsig.sign(
            "POST", inbox, headers, body, key_id=f"{actor_id}#main-key", private_key=key
        )
        async with httpx.AsyncClient(timeout=30) as http:
            sending = asyncio.create_task(http.post(inbox, content=body, headers=headers))
            try:
                assert await asyncio.to_thread(asked.wait, 10), "the key was never fetched"
                # The inbox is now waiting on the remote: a write must still go through.
                published = await asyncio.wait_for(post(ctx, "ga", "Meanwhile."), timeout=10)
                assert published.url
            finally:
                release.set()
            response = await sending
    assert response.status_code == 202
    assert await count(ctx, Follower) == 1


async def test_writes_proceed_while_a_stale_follower_is_refreshed(
    ctx: Context, server: ServerThread
) -> None:
    """The key is cached but the follower's actor document is a day old: handle_follow
    reads a refreshed copy, fetched before the transaction (inbox.prefetch)."""
    from datetime import timedelta

    from sqlalchemy import update

    from server.models import RemoteActor

    await approved_assembly(ctx, "ga")
    key = pooled_key()
    fetches: list[str] = []
    blocking = threading.Event()  # set: the next actor fetch waits for `release`
    asked = threading.Event()
    release = threading.Event()

    async def actor(request: Request) -> JSONResponse:
        fetches.append(str(request.url))
        if blocking.is_set():
            asked.set()
            await asyncio.to_thread(release.wait, 20)
        actor_id = str(request.url).split("#")[0]
        return JSONResponse(
            {
                "@context": [
                    "https://www.w3.org/ns/activitystreams",
                    "https://w3id.org/security/v1",
                ],
                "id": actor_id,
                "type": "Person",
                "preferredUsername": "slow",
                "inbox": f"{actor_id}/inbox",
                "publicKey": {
                    "id": f"{actor_id}#main-key",
                    "owner": actor_id,
                    "publicKeyPem": public_pem(key),
                },
            },
            media_type="application/activity+json",
        )

    with ServerThread(Starlette(routes=[Route("/users/slow", actor)])) as remote:
        actor_id = f"{remote.base_url}/users/slow"
        inbox = ctx.urls.inbox("ga")

        def signed_follow(n: int) -> tuple[bytes, dict[str, str]]:
            body = json.dumps(
                {
                    "@context": "https://www.w3.org/ns/activitystreams",
                    "id": f"{actor_id}#follow-{n}",
                    "type": "Follow",
                    "actor": actor_id,
                    "object": ctx.urls.actor("ga"),
                }
            ).encode()
            headers = {"Content-Type": "application/activity+json"}
            headers |= httpsig.sign(
                "POST", inbox, headers, body, key_id=f"{actor_id}#main-key", private_key=key
            )
            return body, headers

        async with httpx.AsyncClient(timeout=30) as http:
            body, headers = signed_follow(1)
            assert (await http.post(inbox, content=body, headers=headers)).status_code == 202
            async with ctx.sessions() as session, session.begin():
                await session.execute(
                    update(RemoteActor).values(fetched_at=ctx.clock() - timedelta(days=2))
                )
            fetched_before = len(fetches)
            blocking.set()
            body, headers = signed_follow(2)
            sending = asyncio.create_task(http.post(inbox, content=body, headers=headers))
            try:
                assert await asyncio.to_thread(asked.wait, 10), "the stale actor was not refreshed"
                published = await asyncio.wait_for(post(ctx, "ga", "Meanwhile."), timeout=10)
                assert published.url
            finally:
                release.set()
            response = await sending
    assert response.status_code == 202
    assert len(fetches) == fetched_before + 1  # refreshed once, before the transaction
    async with ctx.sessions() as session:
        refreshed = (await session.scalars(select(RemoteActor))).one()
    assert ctx.clock() - refreshed.fetched_at < timedelta(minutes=1)
