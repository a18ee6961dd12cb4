"""Interop scenarios run against both independent peers: Fedify and bovine.

Each scenario runs once per peer (the ``peer`` fixture) and per database backend, with our
app under uvicorn on a fresh port. It drives the peer through the control API both share
(conftest.py) and checks both sides: our database, and what the peer logged as received
and sent. What differs between the peers (how they verify and sign, shared inbox or not,
the shapes of their own activities) is asked of their ``PeerCase`` (peers.py).

- follow by handle → Accept, verified by the peer: ``test_follow_by_handle_is_accepted``;
- Create{Note} (hashtag, ``contentMap`` language), Update, Delete, each verified by the
  peer: ``test_communique_create_update_delete_reach_the_peer``;
- the peer replies, edits, likes, announces and deletes its reply:
  ``test_the_peers_reply_is_stored_updated_and_deleted``;
- Undo{Follow}, then nothing more is delivered: ``test_unfollow_stops_deliveries``;
- a mention reaches the peer without a follow: ``test_mention_reaches_the_peer_without_a_follow``;
- our inbox verifies the peer's raw signed deliveries (Fedify: draft-cavage and RFC 9421;
  bovine: ``Digest: sha-256=`` and ``SHA-256=``) and refuses the bad ones:
  ``test_inbox_verifies_the_peers_signatures``.

Peer-only scenarios stay in test_fedify.py (an image attachment and a content warning read
by Fedify's vocabulary) and test_bovine.py (an RFC 9530 ``Content-Digest``).

Our inbox answers 202 before it processes an activity, so what we stored after a peer sent
us something is awaited with ``eventually`` (tests/support/rig.py), never asserted at once.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from server import communiques, worker
from server.activitypub import mentions
from server.context import Context
from server.models import Follower, InboxActivity, Reply
from tests.helpers import approved_assembly, post
from tests.interop.conftest import BovinePeer, FedifyPeer
from tests.interop.peers import (
    AS2,
    PUBLIC,
    BovineCase,
    FedifyCase,
    Json,
    PeerCase,
    delivered,
    follow_accepted,
    fresh_handle,
    inbox_activities,
    settled_count,
)
from tests.support.rig import eventually
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["fedify", "bovine"])
def peer(request: pytest.FixtureRequest) -> PeerCase:
    """The session's Fedify or bovine peer (reset for this test), with its ``PeerCase``.

    Only the peer a test asks for is started: ``-k fedify`` never starts bovine.
    """
    if request.param == "fedify":
        fedify: FedifyPeer = request.getfixturevalue("fedify")
        return FedifyCase(fedify)
    bovine: BovinePeer = request.getfixturevalue("bovine")
    return BovineCase(bovine)


async def test_follow_by_handle_is_accepted(
    ctx: Context, server: ServerThread, peer: PeerCase
) -> None:
    remote = peer.remote
    handle = fresh_handle("libertyplaza")
    await approved_assembly(ctx, handle)
    followed = await follow_accepted(ctx, peer, handle)

    # Our Accept embeds the Follow and is addressed to its actor.
    (accept,) = await remote.activities("Accept")
    assert accept["raw"]["object"]["id"] == followed["followId"]
    assert accept["raw"]["object"]["actor"] == remote.actor
    assert remote.actor in accept["raw"]["to"]
    # The peer resolved us with WebFinger, fetched our actor (and key) with signed GETs and
    # POSTed the Follow, all accepted at once.
    await peer.assert_signed_requests(ctx, posts=1)
    # And our fetch of alice (to learn her inbox) was signed, by our instance actor.
    incoming = (await remote.inbox())["incoming"]
    got = [e for e in incoming if e["method"] == "GET" and e["path"] == "/users/alice"]
    assert got and all(e["status"] == 200 for e in got), got
    assert all(e["keyId"] == ctx.urls.instance_key_id() for e in got), got
    await peer.check_after_follow(ctx, handle)
    await settled_count(ctx, 1, InboxActivity, InboxActivity.type == "Follow")


async def test_communique_create_update_delete_reach_the_peer(
    ctx: Context, server: ServerThread, peer: PeerCase
) -> None:
    remote = peer.remote
    handle = fresh_handle("puertadelsol")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, peer, handle)
    seq = (await remote.inbox())["seq"]

    text = "¡Asamblea general en la plaza! #TomaLaPlaza"
    published = await post(ctx, handle, text, language="es")
    assert published.deliveries == 1  # one follower, on its shared inbox or its own
    create = await delivered(ctx, peer, "Create", seq)
    peer.assert_verified(create, ctx, handle)
    assert create["inbox"] == peer.delivery_path
    assert create["object"] == published.url
    note = peer.received(create)["object"]
    assert note["type"] == "Note" and note["id"] == published.url
    assert note["attributedTo"] == ctx.urls.actor(handle)
    assert "¡Asamblea general en la plaza!" in note["content"]
    assert note["contentMap"] == {"es": note["content"]}
    assert {
        "type": "Hashtag",
        "href": ctx.urls.tag("TomaLaPlaza"),
        "name": "#TomaLaPlaza",
    } in note["tag"]
    assert PUBLIC in create["raw"]["to"]

    # Edit → Update with the new text, verified.
    seq = (await remote.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx.urls, url=published.url, source="Texto enmendado.", now=ctx.clock()
        )
    update = await delivered(ctx, peer, "Update", seq)
    peer.assert_verified(update, ctx, handle)
    assert update["inbox"] == peer.delivery_path
    assert update["object"] == published.url
    updated = peer.received(update)["object"]
    assert updated["content"] == "<p>Texto enmendado.</p>"
    assert updated["contentMap"] == {"es": "<p>Texto enmendado.</p>"}
    assert "updated" in updated

    # Delete → Delete of a Tombstone, verified.
    seq = (await remote.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    deleted = await delivered(ctx, peer, "Delete", seq)
    peer.assert_verified(deleted, ctx, handle)
    assert deleted["inbox"] == peer.delivery_path
    assert deleted["object"] == published.url
    assert peer.received(deleted)["object"]["type"] == "Tombstone"

    assert (await remote.inbox())["errors"] == []
    await peer.assert_signed_requests(ctx, posts=1)  # the Follow


async def test_the_peers_reply_is_stored_updated_and_deleted(
    ctx: Context, server: ServerThread, peer: PeerCase
) -> None:
    remote = peer.remote
    handle = fresh_handle("plazacatalunya")
    await approved_assembly(ctx, handle)
    published = await post(ctx, handle, "Convocamos a todas las asambleas. #InterOcc", "es")

    # The peer fetches the Note (signed GET), then sends Create{Note} with inReplyTo and a
    # Mention of the assembly (Fedify adds an LD signature, a proof and nanoseconds; bovine
    # addresses it `to` the author with the Note's audience in cc).
    replied = await remote.reply(published.url, "<p>¡Solidaridad desde <b>Oakland</b>!</p>")
    assert replied["delivered"] is True, replied
    (request,) = replied["requests"]
    assert request["url"] == ctx.urls.inbox(handle) and request["status"] == 202
    peer.check_reply(replied, ctx, handle, published.url)
    await settled_count(ctx, 1, InboxActivity, InboxActivity.uri == replied["createId"])

    async def stored() -> Reply:
        async with ctx.sessions() as session:
            reply = (await session.scalars(select(Reply))).one_or_none()
        assert reply is not None, "no reply stored yet"
        assert reply.uri == replied["noteId"]
        assert reply.communique_id == published.communique.id
        assert reply.actor_uri == remote.actor
        assert reply.content_html == "<p>¡Solidaridad desde <b>Oakland</b>!</p>"
        return reply

    reply = await eventually(stored)
    async with httpx.AsyncClient() as http:
        note = (await http.get(replied["noteId"], headers=AS2)).json()
        page = await http.get(published.url, headers={"Accept": "text/html"})
    assert note["id"] == replied["noteId"]  # the peer serves what it sent
    peer.check_published(reply.published_at, replied, note)
    assert "Solidaridad desde" in page.text

    # The peer edits its reply: Update{Note}.
    edit = {"noteId": replied["noteId"], "content": "<p>Editado</p>"}
    updated = await remote.post("update", edit)
    assert [r["status"] for r in updated["requests"]] == [202]

    async def edited() -> Reply:
        async with ctx.sessions() as session:
            reply = (await session.scalars(select(Reply))).one()
        assert reply.content_html == "<p>Editado</p>"
        assert reply.updated_at is not None
        return reply

    reply = await eventually(edited)
    assert reply.updated_at is not None
    peer.check_updated(reply.updated_at, updated, ctx)

    # A Like and an Announce of the communiqué are accepted (and ignored).
    liked = await remote.post("like", {"object": published.url})
    announced = await remote.post("announce", {"object": published.url})
    assert [r["status"] for r in liked["requests"] + announced["requests"]] == [202, 202]

    # The peer deletes its reply: Delete{Tombstone} (Fedify) or Delete{id} (bovine).
    deleted = await remote.post("delete", {"noteId": replied["noteId"]})
    peer.check_delete(deleted, replied)
    assert [r["status"] for r in deleted["requests"]] == [202]
    await settled_count(ctx, 0, Reply)

    async def all_recorded() -> bool:
        types = {a.type for a in await inbox_activities(ctx) if a.actor_uri == remote.actor}
        assert types == {"Create", "Update", "Like", "Announce", "Delete"}, types
        return True

    await eventually(all_recorded)
    await peer.assert_signed_requests(ctx, posts=5)


async def test_unfollow_stops_deliveries(
    ctx: Context, server: ServerThread, peer: PeerCase
) -> None:
    remote = peer.remote
    handle = fresh_handle("zuccotti")
    await approved_assembly(ctx, handle)
    followed = await follow_accepted(ctx, peer, handle)

    # Undo{Follow}: Fedify embeds the whole Follow (and its proof), bovine names it by id.
    undone = await remote.unfollow(f"{handle}@{ctx.urls.host}")
    assert undone["followId"] == followed["followId"]
    peer.check_undo(undone, followed)
    assert [r["status"] for r in undone["requests"]] == [202]
    await settled_count(ctx, 0, Follower)
    state = await remote.state()
    assert all(f["actor"] != ctx.urls.actor(handle) for f in state["following"])

    seq = (await remote.inbox())["seq"]
    published = await post(ctx, handle, f"Nobody at the {peer.name} peer should receive this.")
    assert published.deliveries == 0
    assert await worker.run_once(ctx) == 0
    assert (await remote.inbox(seq))["activities"] == []
    await peer.assert_signed_requests(ctx, posts=2)


async def test_mention_reaches_the_peer_without_a_follow(
    ctx: Context, server: ServerThread, peer: PeerCase
) -> None:
    """A communiqué mentioning the peer's alice is tagged, addressed and delivered to her."""
    remote = peer.remote
    handle = fresh_handle("mentioner")
    await approved_assembly(ctx, handle)
    text = f"Greetings @{remote.handle}, from the Liberty Plaza assembly."
    seq = (await remote.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        found = await mentions.resolve(session, ctx, text)
    # Delivered to her shared inbox when she has one (Fedify), else to her own (bovine).
    assert [(m.href, m.inbox) for m in found] == [(remote.actor, peer.delivery_inbox)]
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session, ctx.urls, handle=handle, source=text, now=ctx.clock(), mentions=found
        )
    assert published.deliveries == 1
    create = await delivered(ctx, peer, "Create", seq)
    peer.assert_verified(create, ctx, handle)
    assert create["inbox"] == peer.delivery_path
    note = peer.received(create)["object"]
    tags = note["tag"] if isinstance(note["tag"], list) else [note["tag"]]
    assert any(t.get("type") == "Mention" and t.get("href") == remote.actor for t in tags), tags
    cc = note["cc"] if isinstance(note["cc"], list) else [note["cc"]]
    assert remote.actor in cc


async def test_inbox_verifies_the_peers_signatures(
    ctx: Context, server: ServerThread, peer: PeerCase
) -> None:
    """Raw Follows signed by the peer's own code, with no LD signature or proof to lean on.

    Two variants our inbox must accept (the first sent to our shared inbox, the second to
    the assembly's), then the ones it must refuse with 401: Fedify signs with draft-cavage
    or RFC 9421 (or not at all); bovine signs draft-cavage with its default lower-case
    ``Digest: sha-256=`` or with ``SHA-256=`` (or over a digest of other bytes, or not at
    all).
    """
    handle = fresh_handle("oakland")
    await approved_assembly(ctx, handle)
    follow: Json = {"type": "Follow", "object": ctx.urls.actor(handle)}

    first, second = peer.accepted_variants
    shared = await peer.send(ctx.urls.shared_inbox(), follow, first)
    assert (peer.variant_of(shared), shared["status"]) == (first, 202), shared
    own = await peer.send(ctx.urls.inbox(handle), follow, second)
    assert (peer.variant_of(own), own["status"]) == (second, 202), own
    for variant in peer.refused_variants:
        refused = await peer.send(ctx.urls.inbox(handle), follow, variant)
        assert (peer.variant_of(refused), refused["status"]) == (variant, 401), refused
    await peer.check_sent_variants([202, 202] + [401] * len(peer.refused_variants))

    async def both_stored() -> bool:
        ids = {a.uri for a in await inbox_activities(ctx)}
        assert ids == {shared["activityId"], own["activityId"]}, ids
        async with ctx.sessions() as session:
            follower = (await session.scalars(select(Follower))).one_or_none()
        assert follower is not None, "no follower stored yet"
        assert follower.follow_uri == own["activityId"]  # the later Follow, one follower row
        return True

    await eventually(both_stored)
