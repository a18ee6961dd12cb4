"""Hostile Moves: believed only when the signer moves itself to an identity that names it.

A Move whose target does not list its origin in ``alsoKnownAs``, one that moves somebody
else, and one signed with another actor's key are refused, and change nothing: our follows
stay where they were, nobody is marked moved.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from server import archive, assemblies, following, moving
from server.context import Context
from server.errors import BadRequest
from server.models import Following, InboxItem, InboxItemStatus, Media, RemoteActor
from tests.helpers import approved_assembly
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread
from tests.test_committees_e2e import drain
from tests.test_moving_in import move


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


async def _following(ctx: Context, peer: Peer) -> tuple[PeerActor, PeerActor]:
    await approved_assembly(ctx, "plaza")
    old = peer.add_actor("oldname")
    new = peer.add_actor("newname")
    await following.prefetch(ctx, old.id)
    async with ctx.sessions() as session, session.begin():
        await following.follow(session, ctx, handle="plaza", target=old.id, now=ctx.clock())
    await drain(ctx)
    return old, new


async def _unchanged(ctx: Context, old: PeerActor) -> None:
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(Following))).all()
        marked = (await session.scalars(select(RemoteActor.moved_to))).all()
    assert [r.target_uri for r in rows] == [old.id]
    assert set(marked) == {None}


async def test_a_move_to_an_identity_that_does_not_name_the_origin_is_refused(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    old, new = await _following(ctx, peer)  # new lists no alias
    answer = await peer.post_activity(old, ctx.urls.shared_inbox(), move(old, new))
    assert answer.status_code == 202  # accepted for processing, then refused
    async with ctx.sessions() as session:
        item = (await session.scalars(select(InboxItem))).one()
    assert item.status is InboxItemStatus.REJECTED
    assert item.last_error and "does not name its object" in item.last_error
    await _unchanged(ctx, old)
    assert not [f for f in peer.inbox_activities("Follow") if f["object"] == new.id]


async def test_a_move_of_somebody_else_is_refused_at_the_door(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    old, new = await _following(ctx, peer)
    new.also_known_as = [old.id]
    mallory = peer.add_actor("mallory")
    hijack = move(old, new) | {"actor": mallory.id, "id": f"{mallory.id}#moves/1"}
    answer = await peer.post_activity(mallory, ctx.urls.shared_inbox(), hijack)
    assert answer.status_code == 403 and "no one else" in answer.json()["error"]
    # In old's name, signed by mallory (her key, her key id): the key is not the actor's,
    # and old's server does not serve such a Move.
    answer = await peer.post_activity(mallory, ctx.urls.shared_inbox(), move(old, new))
    assert answer.status_code == 401
    # In old's name, under old's key id, signed with mallory's key: no signature.
    answer = await peer.post_activity(
        mallory, ctx.urls.shared_inbox(), move(old, new), key_id=old.key_id
    )
    assert answer.status_code == 401
    async with ctx.sessions() as session:
        assert (await session.scalars(select(InboxItem))).first() is None
    await _unchanged(ctx, old)


async def test_recovery_needs_the_new_identity_to_name_the_old_one(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    """A recovery Move is signed with the old key: it is sent only while the imported
    assembly still names the old identity (a follower's server would refuse it anyway)."""
    await approved_assembly(ctx, "plaza")
    alice = peer.add_actor("alice")
    await peer.follow(alice, f"plaza@{ctx.urls.host}")
    async with ctx.sessions() as session, session.begin():
        exported = await archive.export_assembly(
            session, ctx.settings, ctx.urls, handle="plaza", now=ctx.clock()
        )
    stored: list[Media] = []
    async with ctx.sessions() as session, session.begin():
        await archive.import_archive(
            session,
            ctx.settings,
            ctx.urls,
            archive=archive.open_archive(archive.encrypt(exported.zip_data, "x" * 12), "x" * 12),
            handle="exile",
            now=ctx.clock(),
            stored=stored,
        )
        await assemblies.approve(session, "exile", now=ctx.clock())
    async with ctx.sessions() as session, session.begin():
        await moving.remove_alias(session, ctx, handle="exile", target=ctx.urls.actor("plaza"))
    with pytest.raises(BadRequest, match="no longer names"):
        await moving.recover(ctx, handle="exile")
    assert peer.inbox_activities("Move") == []
