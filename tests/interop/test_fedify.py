"""Interop: what only the Fedify peer (tests/interop/fedify-peer) checks.

Fedify (2.3.6) verifies every signature itself, signs its own requests with RFC 9421 first
(falling back to draft-cavage only when the receiver answers 4xx: the "double knock"),
embeds LD signatures and Data Integrity proofs, and writes its JSON-LD its own way:
plain-string ``to``/``cc``, nanosecond timestamps, embedded objects.

The scenarios both peers run (follow, Create/Update/Delete, replies, unfollow, mentions, our
inbox's verification of its draft-cavage and RFC 9421 signatures) are in test_scenarios.py;
every one of them ends with the double-knock check, ``FedifyCase.assert_signed_requests``
(peers.py): every request Fedify made to us was RFC 9421, accepted at the first attempt.
Here: an image attachment and a content warning, as Fedify's vocabulary parses them, and an
assembly's Move, which the peer follows as Mastodon does.

The Fedify process is shared by the session (see conftest.py). It caches remote documents
and keys by URL, so every test invocation uses an assembly handle of its own.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from starlette.datastructures import Headers, UploadFile

from server import assemblies, communiques, media, moving, worker
from server.activitypub import delivery, outbox
from server.config import Settings
from server.context import Context
from server.models import Assembly, Follower, FollowerStatus, MediaPurpose, RemoteActor
from tests.conftest import make_settings
from tests.helpers import approved_assembly, post
from tests.interop.conftest import FedifyPeer
from tests.interop.peers import FedifyCase, Json, delivered, follow_accepted, fresh_handle, ours
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    """The usual settings, with uploads stored under the test's own directory."""
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "media")


async def test_image_attachment_and_content_warning_reach_fedify(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """Issue 3: a communiqué with a photo and a content warning, parsed by Fedify's vocab."""
    peer = FedifyCase(fedify)
    handle = fresh_handle("oscargrant")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, peer, handle)
    seq = (await fedify.inbox())["seq"]

    photo = io.BytesIO()
    Image.new("RGB", (160, 90), (180, 20, 20)).save(photo, "JPEG")
    photo.seek(0)
    upload = UploadFile(
        file=photo, filename="plaza.jpg", headers=Headers({"content-type": "image/jpeg"})
    )
    alt = "The plaza at dawn, tents and a banner reading 'We are the 99%'"
    async with ctx.sessions() as session, session.begin():
        stored = await media.store_upload(
            session,
            ctx.settings,
            assembly=await assemblies.get(session, handle),
            upload=upload,
            purpose=MediaPurpose.ATTACHMENT,
            alt_text=alt,
            now=ctx.clock(),
        )
        published = await communiques.publish(
            session,
            ctx.urls,
            handle=handle,
            source="Eviction threatened tonight. #OccupyOakland",
            summary="police",
            attachments=[stored],
            now=ctx.clock(),
        )
    url = media.media_url(ctx.urls, stored)

    create = await delivered(ctx, peer, "Create", seq)
    peer.assert_verified(create, ctx, handle)
    # What Fedify's parser made of the Note: a Document with our type, URL, alt text and size.
    assert create["note"] == {
        "id": published.url,
        "summary": "police",
        "sensitive": True,
        "attachments": [
            {
                "type": "Document",
                "mediaType": "image/jpeg",
                "url": url,
                "name": alt,
                "width": 160,
                "height": 90,
            }
        ],
    }, create["note"]
    # And the JSON-LD Fedify writes back out of it keeps them.
    note = create["json"]["object"]
    attachment = note["attachment"]
    attachment = attachment[0] if isinstance(attachment, list) else attachment
    assert (attachment["type"], attachment["mediaType"], attachment["url"]) == (
        "Document",
        "image/jpeg",
        url,
    )
    assert note["summary"] == "police" and note["sensitive"] is True
    assert (await fedify.inbox())["errors"] == []

    # The file is there for Fedify's users to see, served as the image it is.
    async with httpx.AsyncClient() as http:
        got = await http.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert got.headers["x-content-type-options"] == "nosniff"


# -- an assembly moves ------------------------------------------------------------------------


async def followers_of(ctx: Context, actor_uri: str) -> dict[str, FollowerStatus]:
    """The assemblies ``actor_uri`` follows on our side, by handle, with the follow's status."""
    async with ctx.sessions() as session:
        rows = await session.execute(
            select(Assembly.handle, Follower.status)
            .join(Follower, Follower.assembly_id == Assembly.id)
            .join(RemoteActor, Follower.actor_id == RemoteActor.id)
            .where(RemoteActor.uri == actor_uri)
        )
    return {handle: status for handle, status in rows}


def fetched_by_peer(outgoing: list[Json], ctx: Context, uri: str) -> list[int]:
    """The statuses of the peer's GETs of ``uri`` on our server."""
    gets = [e for e in outgoing if ours(e, ctx) and e["method"] == "GET"]
    return [e["status"] for e in gets if e["url"] == uri]


async def test_fedify_follows_an_assembly_that_moves(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """An assembly moves to another identity; Fedify's alice follows it there.

    Fedify verifies and parses the Move, and nothing more: the re-follow is the peer's
    application code (fedify-peer/server.mjs, ``onMove``), done as Mastodon does. The Move's
    actor is its object; the target, fetched fresh, lists the origin in ``alsoKnownAs``;
    then, after answering the Move, alice follows the target and undoes her Follow of the
    origin. The new identity's next communiqué reaches her.
    """
    peer = FedifyCase(fedify)
    old_handle, new_handle = fresh_handle("plaza"), fresh_handle("plazanew")
    old, new = ctx.urls.actor(old_handle), ctx.urls.actor(new_handle)
    await approved_assembly(ctx, old_handle)
    await approved_assembly(ctx, new_handle)
    await follow_accepted(ctx, peer, old_handle)

    # The new identity vouches for the old one; then the old one moves.
    await moving.prepare(ctx, old)
    async with ctx.sessions() as session, session.begin():
        await moving.add_alias(session, ctx, handle=new_handle, target=old)
    seq = (await fedify.inbox())["seq"]
    target = await moving.current_target(ctx, new)
    async with ctx.sessions() as session, session.begin():
        await moving.move(session, ctx, handle=old_handle, target=target, now=ctx.clock())
    # The Move, and the Update telling followers the old actor's movedTo. At most those two:
    # the peer may follow the new identity while the Update is still on its way, and the
    # Accept that Follow queues is claimed below, not here.
    assert await worker.run_once(ctx, limit=2) == 2

    got = await fedify.inbox(seq)
    [move] = [a for a in got["activities"] if a["type"] == "Move"]
    peer.assert_verified(move, ctx, old_handle)
    assert (move["raw"]["object"], move["raw"]["target"]) == (old, new)

    async def acted() -> Json | None:
        moves: list[Json] = (await fedify.state())["moves"]
        return moves[-1] if moves and moves[-1]["status"] != "moving" else None

    entry = await fedify.wait_for(acted, "the Fedify peer to act on the Move")
    assert (entry["status"], entry["origin"], entry["target"]) == ("moved", old, new), entry
    # The peer fetched the target afresh (signed GETs, no cache): to read its aliases, then
    # again to follow it (the control API's code resolves its target).
    assert fetched_by_peer((await fedify.inbox(seq))["outgoing"], ctx, new) == [200, 200]
    # Our side processed the peer's Follow and Undo before answering them.
    assert await followers_of(ctx, fedify.actor) == {new_handle: FollowerStatus.ACCEPTED}
    async with ctx.sessions() as session:
        follower = (await session.scalars(select(Follower))).one()
    assert follower.follow_uri == entry["followId"]

    # The new identity's Accept; alice follows it, and no longer the old one.
    assert await worker.run_once(ctx) == 1

    async def following_new() -> bool:
        following: list[Json] = (await fedify.state())["following"]
        return {f["actor"]: f["status"] for f in following}.get(new) == "accepted"

    await fedify.wait_for(following_new, "the Fedify peer to record its follow of the target")
    following = {f["actor"] for f in (await fedify.state())["following"]}
    assert new in following and old not in following

    seq = (await fedify.inbox())["seq"]
    published = await post(ctx, new_handle, "We meet again, elsewhere.")
    create = await delivered(ctx, peer, "Create", seq)
    peer.assert_verified(create, ctx, new_handle)
    assert create["note"]["id"] == published.url
    assert (await fedify.inbox())["errors"] == []


async def test_fedify_ignores_a_move_its_target_does_not_confirm(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """A Move whose target does not list the origin among its aliases changes nothing.

    The check, and the re-follow it guards, are the peer's application code
    (fedify-peer/server.mjs, ``onMove``), done as Mastodon does: Fedify itself only verifies
    the signature. Our server refuses to send such a Move (``moving.move`` checks the
    target's aliases first), so this one is queued by hand, signed by the origin as a real
    one would be.
    """
    peer = FedifyCase(fedify)
    old_handle, new_handle = fresh_handle("square"), fresh_handle("squarenew")
    old, new = ctx.urls.actor(old_handle), ctx.urls.actor(new_handle)
    await approved_assembly(ctx, old_handle)
    await approved_assembly(ctx, new_handle)  # which lists no alias
    await follow_accepted(ctx, peer, old_handle)

    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, old_handle)
        await outbox.send(
            session,
            ctx.urls,
            ctx.wake,
            assembly=assembly,
            activity_type="Move",
            obj=old,
            target=new,
            to=[ctx.urls.followers(old_handle)],
            inboxes=await delivery.follower_inboxes(session, assembly.id),
            public=True,
            now=ctx.clock(),
        )
    move = await delivered(ctx, peer, "Move", seq)
    peer.assert_verified(move, ctx, old_handle)
    assert (move["raw"]["object"], move["raw"]["target"]) == (old, new)

    # The peer read the target, found no alias, and refused (before answering the Move).
    [entry] = (await fedify.state())["moves"]
    assert (entry["status"], entry["origin"], entry["target"]) == ("refused", old, new), entry
    assert "alsoKnownAs" in entry["reason"], entry
    got = await fedify.inbox(seq)
    assert fetched_by_peer(got["outgoing"], ctx, new) == [200]
    # It sent us nothing: no Follow of the target, no Undo of the origin.
    assert [e for e in got["outgoing"] if ours(e, ctx) and e["method"] == "POST"] == []
    following = {f["actor"]: f["status"] for f in (await fedify.state())["following"]}
    assert following.get(old) == "accepted" and new not in following
    assert await followers_of(ctx, fedify.actor) == {old_handle: FollowerStatus.ACCEPTED}
    assert got["errors"] == []
