"""Interop: a real Fedify server (tests/interop/fedify-peer) against our app under uvicorn.

Fedify (2.3.6) verifies every signature itself, signs its own requests with RFC 9421 first
(falling back to draft-cavage only when the receiver answers 4xx), embeds LD signatures and
Data Integrity proofs, and writes its JSON-LD its own way: plain-string ``to``/``cc``,
nanosecond timestamps, embedded objects. Each test drives it through its control API and
checks both sides: our database, and what Fedify logged as received and sent.

The Fedify process is shared by the session (see conftest.py). It caches remote documents
and keys by URL, so every test invocation uses an assembly handle of its own: the two
backend runs of one test must never present Fedify the same actor URI with another key.
"""

from __future__ import annotations

import io
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from starlette.datastructures import Headers, UploadFile

from server import assemblies, communiques, media, worker
from server.activitypub import mentions
from server.config import Settings
from server.context import Context
from server.models import (
    Follower,
    FollowerStatus,
    InboxActivity,
    MediaPurpose,
    RemoteActor,
    Reply,
)
from tests.conftest import make_settings
from tests.helpers import approved_assembly, count, post
from tests.interop.conftest import FedifyPeer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
AS2 = {"Accept": "application/activity+json"}

_handles = itertools.count(1)


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    """The usual settings, with uploads stored under the test's own directory."""
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "media")


def fresh_handle(base: str) -> str:
    """A handle no earlier test in this session used (Fedify caches actors by URI)."""
    return f"{base}_{next(_handles)}"


# -- checks on what Fedify logged -----------------------------------------------------------


def assert_http_signature_verified(entry: dict[str, Any], ctx: Context, handle: str) -> None:
    """Fedify verified this activity from our HTTP signature alone (we send no LD signature)."""
    assert entry["verified"] is True, entry["unverifiedReason"]
    assert entry["verification"] == "http-signature", entry
    assert entry["httpSignatureVerified"] is True
    assert entry["ldSignatureVerified"] is False
    assert entry["httpSignatureKeyId"] == ctx.urls.key_id(handle)
    assert entry["actor"] == ctx.urls.actor(handle)


def _ours(entry: dict[str, Any], ctx: Context) -> bool:
    return urlsplit(str(entry["url"])).netloc == ctx.urls.host


async def assert_fedify_signed_rfc9421_without_retry(
    fedify: FedifyPeer, ctx: Context, *, posts: int
) -> None:
    """Every request Fedify made to us was signed RFC 9421 and succeeded at the first knock.

    Fedify signs with RFC 9421 first and re-signs with draft-cavage only after a 4xx/5xx,
    so RFC 9421 on every request with attempt 1 and a 2xx means our server verified RFC 9421
    and Fedify never had to fall back. For GETs the peer's ``attempt`` also counts unrelated
    refetches of the same URL, so there a 200 at every request is what proves no retry.
    """
    outgoing = [e for e in (await fedify.inbox())["outgoing"] if _ours(e, ctx)]
    key_id = f"{fedify.actor}#main-key"
    sent = [e for e in outgoing if e["method"] == "POST"]
    assert len(sent) == posts, [(e["activityType"], e["status"], e["attempt"]) for e in sent]
    for e in sent:
        assert (e["scheme"], e["attempt"], e["status"], e["keyId"]) == (
            "rfc9421",
            1,
            202,
            key_id,
        ), e
        assert "content-digest" in e["signedComponents"], e
    # Signed GETs of our actor, key and notes (WebFinger is the one unsigned lookup).
    fetched = [e for e in outgoing if e["method"] == "GET" and "/.well-known/" not in e["url"]]
    assert fetched, "Fedify fetched nothing from us"
    for e in fetched:
        assert (e["scheme"], e["status"], e["keyId"]) == ("rfc9421", 200, key_id), e


# -- steps shared by the scenarios ----------------------------------------------------------


async def follow_accepted(ctx: Context, fedify: FedifyPeer, handle: str) -> dict[str, Any]:
    """Fedify's alice follows the assembly by handle; we store her and deliver the Accept."""
    followed = await fedify.follow(f"{handle}@{ctx.urls.host}")
    assert followed["targetActor"] == ctx.urls.actor(handle)
    async with ctx.sessions() as session:
        row = (
            await session.execute(
                select(Follower, RemoteActor).join(RemoteActor, Follower.actor_id == RemoteActor.id)
            )
        ).one()
    follower, actor = row
    assert actor.uri == fedify.actor
    assert actor.inbox_uri == f"{fedify.actor}/inbox"
    assert actor.shared_inbox_uri == f"{fedify.base_url}/inbox"
    assert follower.follow_uri == followed["followId"]
    assert follower.status == FollowerStatus.ACCEPTED

    assert await worker.run_once(ctx) == 1
    accept = await fedify.wait_for_activity("Accept")
    assert_http_signature_verified(accept, ctx, handle)
    assert accept["object"] == followed["followId"]

    async def accepted() -> bool:
        following: list[dict[str, Any]] = (await fedify.state())["following"]
        return any(
            f["actor"] == ctx.urls.actor(handle) and f["status"] == "accepted" for f in following
        )

    await fedify.wait_for(accepted, "Fedify to record the follow as accepted")
    return followed


async def delivered(
    ctx: Context, fedify: FedifyPeer, activity_type: str, since: int
) -> dict[str, Any]:
    """Run the worker once; Fedify must have received exactly one such activity since ``since``."""
    assert await worker.run_once(ctx) == 1
    activities: list[dict[str, Any]] = (await fedify.inbox(since))["activities"]
    received = [a for a in activities if a["type"] == activity_type]
    assert len(received) == 1, received
    return received[0]


# -- the scenarios ---------------------------------------------------------------------------


async def test_follow_by_handle_is_accepted(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    handle = fresh_handle("libertyplaza")
    await approved_assembly(ctx, handle)
    followed = await follow_accepted(ctx, fedify, handle)

    # The Accept embeds the Follow and went to alice's own inbox.
    (accept,) = await fedify.activities("Accept")
    assert accept["inbox"] == "/users/alice/inbox"
    assert accept["raw"]["object"]["id"] == followed["followId"]
    assert accept["raw"]["object"]["actor"] == fedify.actor
    # Fedify resolved us with WebFinger, then fetched our actor and key with signed GETs
    # and POSTed the Follow: all RFC 9421, all accepted at the first attempt.
    await assert_fedify_signed_rfc9421_without_retry(fedify, ctx, posts=1)
    # And our fetch of alice (to learn her inbox) was signed too, by our instance actor.
    incoming = (await fedify.inbox())["incoming"]
    ours = [e for e in incoming if e["method"] == "GET" and e["path"] == "/users/alice"]
    assert ours and all(e["status"] == 200 for e in ours), ours
    assert all(e["keyId"] == ctx.urls.instance_key_id() for e in ours), ours
    assert await count(ctx, InboxActivity, InboxActivity.type == "Follow") == 1


async def test_communique_create_update_delete_reach_fedify(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    handle = fresh_handle("puertadelsol")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, fedify, handle)
    seq = (await fedify.inbox())["seq"]

    text = "¡Asamblea general en la plaza! #TomaLaPlaza"
    published = await post(ctx, handle, text, language="es")
    assert published.deliveries == 1  # one follower, on Fedify's shared inbox
    create = await delivered(ctx, fedify, "Create", seq)
    assert_http_signature_verified(create, ctx, handle)
    assert create["inbox"] == "/inbox"
    assert create["object"] == published.url
    note = create["json"]["object"]
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
    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx.urls, url=published.url, source="Texto enmendado.", now=ctx.clock()
        )
    update = await delivered(ctx, fedify, "Update", seq)
    assert_http_signature_verified(update, ctx, handle)
    assert update["object"] == published.url
    assert update["json"]["object"]["content"] == "<p>Texto enmendado.</p>"
    assert update["json"]["object"]["contentMap"] == {"es": "<p>Texto enmendado.</p>"}
    assert "updated" in update["json"]["object"]

    # Delete → Delete of a Tombstone, verified.
    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    deleted = await delivered(ctx, fedify, "Delete", seq)
    assert_http_signature_verified(deleted, ctx, handle)
    assert deleted["object"] == published.url
    assert deleted["json"]["object"]["type"] == "Tombstone"

    assert (await fedify.inbox())["errors"] == []
    await assert_fedify_signed_rfc9421_without_retry(fedify, ctx, posts=1)  # the Follow


async def test_fedify_reply_is_stored_updated_and_deleted(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    handle = fresh_handle("plazacatalunya")
    await approved_assembly(ctx, handle)
    published = await post(ctx, handle, "Convocamos a todas las asambleas. #InterOcc", "es")

    # Fedify fetches the Note (signed GET), then sends Create{Note} with inReplyTo, a
    # Mention of the assembly, plain-string cc, an LD signature, a proof and nanoseconds.
    replied = await fedify.reply(published.url, "<p>¡Solidaridad desde <b>Oakland</b>!</p>")
    assert replied["delivered"] is True
    (request,) = replied["requests"]
    assert request["url"] == ctx.urls.inbox(handle) and request["status"] == 202
    assert await count(ctx, InboxActivity, InboxActivity.uri == replied["createId"]) == 1
    async with ctx.sessions() as session:
        reply = (await session.scalars(select(Reply))).one()
    assert reply.uri == replied["noteId"]
    assert reply.communique_id == published.communique.id
    assert reply.actor_uri == fedify.actor
    assert reply.content_html == "<p>¡Solidaridad desde <b>Oakland</b>!</p>"
    async with httpx.AsyncClient() as http:
        note = (await http.get(replied["noteId"], headers=AS2)).json()
        page = await http.get(published.url, headers={"Accept": "text/html"})
    # Fedify's nanosecond `published` is kept (to the microsecond).
    assert note["published"].startswith(reply.published_at.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    assert "Solidaridad desde" in page.text

    # Fedify edits its reply: Update{Note}.
    edit = {"noteId": replied["noteId"], "content": "<p>Editado</p>"}
    updated = await fedify.post("update", edit)
    assert [r["status"] for r in updated["requests"]] == [202]
    async with ctx.sessions() as session:
        reply = (await session.scalars(select(Reply))).one()
    assert reply.content_html == "<p>Editado</p>"
    assert reply.updated_at is not None
    assert abs(reply.updated_at - ctx.clock()) < timedelta(minutes=5)

    # A Like and an Announce of the communiqué are accepted (and ignored).
    liked = await fedify.post("like", {"object": published.url})
    announced = await fedify.post("announce", {"object": published.url})
    assert [r["status"] for r in liked["requests"] + announced["requests"]] == [202, 202]

    # Fedify deletes its reply: Delete{Tombstone}.
    deleted = await fedify.post("delete", {"noteId": replied["noteId"]})
    assert [r["status"] for r in deleted["requests"]] == [202]
    assert await count(ctx, Reply) == 0
    types = {a.type for a in (await _inbox_activities(ctx)) if a.actor_uri == fedify.actor}
    assert types == {"Create", "Update", "Like", "Announce", "Delete"}
    await assert_fedify_signed_rfc9421_without_retry(fedify, ctx, posts=5)


async def _inbox_activities(ctx: Context) -> list[InboxActivity]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(InboxActivity))).all())


async def test_unfollow_stops_deliveries(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    handle = fresh_handle("zuccotti")
    await approved_assembly(ctx, handle)
    followed = await follow_accepted(ctx, fedify, handle)

    # Undo with the whole Follow embedded (Fedify also embeds its proof in there).
    undone = await fedify.unfollow(f"{handle}@{ctx.urls.host}")
    assert undone["followId"] == followed["followId"]
    assert [r["status"] for r in undone["requests"]] == [202]
    assert await count(ctx, Follower) == 0
    state = await fedify.state()
    assert all(f["actor"] != ctx.urls.actor(handle) for f in state["following"])

    seq = (await fedify.inbox())["seq"]
    published = await post(ctx, handle, "Nobody at Fedify should receive this.")
    assert published.deliveries == 0
    assert await worker.run_once(ctx) == 0
    assert (await fedify.inbox(seq))["activities"] == []
    await assert_fedify_signed_rfc9421_without_retry(fedify, ctx, posts=2)


async def test_inbox_verifies_rfc9421_and_draft_cavage(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """Raw deliveries with one signature scheme each and no LD signature or proof to lean on."""
    handle = fresh_handle("oakland")
    await approved_assembly(ctx, handle)
    follow = {"type": "Follow", "object": ctx.urls.actor(handle)}

    cavage = await fedify.send(ctx.urls.shared_inbox(), follow, scheme="draft-cavage")
    assert (cavage["scheme"], cavage["status"]) == ("draft-cavage", 202), cavage
    rfc9421 = await fedify.send(ctx.urls.inbox(handle), follow, scheme="rfc9421")
    assert (rfc9421["scheme"], rfc9421["status"]) == ("rfc9421", 202), rfc9421
    unsigned = await fedify.send(ctx.urls.inbox(handle), follow, scheme="none")
    assert unsigned["status"] == 401, unsigned

    ids = {a.uri for a in await _inbox_activities(ctx)}
    assert ids == {cavage["activityId"], rfc9421["activityId"]}
    async with ctx.sessions() as session:
        follower = (await session.scalars(select(Follower))).one()
    assert follower.follow_uri == rfc9421["activityId"]  # the later Follow, one follower row


async def test_mention_reaches_fedify_without_a_follow(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """A communiqué mentioning Fedify's alice is tagged, addressed and delivered to her."""
    handle = fresh_handle("mentioner")
    await approved_assembly(ctx, handle)
    text = f"Greetings @{fedify.handle}, from the Liberty Plaza assembly."
    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        found = await mentions.resolve(session, ctx, text)
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session, ctx.urls, handle=handle, source=text, now=ctx.clock(), mentions=found
        )
    assert published.deliveries == 1
    create = await delivered(ctx, fedify, "Create", seq)
    assert_http_signature_verified(create, ctx, handle)
    note = create["json"]["object"]
    tags = note["tag"] if isinstance(note["tag"], list) else [note["tag"]]
    assert any(t.get("type") == "Mention" and t.get("href") == fedify.actor for t in tags), tags
    cc = note["cc"] if isinstance(note["cc"], list) else [note["cc"]]
    assert fedify.actor in cc


async def test_image_attachment_and_content_warning_reach_fedify(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """Issue 3: a communiqué with a photo and a content warning, parsed by Fedify's vocab."""
    handle = fresh_handle("oscargrant")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, fedify, handle)
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

    create = await delivered(ctx, fedify, "Create", seq)
    assert_http_signature_verified(create, ctx, handle)
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
