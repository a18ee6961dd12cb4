"""Interop: a peer built on bovine (tests/interop/bovine-peer) against our app under uvicorn.

bovine 0.5.19 (Helge's Python ActivityPub library, from PyPI) is a second implementation we
did not write: the peer signs every request and verifies every delivery with bovine's own
code (``BovineActor``/``SignedHttpClient`` and ``SignatureChecker``), resolves handles with
bovine's WebFinger client and builds its activities with bovine's factories. The Fedify
scenarios (test_fedify.py) run here too, where bovine supports them:

- follow by handle → Accept, verified by bovine: ``test_follow_by_handle_is_accepted``;
- Create{Note} (hashtag, ``contentMap`` language), Update, Delete, each verified by bovine:
  ``test_communique_create_update_delete_reach_bovine``;
- bovine replies, edits, likes, announces and deletes its reply:
  ``test_bovine_reply_is_stored_updated_and_deleted``;
- Undo{Follow}, then nothing more is delivered: ``test_unfollow_stops_deliveries``;
- a mention reaches bovine without a follow: ``test_mention_reaches_bovine_without_a_follow``;
- our inbox verifies bovine's signatures, with ``Digest: sha-256=`` (its default) and
  ``SHA-256=``, and refuses a wrong digest or none: ``test_inbox_verifies_bovine_digest_variants``.

bovine can also cover an RFC 9530 ``Content-Digest`` instead of ``Digest`` in its draft-cavage
signature (``digest_method=content_digest_sha256_rfc_9530``); our verifier accepts either and
checks whichever is covered: ``test_inbox_accepts_bovine_rfc9530_content_digest``.

What bovine cannot do, and so is not run here:

- **Sign with RFC 9421.** bovine signs only draft-cavage (``rsa-sha256`` over
  ``(request-target) host date`` + ``accept`` for GET, + digest and ``content-type`` for
  POST); its RFC 9421 support is verification only ("in development", per its
  ``RFC9421Signature`` docstring). Our RFC 9421 verifier is exercised by the Fedify peer.
- **Shared inboxes.** bovine's actor model has no ``endpoints.sharedInbox`` and its clients
  deliver to each actor's ``inbox``, so the peer advertises none and we deliver to alice's
  own inbox.
- **Handle incoming Follows.** Side effects live in bovine-process/bovine-herd, not in the
  bovine library; the peer records a Follow sent to it but does not answer it. Assemblies
  never follow anyone, so no scenario needs it.

How bovine differs from Fedify on the wire, which these tests pin down: the Digest prefix is
lower case ``sha-256=`` by default, the signature also covers ``content-type``; ``Undo`` and
``Delete`` name their object by id instead of embedding it; a reply carries ``to`` the author
and the original's audience in ``cc``; timestamps are whole seconds (``…:42Z``); signed GETs
send ``Accept: application/activity+json`` and sign it. bovine's verifier accepts a Date at
most five minutes off and computes ``(request-target)`` from the path without the query.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from server import communiques, worker
from server.activitypub import mentions
from server.context import Context
from server.models import Follower, FollowerStatus, InboxActivity, RemoteActor, Reply
from tests.helpers import approved_assembly, count, post
from tests.interop.conftest import BovinePeer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
AS2 = {"Accept": "application/activity+json"}
# What our draft-cavage signer covers on a POST with a body (server/activitypub/signatures.py).
OUR_POST_HEADERS = ["(request-target)", "host", "date", "digest"]

_handles = itertools.count(1)


def fresh_handle(base: str) -> str:
    """A handle no earlier test in this session used (the peer keys follows by actor URI)."""
    return f"{base}_{next(_handles)}"


def _ours(entry: dict[str, Any], ctx: Context) -> bool:
    return urlsplit(str(entry["url"])).netloc == ctx.urls.host


# -- checks on what bovine logged ------------------------------------------------------------


def assert_verified_by_bovine(entry: dict[str, Any], ctx: Context, handle: str) -> None:
    """bovine's SignatureChecker verified our draft-cavage signature with the assembly's key."""
    assert entry["verified"] is True, entry["verifyLog"]
    assert entry["scheme"] == "draft-cavage", entry
    assert entry["algorithm"] == "rsa-sha256", entry
    assert entry["keyId"] == ctx.urls.key_id(handle)
    assert entry["keyOwner"] == ctx.urls.actor(handle) == entry["actor"]
    assert entry["signedHeaders"] == OUR_POST_HEADERS, entry
    assert entry["inbox"] == "/users/alice/inbox"


async def assert_bovine_signed_every_request(
    bovine: BovinePeer, ctx: Context, *, posts: int
) -> None:
    """Every request bovine made to us was signed by alice and answered at once.

    POSTs are signed over ``(request-target) host date digest content-type`` and must get
    202; signed GETs (our actors, keys, notes) 200, apart from our followers collection,
    which bovine tries when it looks for inboxes among a reply's ``cc``. WebFinger is the one
    unsigned lookup.
    """
    outgoing = [e for e in (await bovine.inbox())["outgoing"] if _ours(e, ctx)]
    sent = [e for e in outgoing if e["method"] == "POST"]
    assert len(sent) == posts, [(e["url"], e["status"]) for e in sent]
    for e in sent:
        assert (e["scheme"], e["keyId"], e["status"]) == ("draft-cavage", bovine.key_id, 202), e
        assert e["signedHeaders"] == [
            "(request-target)",
            "host",
            "date",
            "digest",
            "content-type",
        ], e
        assert e["digest"].startswith("sha-256="), e  # lower case, bovine's default
    fetched = [e for e in outgoing if e["method"] == "GET" and "/.well-known/" not in e["url"]]
    assert fetched, "bovine fetched nothing from us"
    for e in fetched:
        assert (e["scheme"], e["keyId"]) == ("draft-cavage", bovine.key_id), e
        expected = {200, 401, 403, 404} if e["url"].endswith("/followers") else {200}
        assert e["status"] in expected, e


# -- steps shared by the scenarios ----------------------------------------------------------


async def follow_accepted(ctx: Context, bovine: BovinePeer, handle: str) -> dict[str, Any]:
    """bovine's alice follows the assembly by handle; we store her and deliver the Accept."""
    followed = await bovine.follow(f"{handle}@{ctx.urls.host}")
    assert followed["targetActor"] == ctx.urls.actor(handle)
    # bovine delivers to the actor's own inbox (it has no notion of a shared inbox).
    assert followed["requests"] == [
        {"url": ctx.urls.inbox(handle), "status": 202, "responseBody": None}
    ]
    async with ctx.sessions() as session:
        follower, actor = (
            await session.execute(
                select(Follower, RemoteActor).join(RemoteActor, Follower.actor_id == RemoteActor.id)
            )
        ).one()
    assert actor.uri == bovine.actor
    assert actor.inbox_uri == f"{bovine.actor}/inbox"
    assert actor.shared_inbox_uri is None
    assert follower.follow_uri == followed["followId"]
    assert follower.status == FollowerStatus.ACCEPTED

    assert await worker.run_once(ctx) == 1
    (accept,) = await bovine.activities("Accept")
    assert_verified_by_bovine(accept, ctx, handle)
    assert accept["object"] == followed["followId"]
    state = await bovine.state()
    assert {"actor": ctx.urls.actor(handle), "status": "accepted"}.items() <= next(
        f for f in state["following"] if f["actor"] == ctx.urls.actor(handle)
    ).items()
    return followed


async def delivered(
    ctx: Context, bovine: BovinePeer, activity_type: str, since: int
) -> dict[str, Any]:
    """Run the worker once; bovine must have received exactly one such activity since ``since``."""
    assert await worker.run_once(ctx) == 1
    activities: list[dict[str, Any]] = (await bovine.inbox(since))["activities"]
    received = [a for a in activities if a["type"] == activity_type]
    assert len(received) == 1, received
    return received[0]


async def _inbox_activities(ctx: Context) -> list[InboxActivity]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(InboxActivity))).all())


# -- the scenarios ---------------------------------------------------------------------------


async def test_follow_by_handle_is_accepted(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    handle = fresh_handle("libertyplaza")
    await approved_assembly(ctx, handle)
    followed = await follow_accepted(ctx, bovine, handle)

    # bovine's Follow names us by id and is addressed to us; the Accept embeds it by its id.
    assert followed["json"]["object"] == ctx.urls.actor(handle)
    assert followed["json"]["to"] == [ctx.urls.actor(handle)]
    (accept,) = await bovine.activities("Accept")
    assert accept["raw"]["object"]["id"] == followed["followId"]
    assert accept["raw"]["object"]["actor"] == bovine.actor
    assert bovine.actor in accept["raw"]["to"]
    # bovine resolved us with WebFinger, fetched our actor with a signed GET and POSTed the
    # Follow; to verify the Accept it fetched our key, signed again.
    await assert_bovine_signed_every_request(bovine, ctx, posts=1)
    outgoing = (await bovine.inbox())["outgoing"]
    assert any(e["url"] == ctx.urls.key_id(handle) for e in outgoing), outgoing
    # And our fetch of alice (to learn her inbox) was signed by our instance actor, which
    # bovine's verifier accepts (it checks GETs after answering them).
    incoming = (await bovine.inbox())["incoming"]
    ours = [e for e in incoming if e["method"] == "GET" and e["path"] == "/users/alice"]
    assert ours and all(e["status"] == 200 for e in ours), ours
    assert all(e["keyId"] == ctx.urls.instance_key_id() for e in ours), ours

    async def gets_verified() -> bool:
        entries = [e for e in (await bovine.inbox())["incoming"] if e["path"] == "/users/alice"]
        return all(e["signatureVerified"] is not None for e in entries)

    await bovine.wait_for(gets_verified, "bovine to verify our signed GETs")
    incoming = (await bovine.inbox())["incoming"]
    ours = [e for e in incoming if e["method"] == "GET" and e["path"] == "/users/alice"]
    for e in ours:
        assert e["signatureVerified"] is True, e
        assert e["keyOwner"] == ctx.urls.instance_actor(), e
        assert e["signedHeaders"] == ["(request-target)", "host", "date", "accept"], e
    assert await count(ctx, InboxActivity, InboxActivity.type == "Follow") == 1


async def test_communique_create_update_delete_reach_bovine(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    handle = fresh_handle("puertadelsol")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, bovine, handle)
    seq = (await bovine.inbox())["seq"]

    text = "¡Asamblea general en la plaza! #TomaLaPlaza"
    published = await post(ctx, handle, text, language="es")
    assert published.deliveries == 1  # one follower, on alice's own inbox
    create = await delivered(ctx, bovine, "Create", seq)
    assert_verified_by_bovine(create, ctx, handle)
    assert create["object"] == published.url
    note = create["raw"]["object"]
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
    seq = (await bovine.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx.urls, url=published.url, source="Texto enmendado.", now=ctx.clock()
        )
    update = await delivered(ctx, bovine, "Update", seq)
    assert_verified_by_bovine(update, ctx, handle)
    assert update["object"] == published.url
    assert update["raw"]["object"]["content"] == "<p>Texto enmendado.</p>"
    assert update["raw"]["object"]["contentMap"] == {"es": "<p>Texto enmendado.</p>"}
    assert "updated" in update["raw"]["object"]

    # Delete → Delete of a Tombstone, verified.
    seq = (await bovine.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    deleted = await delivered(ctx, bovine, "Delete", seq)
    assert_verified_by_bovine(deleted, ctx, handle)
    assert deleted["object"] == published.url
    assert deleted["raw"]["object"]["type"] == "Tombstone"

    assert (await bovine.inbox())["errors"] == []
    await assert_bovine_signed_every_request(bovine, ctx, posts=1)  # the Follow


async def test_bovine_reply_is_stored_updated_and_deleted(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    handle = fresh_handle("plazacatalunya")
    await approved_assembly(ctx, handle)
    published = await post(ctx, handle, "Convocamos a todas las asambleas. #InterOcc", "es")

    # bovine fetches the Note and its author (signed GETs), then sends Create{Note} with
    # inReplyTo, a Mention of the assembly, `to` the author and the Note's audience in cc.
    replied = await bovine.reply(published.url, "<p>¡Solidaridad desde <b>Oakland</b>!</p>")
    assert replied["delivered"] is True, replied
    (request,) = replied["requests"]
    assert request["url"] == ctx.urls.inbox(handle) and request["status"] == 202
    reply_note = replied["json"]["object"]
    assert reply_note["inReplyTo"] == published.url
    assert reply_note["to"] == [ctx.urls.actor(handle)]
    assert PUBLIC in reply_note["cc"]
    # bovine's Mention carries its own @context and names the handle without a leading @.
    (mention,) = reply_note["tag"]
    assert mention["type"] == "Mention" and mention["href"] == ctx.urls.actor(handle)
    assert mention["name"] == f"{handle}@{ctx.urls.host}"
    assert await count(ctx, InboxActivity, InboxActivity.uri == replied["createId"]) == 1
    async with ctx.sessions() as session:
        reply = (await session.scalars(select(Reply))).one()
    assert reply.uri == replied["noteId"]
    assert reply.communique_id == published.communique.id
    assert reply.actor_uri == bovine.actor
    assert reply.content_html == "<p>¡Solidaridad desde <b>Oakland</b>!</p>"
    # bovine's `published` is whole seconds with a Z.
    assert reply.published_at.strftime("%Y-%m-%dT%H:%M:%SZ") == reply_note["published"]
    async with httpx.AsyncClient() as http:
        page = await http.get(published.url, headers={"Accept": "text/html"})
        note = (await http.get(replied["noteId"], headers=AS2)).json()
    assert "Solidaridad desde" in page.text
    assert note["id"] == replied["noteId"]  # the peer serves what it sent

    # bovine edits its reply: Update{Note}.
    updated = await bovine.post(
        "update", {"noteId": replied["noteId"], "content": "<p>Editado</p>"}
    )
    assert [r["status"] for r in updated["requests"]] == [202]
    async with ctx.sessions() as session:
        reply = (await session.scalars(select(Reply))).one()
    assert reply.content_html == "<p>Editado</p>"
    assert reply.updated_at is not None
    assert reply.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ") == updated["json"]["object"]["updated"]

    # A Like and an Announce of the communiqué are accepted (and ignored).
    liked = await bovine.post("like", {"object": published.url})
    announced = await bovine.post("announce", {"object": published.url})
    assert [r["status"] for r in liked["requests"] + announced["requests"]] == [202, 202]

    # bovine deletes its reply: a Delete naming the Note by id; the Note then answers 410.
    deleted = await bovine.post("delete", {"noteId": replied["noteId"]})
    assert deleted["json"]["object"] == replied["noteId"]
    assert [r["status"] for r in deleted["requests"]] == [202]
    assert await count(ctx, Reply) == 0
    types = {a.type for a in await _inbox_activities(ctx) if a.actor_uri == bovine.actor}
    assert types == {"Create", "Update", "Like", "Announce", "Delete"}
    await assert_bovine_signed_every_request(bovine, ctx, posts=5)


async def test_unfollow_stops_deliveries(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    handle = fresh_handle("zuccotti")
    await approved_assembly(ctx, handle)
    followed = await follow_accepted(ctx, bovine, handle)

    # bovine's Undo names the Follow by its id, it does not embed it (Fedify does).
    undone = await bovine.unfollow(f"{handle}@{ctx.urls.host}")
    assert undone["json"]["object"] == followed["followId"]
    assert [r["status"] for r in undone["requests"]] == [202]
    assert await count(ctx, Follower) == 0
    state = await bovine.state()
    assert all(f["actor"] != ctx.urls.actor(handle) for f in state["following"])

    seq = (await bovine.inbox())["seq"]
    published = await post(ctx, handle, "Nobody at bovine should receive this.")
    assert published.deliveries == 0
    assert await worker.run_once(ctx) == 0
    assert (await bovine.inbox(seq))["activities"] == []
    await assert_bovine_signed_every_request(bovine, ctx, posts=2)


async def test_inbox_verifies_bovine_digest_variants(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    """Raw Follows signed by bovine with either case of its Digest, and two that must fail.

    bovine's default is ``Digest: sha-256=…`` (lower case, unlike Mastodon and us); it also
    offers ``SHA-256=…``. Both are covered by a draft-cavage signature.
    """
    handle = fresh_handle("oakland")
    await approved_assembly(ctx, handle)
    follow = {"type": "Follow", "object": ctx.urls.actor(handle)}

    lower = await bovine.send(ctx.urls.shared_inbox(), follow, digest="digest")
    assert lower["status"] == 202, lower
    upper = await bovine.send(ctx.urls.inbox(handle), follow, digest="digest-uppercase")
    assert upper["status"] == 202, upper
    # A valid signature over a digest of other bytes, and no signature at all.
    wrong = await bovine.send(ctx.urls.inbox(handle), follow, digest="wrong")
    assert wrong["status"] == 401, wrong
    unsigned = await bovine.send(ctx.urls.inbox(handle), follow, digest="unsigned")
    assert unsigned["status"] == 401, unsigned

    posts = [e for e in (await bovine.inbox())["outgoing"] if e["method"] == "POST"]
    assert [(e["digest"] or "")[:8] for e in posts] == ["sha-256=", "SHA-256=", "sha-256=", ""]
    assert [e["status"] for e in posts] == [202, 202, 401, 401]
    ids = {a.uri for a in await _inbox_activities(ctx)}
    assert ids == {lower["activityId"], upper["activityId"]}
    async with ctx.sessions() as session:
        follower = (await session.scalars(select(Follower))).one()
    assert follower.follow_uri == upper["activityId"]  # the later Follow, one follower row


async def test_inbox_accepts_bovine_rfc9530_content_digest(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    """bovine's third digest method: ``Content-Digest: sha-256=:…:`` covered instead of Digest.

    ``BovineActor(digest_method=content_digest_sha256_rfc_9530)`` is a documented bovine
    option, and bovine's own verifier takes either header in a draft-cavage signature.
    """
    handle = fresh_handle("oakland_rfc9530")
    await approved_assembly(ctx, handle)
    follow = {"type": "Follow", "object": ctx.urls.actor(handle)}
    sent = await bovine.send(ctx.urls.inbox(handle), follow, digest="content-digest")
    (request,) = [e for e in (await bovine.inbox())["outgoing"] if e["method"] == "POST"]
    assert request["signedHeaders"] == [
        "(request-target)",
        "host",
        "date",
        "content-digest",
        "content-type",
    ]
    assert request["digest"] is None and request["contentDigest"].startswith("sha-256=:")
    assert sent["status"] == 202, sent
    assert await count(ctx, Follower) == 1


async def test_mention_reaches_bovine_without_a_follow(
    ctx: Context, server: ServerThread, bovine: BovinePeer
) -> None:
    """A communiqué mentioning bovine's alice is tagged, addressed and delivered to her."""
    handle = fresh_handle("mentioner")
    await approved_assembly(ctx, handle)
    text = f"Greetings @{bovine.handle}, from the Liberty Plaza assembly."
    seq = (await bovine.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        found = await mentions.resolve(session, ctx, text)
    assert [(m.href, m.inbox) for m in found] == [(bovine.actor, f"{bovine.actor}/inbox")]
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session, ctx.urls, handle=handle, source=text, now=ctx.clock(), mentions=found
        )
    assert published.deliveries == 1
    create = await delivered(ctx, bovine, "Create", seq)
    assert_verified_by_bovine(create, ctx, handle)
    note = create["raw"]["object"]
    tags = note["tag"] if isinstance(note["tag"], list) else [note["tag"]]
    assert any(t.get("type") == "Mention" and t.get("href") == bovine.actor for t in tags), tags
    cc = note["cc"] if isinstance(note["cc"], list) else [note["cc"]]
    assert bovine.actor in cc
