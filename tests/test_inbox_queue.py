"""Accept fast, process later: the inbox queues a verified activity and answers 202; workers
apply it, once, in each actor's order, and keep what they cannot apply."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from server.app import create_app
from server.context import Context
from server.federation import inbox_queue
from server.models import InboxActivity, InboxItem, InboxItemStatus, Reply
from tests.helpers import approved_assembly, count, post
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread, free_port
from tests.test_replies import reply_create

pytestmark = pytest.mark.e2e


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="queue") as p:
        yield p


@pytest.fixture
def queueing(ctx: Context, port: int) -> Iterator[ServerThread]:
    """Our app as production runs it without an in-process worker: the inbox only queues."""
    with ServerThread(create_app(ctx.settings), port=port) as thread:
        yield thread


def _update(actor: PeerActor, note: dict[str, Any], content: str) -> dict[str, Any]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{note['id']}#updates/{len(content)}",
        "type": "Update",
        "actor": actor.id,
        "object": {**note, "content": content},
    }


def _delete(actor: PeerActor, note_id: str) -> dict[str, Any]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{note_id}#delete",
        "type": "Delete",
        "actor": actor.id,
        "object": {"id": note_id, "type": "Tombstone"},
    }


async def _items(ctx: Context) -> list[InboxItem]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(InboxItem).order_by(InboxItem.id))).all())


async def test_inbox_answers_before_processing_and_the_worker_applies_it(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    dana = peer.add_actor("dana")
    create = reply_create(dana, published.url, 1, "<p>Solidarity!</p>")
    answer = await peer.post_activity(dana, ctx.urls.shared_inbox(), create)
    assert answer.status_code == 202 and answer.json() == {"status": "queued"}
    # Nothing applied yet: the activity waits, as it arrived.
    assert await count(ctx, Reply) == 0
    [item] = await _items(ctx)
    assert item.activity_uri == create["id"] and item.actor_uri == dana.id
    assert item.status == InboxItemStatus.PENDING and item.document == create
    # The same activity again while it waits: a duplicate, stored once.
    again = await peer.post_activity(dana, ctx.urls.shared_inbox(), create)
    assert again.json() == {"status": "duplicate"}
    assert len(await _items(ctx)) == 1

    assert await inbox_queue.drain(ctx) == 1
    assert await count(ctx, Reply) == 1
    assert await _items(ctx) == []
    assert await count(ctx, InboxActivity, InboxActivity.uri == create["id"]) == 1
    # And once processed, still a duplicate.
    third = await peer.post_activity(dana, ctx.urls.shared_inbox(), create)
    assert third.json() == {"status": "duplicate"}
    assert await _items(ctx) == []


async def test_each_actor_is_processed_in_arrival_order(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    ana, ben = peer.add_actor("ana"), peer.add_actor("ben")
    inbox = ctx.urls.shared_inbox()
    sequences = {}
    for actor in (ana, ben):
        create = reply_create(actor, published.url, 1, "<p>first</p>")
        note = create["object"]
        sequences[actor.id] = [create, _update(actor, note, "<p>edited</p>")]
        if actor is ana:
            sequences[actor.id].append(_delete(actor, note["id"]))
    for activity in [a for pair in zip(*sequences.values(), strict=False) for a in pair] + [
        sequences[ana.id][2]
    ]:
        actor = ana if activity["actor"] == ana.id else ben
        assert (await peer.post_activity(actor, inbox, activity)).status_code == 202

    # A claim takes only the oldest waiting activity of each actor.
    token, ids = await inbox_queue.claim(ctx, now=ctx.clock())
    items = {i.id: i for i in await _items(ctx)}
    assert sorted(items[i].activity_uri for i in ids) == sorted(
        s[0]["id"] for s in sequences.values()
    )
    # Released (as if the lease ran out), then processed to the end.
    async with ctx.sessions() as session, session.begin():
        await session.execute(update(InboxItem).values(claimed_until=None, claim_token=None))
    await inbox_queue.drain(ctx)
    assert await _items(ctx) == []
    async with ctx.sessions() as session:
        replies = (await session.scalars(select(Reply))).all()
        order = (await session.scalars(select(InboxActivity.uri).order_by(InboxActivity.id))).all()
    # Ana's Create, Update and Delete applied in that order: her reply is gone; Ben's edited.
    assert [(r.actor_uri, "edited" in r.content_html) for r in replies] == [(ben.id, True)]
    for actor_id, sequence in sequences.items():
        mine = [uri for uri in order if uri.startswith(actor_id)]
        assert mine == [a["id"] for a in sequence]


async def test_a_bad_activity_is_rejected_with_its_reason_and_changes_nothing(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    mallory = peer.add_actor("mallory")
    follow = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{mallory.id}#follows/1",
        "type": "Follow",
        "actor": mallory.id,
        "object": ctx.urls.actor("nobody"),
    }
    answer = await peer.post_activity(mallory, ctx.urls.shared_inbox(), follow)
    assert answer.status_code == 202
    await inbox_queue.drain(ctx)
    [item] = await _items(ctx)
    assert item.status == InboxItemStatus.REJECTED
    assert item.last_error == "the object is not an assembly on this instance"
    assert await count(ctx, InboxActivity) == 0
    # Sent again, it is a duplicate: a rejected activity is not processed twice.
    again = await peer.post_activity(mallory, ctx.urls.shared_inbox(), follow)
    assert again.json() == {"status": "duplicate"}


async def test_failures_are_retried_with_backoff_then_parked_never_dropped(
    ctx: Context, peer: Peer
) -> None:
    """A Follow whose actor cannot be fetched (its server stopped answering) waits and is
    tried again; after the last try it is parked with its error, and `retry` brings it back."""
    await approved_assembly(ctx, "ga")
    gone = f"http://127.0.0.1:{free_port()}/users/gone"
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        session.add(
            InboxItem(
                activity_uri=f"{gone}#follows/1",
                actor_uri=gone,
                type="Follow",
                inbox_handle=None,
                document={
                    "@context": "https://www.w3.org/ns/activitystreams",
                    "id": f"{gone}#follows/1",
                    "type": "Follow",
                    "actor": gone,
                    "object": ctx.urls.actor("ga"),
                },
                status=InboxItemStatus.PENDING,
                attempts=0,
                received_at=now,
                next_attempt_at=now,
            )
        )
    assert await inbox_queue.run_once(ctx, now=now) == 1
    [item] = await _items(ctx)
    assert item.status == InboxItemStatus.PENDING and item.attempts == 1
    assert item.claim_token is None and "RemoteError" in (item.last_error or "")
    assert item.next_attempt_at - now >= inbox_queue.FIRST_RETRY - timedelta(seconds=1)
    # Not due yet: nothing is claimed.
    assert await inbox_queue.run_once(ctx, now=now) == 0
    when = now
    for _ in range(ctx.settings.inbox_max_attempts - 1):
        when += inbox_queue.MAX_RETRY
        assert await inbox_queue.run_once(ctx, now=when) == 1
    [item] = await _items(ctx)
    assert item.status == InboxItemStatus.PARKED
    assert item.attempts == ctx.settings.inbox_max_attempts
    assert await inbox_queue.run_once(ctx, now=when + timedelta(days=30)) == 0

    async with ctx.sessions() as session, session.begin():
        assert (
            await inbox_queue.retry(session, now=ctx.clock(), statuses=(InboxItemStatus.PARKED,))
            == 1
        )
        assert (await inbox_queue.counts(session))["pending"] == 1
    [item] = await _items(ctx)
    assert item.status == InboxItemStatus.PENDING and item.attempts == 0


async def test_a_lost_lease_applies_nothing_twice(
    ctx: Context, queueing: ServerThread, peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose lease runs out while it works (it stalled) applies nothing once another
    worker has taken the activity over: the activity is applied exactly once."""
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Reply, please.")
    dana = peer.add_actor("dana")
    create = reply_create(dana, published.url, 1, "<p>once</p>")
    await peer.post_activity(dana, ctx.urls.shared_inbox(), create)
    now = ctx.clock()
    stalled, [item_id] = await inbox_queue.claim(ctx, now=now)
    later = now + ctx.settings.inbox_lease + timedelta(seconds=1)
    taken: list[tuple[str, list[int]]] = []
    real_prefetch = inbox_queue.prefetch

    async def stall(ctx_: Context, signed: Any) -> Any:
        # Between reading its row and applying it, the stalled worker loses the lease.
        taken.append(await inbox_queue.claim(ctx, now=later))
        return await real_prefetch(ctx_, signed)

    monkeypatch.setattr(inbox_queue, "prefetch", stall)
    assert await inbox_queue.process(ctx, item_id, token=stalled) is None
    monkeypatch.setattr(inbox_queue, "prefetch", real_prefetch)
    [(taker, [same])] = taken
    assert same == item_id and taker != stalled
    assert await count(ctx, Reply) == 0  # the stalled worker's work was rolled back
    [item] = await _items(ctx)
    assert item.claim_token == taker
    assert await inbox_queue.process(ctx, item_id, token=taker) is None
    assert await count(ctx, Reply) == 1
    assert await _items(ctx) == []


async def test_rejected_activities_are_pruned_after_a_week_parked_ones_kept(
    ctx: Context, queueing: ServerThread, peer: Peer
) -> None:
    mallory = peer.add_actor("mallory")
    for n in range(2):
        follow = {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{mallory.id}#follows/{n}",
            "type": "Follow",
            "actor": mallory.id,
            "object": ctx.urls.actor("nobody"),
        }
        assert (await peer.post_activity(mallory, ctx.urls.shared_inbox(), follow)).status_code
    await inbox_queue.drain(ctx)
    items = await _items(ctx)
    assert [i.status for i in items] == [InboxItemStatus.REJECTED] * 2
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(InboxItem)
            .where(InboxItem.id == items[1].id)
            .values(status=InboxItemStatus.PARKED)
        )
    now = ctx.clock()
    assert await inbox_queue.prune(ctx, now=now + timedelta(days=6)) == 0
    assert await inbox_queue.prune(ctx, now=now + timedelta(days=8)) == 1
    assert [i.status for i in await _items(ctx)] == [InboxItemStatus.PARKED]
