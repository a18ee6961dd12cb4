"""Moves from elsewhere: an actor our assembly follows moves, and a follower moves.

The Mastodon-like peer sends ``Move{actor: old, object: old, target: new}`` signed by the
old identity, its new identity naming the old one in ``alsoKnownAs``: our follow moves with
it (Undo to the old, Follow to the new), and a follower's new identity is accepted at once,
even by an assembly that approves followers by hand.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from server import following
from server.context import Context
from server.models import Follower, FollowerStatus, Following, RemoteActor
from tests.helpers import approved_assembly
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread
from tests.test_committees_e2e import drain

pytestmark = pytest.mark.e2e


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


def move(old: PeerActor, new: PeerActor) -> dict[str, object]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{old.id}#moves/1",
        "type": "Move",
        "actor": old.id,
        "object": old.id,
        "target": new.id,
    }


async def test_a_followed_actor_moves_and_our_follow_moves_with_it(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "plaza")
    old = peer.add_actor("oldname")
    new = peer.add_actor("newname")
    new.also_known_as = [old.id]
    await following.prefetch(ctx, old.id)
    async with ctx.sessions() as session, session.begin():
        await following.follow(session, ctx, handle="plaza", target=old.id, now=ctx.clock())
    await drain(ctx)
    [follow] = peer.inbox_activities("Follow")
    await peer.post_activity(
        old,
        f"{ctx.urls.base}/actors/plaza/inbox",
        {"@context": "https://www.w3.org/ns/activitystreams", "id": f"{old.id}#accepts/1",
         "type": "Accept", "actor": old.id, "object": follow},
    )  # fmt: skip

    answer = await peer.post_activity(old, ctx.urls.shared_inbox(), move(old, new))
    assert answer.status_code == 202, answer.text
    await drain(ctx)
    undo = [u for u in peer.inbox_activities("Undo") if u["object"]["object"] == old.id]
    follows = [f for f in peer.inbox_activities("Follow") if f["object"] == new.id]
    assert len(undo) == 1 and len(follows) == 1
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(Following))).all()
        moved = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == old.id))).one()
    assert [r.target_uri for r in rows] == [new.id]
    assert moved.moved_to == new.id


async def test_a_follower_that_moved_is_accepted_at_once_under_its_new_identity(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "plaza", manually_approves_followers=True)
    old = peer.add_actor("oldname")
    new = peer.add_actor("newname")
    new.also_known_as = [old.id]
    await peer.follow(old, f"plaza@{ctx.urls.host}")
    async with ctx.sessions() as session, session.begin():
        row = (await session.scalars(select(Follower))).one()
        assert row.status is FollowerStatus.PENDING  # held for the assembly
        row.status = FollowerStatus.ACCEPTED  # a facilitator approved it

    assert (
        await peer.post_activity(old, ctx.urls.shared_inbox(), move(old, new))
    ).status_code == 202
    await peer.follow(new, f"plaza@{ctx.urls.host}")
    await drain(ctx)
    accepts = [a for a in peer.inbox_activities("Accept") if a["object"]["actor"] == new.id]
    assert len(accepts) == 1
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(RemoteActor.uri, Follower.status).join(
                    RemoteActor, RemoteActor.id == Follower.actor_id
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [(new.id, FollowerStatus.ACCEPTED)]
