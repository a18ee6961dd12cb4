"""Acceptance: a Mastodon-like peer follows an assembly and receives its communiqués.

Our app runs under uvicorn on one loopback port, the peer on another with its own key and
its own signature verification (tests/support/httpsig.py). The worker is driven by hand.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from server import communiques, worker
from server.context import Context
from server.models import Delivery, DeliveryStatus, Follower, InboxActivity
from tests.helpers import approved_assembly, count, post
from tests.support.peer import Peer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

SEED = (
    "This communiqué is presented by the people of the **Liberty Plaza General Assembly** "
    "to all the good people convening at local General Assemblies around the world. #InterOcc"
)


@pytest.fixture
def peer() -> Peer:
    with Peer(name="mastodon") as p:
        yield p


async def test_follow_post_edit_delete_unfollow(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    alice = peer.add_actor("alice")

    # WebFinger → actor fetch (signed, with Mastodon's Accept) → signed Follow to the inbox.
    follow = await peer.follow(alice, f"libertyplaza@{ctx.urls.host}")
    assert await count(ctx, Follower) == 1
    assert await worker.run_once(ctx) == 1
    accepts = [r for r in peer.received if r.json and r.json.get("type") == "Accept"]
    assert len(accepts) == 1 and accepts[0].verified, accepts[0].reason
    accept = accepts[0].json
    assert accept["actor"] == ctx.urls.actor("libertyplaza")
    assert accept["object"]["id"] == follow["id"]
    assert accept["object"]["actor"] == alice.id

    # Post: the peer gets a signed Create{Note} with the content.
    published = await post(ctx, "libertyplaza", SEED)
    assert await worker.run_once(ctx) == 1
    creates = [r for r in peer.received if r.json and r.json.get("type") == "Create"]
    assert len(creates) == 1 and creates[0].verified, creates[0].reason
    note = creates[0].json["object"]
    assert note["type"] == "Note"
    assert note["id"] == published.url and note["url"] == published.url
    assert "<strong>Liberty Plaza General Assembly</strong>" in note["content"]
    assert note["contentMap"] == {"en": note["content"]}
    assert "https://www.w3.org/ns/activitystreams#Public" in creates[0].json["to"]
    assert ctx.urls.followers("libertyplaza") in note["cc"]
    assert {"type": "Hashtag", "href": ctx.urls.tag("InterOcc"), "name": "#InterOcc"} in note["tag"]
    assert creates[0].path == "/inbox"  # the shared inbox is preferred

    # The Note and the Create dereference at their ids, as the same JSON.
    async with httpx.AsyncClient() as http:
        accept_as2 = {"Accept": "application/activity+json"}
        got = (await http.get(published.url, headers=accept_as2)).json()
        assert got["id"] == published.url and got["content"] == note["content"]
        got_create = (await http.get(creates[0].json["id"], headers=accept_as2)).json()
        assert got_create["id"] == creates[0].json["id"]

    # Edit → Update carrying the new text and `updated`.
    async with ctx.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx.urls, url=published.url, source="Amended text.", now=ctx.clock()
        )
    assert await worker.run_once(ctx) == 1
    updates = [r for r in peer.received if r.json and r.json.get("type") == "Update"]
    assert len(updates) == 1 and updates[0].verified
    assert updates[0].json["object"]["content"] == "<p>Amended text.</p>"
    assert "updated" in updates[0].json["object"]

    # Delete → Delete with a Tombstone, and the Note URL answers 410.
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    assert await worker.run_once(ctx) == 1
    deletes = [r for r in peer.received if r.json and r.json.get("type") == "Delete"]
    assert len(deletes) == 1 and deletes[0].verified
    assert deletes[0].json["object"]["id"] == published.url
    async with httpx.AsyncClient() as http:
        gone = await http.get(published.url, headers={"Accept": "application/activity+json"})
        assert gone.status_code == 410
        assert gone.json()["type"] == "Tombstone"

    # Unfollow: the follower is gone and gets nothing more.
    await peer.unfollow(alice, follow)
    assert await count(ctx, Follower) == 0
    await post(ctx, "libertyplaza", "Nobody should receive this.")
    assert await worker.run_once(ctx) == 0
    received_before = len(peer.received)
    assert len(peer.received) == received_before

    # Every delivery was acknowledged once and recorded as delivered.
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(Delivery))).all()
    assert [r.status for r in rows] == [DeliveryStatus.DELIVERED] * 4
    assert await count(ctx, InboxActivity) == 2  # the Follow and the Undo


async def test_repeated_follow_is_idempotent(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    bob = peer.add_actor("bob")
    await peer.follow(bob, f"ga@{ctx.urls.host}")
    await peer.follow(bob, f"ga@{ctx.urls.host}")  # a new Follow id, the same follower
    assert await count(ctx, Follower) == 1
    # One Accept per follower: the repeated Follow is acknowledged, not answered again.
    assert await worker.run_once(ctx) == 1
    accepts = peer.inbox_activities("Accept")
    assert len(accepts) == 1


async def test_remote_actor_delete_removes_it_everywhere(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    carol = peer.add_actor("carol")
    await peer.follow(carol, f"ga@{ctx.urls.host}")
    assert await count(ctx, Follower) == 1
    delete = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{carol.id}#delete",
        "type": "Delete",
        "actor": carol.id,
        "object": carol.id,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
    }
    response = await peer.post_activity(carol, f"{server.base_url}/inbox", delete)
    assert response.status_code == 202
    assert await count(ctx, Follower) == 0
    published = await post(ctx, "ga", "After the deletion.")
    assert published.deliveries == 0
