"""The inbox queue under attack: what the request refuses is never queued, copies are stored
once, a poison activity stops neither the worker nor anyone else, and a block reaches what
still waits.

Our app under uvicorn on loopback without an in-process worker (the inbox only queues); the
signer is a loopback peer with its own keys; the tests run the worker's steps themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from server.app import create_app
from server.context import Context
from server.federation import handlers, inbox_queue
from server.models import DomainBlock, InboxActivity, InboxItem, InboxItemStatus, Reply
from tests.helpers import approved_assembly, count, post
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread
from tests.test_replies import reply_create

pytestmark = pytest.mark.e2e

AS = "https://www.w3.org/ns/activitystreams"


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="hostile") as p:
        yield p


@pytest.fixture
def queueing(ctx: Context, port: int) -> Iterator[ServerThread]:
    with ServerThread(create_app(ctx.settings), port=port) as thread:
        yield thread


async def _items(ctx: Context) -> list[InboxItem]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(InboxItem).order_by(InboxItem.id))).all())


def _forged_origin(actor: PeerActor, note_url: str) -> dict[str, Any]:
    create = reply_create(actor, note_url, 1, "<p>x</p>")
    create["id"] = "https://victim.example/activities/1"
    return create


def _note_of_another(actor: PeerActor, note_url: str) -> dict[str, Any]:
    create = reply_create(actor, note_url, 1, "<p>x</p>")
    create["object"]["attributedTo"] = "https://victim.example/users/v"
    return create


def _no_id(actor: PeerActor, note_url: str) -> dict[str, Any]:
    create = reply_create(actor, note_url, 1, "<p>x</p>")
    del create["id"]
    return create


def _undo_of_another(actor: PeerActor, note_url: str) -> dict[str, Any]:
    return {
        "@context": AS,
        "id": f"{actor.id}#undo/1",
        "type": "Undo",
        "actor": actor.id,
        "object": {
            "id": "https://victim.example/follows/1",
            "type": "Follow",
            "actor": "https://victim.example/users/v",
            "object": note_url,
        },
    }


REFUSED: dict[str, tuple[Callable[[PeerActor, str], dict[str, Any]], dict[str, Any], int]] = {
    "bad signature": (lambda a, u: reply_create(a, u, 1, "<p>x</p>"), {"tamper": True}, 401),
    "forged origin": (_forged_origin, {}, 403),
    "note of another": (_note_of_another, {}, 403),
    "no id": (_no_id, {}, 400),
    "undo of another": (_undo_of_another, {}, 403),
    "oversize": (lambda a, u: reply_create(a, u, 1, "<p>" + "x" * 2_000_000 + "</p>"), {}, 413),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_what_the_request_refuses_is_never_queued(
    ctx: Context, queueing: ServerThread, peer: Peer, case: str
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    mallory = peer.add_actor("mallory")
    build, how, status = REFUSED[case]
    activity = build(mallory, published.url)
    extra: dict[str, Any] = {}
    if how.get("tamper"):
        extra["tamper_body"] = json.dumps({**activity, "id": activity["id"] + "x"}).encode()
    answer = await peer.post_activity(mallory, ctx.urls.shared_inbox(), activity, **extra)
    assert answer.status_code == status, answer.text
    assert isinstance(answer.json()["error"], str)
    assert await _items(ctx) == []
    assert await count(ctx, InboxActivity) == 0


async def test_a_flood_of_copies_is_queued_once(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    mallory = peer.add_actor("mallory")
    create = reply_create(mallory, published.url, 1, "<p>again and again</p>")
    answers = await asyncio.gather(
        *(peer.post_activity(mallory, ctx.urls.shared_inbox(), create) for _ in range(20))
    )
    statuses = sorted(a.json()["status"] for a in answers)
    assert statuses == ["duplicate"] * 19 + ["queued"], statuses
    assert len(await _items(ctx)) == 1
    await inbox_queue.drain(ctx)
    assert await count(ctx, Reply) == 1


async def test_a_poison_activity_stops_neither_the_worker_nor_other_actors(
    ctx: Context, queueing: ServerThread, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activity that makes its handler fail (a bug it found) waits for its retry and holds
    back only its own actor's later activities; everyone else's are applied."""
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    mallory, dana = peer.add_actor("mallory"), peer.add_actor("dana")
    create = handlers.HANDLERS["Create"]

    async def fragile(incoming: handlers.Incoming) -> bool:
        if incoming.actor_uri == mallory.id and "poison" in json.dumps(incoming.raw):
            raise RuntimeError("handler bug")
        return await create(incoming)

    monkeypatch.setitem(handlers.HANDLERS, "Create", fragile)
    inbox = ctx.urls.shared_inbox()
    for actor, n, text in [(mallory, 1, "poison"), (mallory, 2, "fine"), (dana, 1, "fine")]:
        activity = reply_create(actor, published.url, n, f"<p>{text}</p>")
        assert (await peer.post_activity(actor, inbox, activity)).status_code == 202

    assert await inbox_queue.drain(ctx) == 2  # mallory's poison and dana's reply
    async with ctx.sessions() as session:
        replies = (await session.scalars(select(Reply.actor_uri))).all()
    assert list(replies) == [dana.id]
    waiting = await _items(ctx)
    assert [(i.actor_uri, i.status, i.attempts) for i in waiting] == [
        (mallory.id, InboxItemStatus.PENDING, 1),
        (mallory.id, InboxItemStatus.PENDING, 0),
    ]
    assert "handler bug" in (waiting[0].last_error or "")

    # Tried again at each due time until parked; then mallory's next activity goes on.
    now = ctx.clock()
    for _ in range(ctx.settings.inbox_max_attempts):
        now += timedelta(hours=2)
        await inbox_queue.run_once(ctx, now=now)
    async with ctx.sessions() as session:
        replies = (await session.scalars(select(Reply.actor_uri).order_by(Reply.id))).all()
    assert list(replies) == [dana.id, mallory.id]
    [parked] = await _items(ctx)
    assert parked.status == InboxItemStatus.PARKED and "handler bug" in (parked.last_error or "")


async def test_a_block_reaches_what_still_waits(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    mallory = peer.add_actor("mallory")
    activity = reply_create(mallory, published.url, 1, "<p>spam</p>")
    assert (await peer.post_activity(mallory, ctx.urls.shared_inbox(), activity)).status_code == 202
    # The admin blocks the sender's domain (the peer shares our loopback address, which the
    # admin form refuses to block: the row is written as the form would for another domain).
    async with ctx.sessions() as session, session.begin():
        session.add(DomainBlock(domain="127.0.0.1", reason="spam", created_at=ctx.clock()))
    await inbox_queue.drain(ctx)
    assert await count(ctx, Reply) == 0
    [item] = await _items(ctx)
    assert item.status == InboxItemStatus.REJECTED
    assert item.last_error == "this instance does not accept activities from your domain"


async def test_a_new_block_refuses_the_next_request_at_once(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    """The inbox keeps the block list and the signers' keys between requests (its memo); a
    block written in this process drops what it kept, so the very next POST is refused."""
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    mallory = peer.add_actor("mallory")
    first = reply_create(mallory, published.url, 1, "<p>first</p>")
    answer = await peer.post_activity(mallory, ctx.urls.shared_inbox(), first)
    assert answer.status_code == 202, answer.text
    async with ctx.sessions() as session, session.begin():
        session.add(DomainBlock(domain="127.0.0.1", reason="hostile", created_at=ctx.clock()))
    second = reply_create(mallory, published.url, 2, "<p>second</p>")
    answer = await peer.post_activity(mallory, ctx.urls.shared_inbox(), second)
    assert answer.status_code == 403, answer.text
    assert [item.activity_uri for item in await _items(ctx)] == [first["id"]]
