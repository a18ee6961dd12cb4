"""Acceptance: a remote actor rotates its key; our inbox refetches it once and carries on.

A peer actor follows an assembly (so our server caches its public key), then replaces its
key pair: its actor document now publishes the new key. A request signed with the new key
is accepted after one refetch; one still signed with the old key is refused with 401 and
changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from server.context import Context
from server.models import Activity, Delivery, Follower, InboxActivity, RemoteActor, RemoteKey
from tests.helpers import approved_assembly, count
from tests.support.peer import AS_CONTEXT, Peer, PeerActor, pooled_key, public_pem
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture
def peer() -> Peer:
    with Peer(name="mastodon") as p:
        yield p


def rotate(actor: PeerActor) -> PeerActor:
    """Give the actor a new key pair (the peer serves it at once); return a stand-in that
    still signs with the old one under the same keyId."""
    old = PeerActor(actor.peer, actor.username, actor.private_key)
    while actor.private_key is old.private_key:
        actor.private_key = pooled_key()
    assert actor.public_key_pem != old.public_key_pem
    return old


def actor_fetches(peer: Peer, actor: PeerActor) -> int:
    """How many times someone GET the actor document (where the key is published)."""
    path = f"/users/{actor.username}"
    return sum(1 for got, _ in peer.gets if got == path)


async def cached_pem(ctx: Context, actor: PeerActor) -> str | None:
    async with ctx.sessions() as session:
        return await session.scalar(
            select(RemoteKey.public_key_pem).where(RemoteKey.key_id == actor.key_id)
        )


async def row_counts(ctx: Context) -> dict[str, int]:
    models = (Follower, InboxActivity, RemoteActor, RemoteKey, Activity, Delivery)
    return {model.__name__: await count(ctx, model) for model in models}


def undo_of(actor: PeerActor, follow: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": f"{follow['id']}/undo",
        "type": "Undo",
        "actor": actor.id,
        "object": {k: v for k, v in follow.items() if k != "@context"},
    }


def follow_of(actor: PeerActor, target: str) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor.id}#follows/{uuid.uuid4()}",
        "type": "Follow",
        "actor": actor.id,
        "object": target,
    }


async def test_rotated_key_is_refetched_once_and_accepted(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    alice = peer.add_actor("alice")
    follow = await peer.follow(alice, f"libertyplaza@{ctx.urls.host}")
    assert await count(ctx, Follower) == 1
    assert await cached_pem(ctx, alice) == alice.public_key_pem

    rotate(alice)
    assert await cached_pem(ctx, alice) != alice.public_key_pem  # our cache is now stale
    fetches = actor_fetches(peer, alice)

    response = await peer.post_activity(
        alice, ctx.urls.inbox("libertyplaza"), undo_of(alice, follow)
    )
    assert response.status_code == 202, response.text
    assert actor_fetches(peer, alice) == fetches + 1  # exactly one refetch
    assert await count(ctx, Follower) == 0
    assert await cached_pem(ctx, alice) == public_pem(alice.private_key)

    # With the fresh key cached, the next request needs no fetch at all.
    response = await peer.post_activity(
        alice, f"{server.base_url}/inbox", follow_of(alice, ctx.urls.actor("libertyplaza"))
    )
    assert response.status_code == 202, response.text
    assert actor_fetches(peer, alice) == fetches + 1
    assert await count(ctx, Follower) == 1


async def test_old_key_after_rotation_is_refused(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    alice = peer.add_actor("alice")
    follow = await peer.follow(alice, f"libertyplaza@{ctx.urls.host}")
    stale = rotate(alice)

    # The new key is learnt (one refetch) and the Undo goes through.
    response = await peer.post_activity(
        alice, ctx.urls.inbox("libertyplaza"), undo_of(alice, follow)
    )
    assert response.status_code == 202, response.text
    assert await count(ctx, Follower) == 0

    # Someone still holding the old key signs a new Follow as alice: the key in our cache
    # does not verify it, neither does the one alice publishes (fetched once more), so 401.
    before = await row_counts(ctx)
    fetches = actor_fetches(peer, alice)
    for inbox in (ctx.urls.inbox("libertyplaza"), f"{server.base_url}/inbox"):
        response = await peer.post_activity(
            stale, inbox, follow_of(stale, ctx.urls.actor("libertyplaza"))
        )
        assert response.status_code == 401, (inbox, response.text)
        assert "signature not verified" in response.json()["error"]
    assert actor_fetches(peer, alice) == fetches + 2  # one refetch per request, no more
    assert await row_counts(ctx) == before
    assert await count(ctx, Follower) == 0
    assert await cached_pem(ctx, alice) == alice.public_key_pem


async def test_key_not_published_is_refused_on_first_contact(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    bob = peer.add_actor("bob")
    stale = rotate(bob)  # bob publishes a key other than the one the request is signed with
    response = await peer.post_activity(
        stale, ctx.urls.inbox("libertyplaza"), follow_of(stale, ctx.urls.actor("libertyplaza"))
    )
    assert response.status_code == 401, response.text
    assert actor_fetches(peer, bob) == 1
    for model in (Follower, InboxActivity, RemoteActor, RemoteKey, Activity, Delivery):
        assert await count(ctx, model) == 0, model.__name__
