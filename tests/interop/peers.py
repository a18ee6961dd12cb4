"""The two interop peers as the shared scenarios see them (tests/interop/test_scenarios.py).

A scenario drives a peer through the control API both share (conftest.py) and asks its
``PeerCase`` about everything that differs between them:

- how the peer shows it verified our signature (Fedify reports the method it used: the
  Linked Data signature of a public activity, the HTTP signature of any other; bovine's
  ``SignatureChecker`` reports the key owner and the headers our draft-cavage signature
  covers);
- how it signs its own requests (Fedify: RFC 9421 first, accepted at the first knock;
  bovine: draft-cavage with a lower-case ``sha-256=`` Digest) and which signature variants
  it can send raw;
- where we deliver to it (Fedify has a shared inbox, bovine has none) and which copy of a
  received activity to read (Fedify's re-serialisation of what its vocabulary parsed;
  bovine keeps only the raw JSON);
- the shapes of its own activities (bovine names the Follow in its Undo and the Note in its
  Delete by id, and its timestamps are whole seconds; Fedify's have nanoseconds).

Also here: the steps the scenarios share (a follow that is accepted, one delivery run) and
the polling helpers for our side, which processes a peer's activity after answering 202.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from sqlalchemy import select

from server import worker
from server.context import Context
from server.models import Base, Follower, FollowerStatus, InboxActivity, RemoteActor
from tests.helpers import count
from tests.interop.conftest import BovinePeer, ControlledPeer, FedifyPeer
from tests.support.rig import eventually

Json = dict[str, Any]

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
AS2 = {"Accept": "application/activity+json"}
# What our draft-cavage signer covers on a POST with a body (server/activitypub/signatures.py).
OUR_POST_HEADERS = ["(request-target)", "host", "date", "digest"]
# bovine's own draft-cavage POSTs also cover the content type.
BOVINE_POST_HEADERS = ["(request-target)", "host", "date", "digest", "content-type"]

_handles = itertools.count(1)


def fresh_handle(base: str) -> str:
    """A handle no earlier test in this session used, on any pytest worker.

    Both peers keep state keyed by our actors' URIs (Fedify also caches their documents and
    keys), and a loopback port may come round again; the worker's name keeps two workers'
    handles apart.
    """
    worker_id = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{base}_{worker_id}_{next(_handles)}" if worker_id else f"{base}_{next(_handles)}"


def ours(entry: Json, ctx: Context) -> bool:
    """A peer's outgoing request to our server (not to another test's, nor to itself)."""
    return urlsplit(str(entry["url"])).netloc == ctx.urls.host


class PeerCase:
    """A session peer (``remote``) and what the scenarios check differently for it."""

    name: ClassVar[str]
    # The raw deliveries ``send`` can make: two our inbox must accept, and the ones it must
    # refuse with 401.
    accepted_variants: ClassVar[tuple[str, str]]
    refused_variants: ClassVar[tuple[str, ...]]

    def __init__(self, remote: ControlledPeer) -> None:
        self.remote = remote

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote.base_url}>"

    # -- where we deliver to it ------------------------------------------------------------
    @property
    def shared_inbox(self) -> str | None:
        """The ``endpoints.sharedInbox`` its actor advertises (and we store), if any."""
        raise NotImplementedError

    @property
    def delivery_inbox(self) -> str:
        """Where our deliveries to alice go: her shared inbox when she has one."""
        return self.shared_inbox or f"{self.remote.actor}/inbox"

    @property
    def delivery_path(self) -> str:
        return urlsplit(self.delivery_inbox).path

    # -- what it received ------------------------------------------------------------------
    def received(self, entry: Json) -> Json:
        """The copy of a received activity the scenarios read."""
        raise NotImplementedError

    def assert_verified(self, entry: Json, ctx: Context, handle: str) -> None:
        """The peer verified this delivery from the assembly ``handle`` by its own code."""
        raise NotImplementedError

    # -- how it talks to us ----------------------------------------------------------------
    async def assert_signed_requests(self, ctx: Context, *, posts: int) -> None:
        """Every request the peer made to us (``posts`` POSTs) was signed its way and
        accepted at once."""
        raise NotImplementedError

    async def send(self, inbox: str, activity: Json, variant: str) -> Json:
        """A raw delivery of ``activity``, signed as ``variant`` says."""
        raise NotImplementedError

    def variant_of(self, sent: Json) -> str:
        """The variant the peer reports it used for a raw delivery."""
        raise NotImplementedError

    # -- its own shapes (nothing to add by default) ----------------------------------------
    def check_follow(self, followed: Json, ctx: Context, handle: str) -> None:
        """The control API's answer to a follow of the assembly ``handle``."""

    async def check_after_follow(self, ctx: Context, handle: str) -> None:
        """What else the peer did, and checked, while following (see the follow scenario)."""

    def check_undo(self, undone: Json, followed: Json) -> None:
        """The answer to an unfollow of what ``followed`` followed."""

    def check_reply(self, replied: Json, ctx: Context, handle: str, original: str) -> None:
        """The answer to a reply to our communiqué ``original``."""

    def check_published(self, ours: datetime, replied: Json, fetched: Json) -> None:
        """Our ``published_at`` for its reply keeps its ``published`` (``fetched``: the reply
        Note as the peer serves it)."""
        raise NotImplementedError

    def check_updated(self, ours: datetime, updated: Json, ctx: Context) -> None:
        """Our ``updated_at`` for its edited reply matches its Update."""
        raise NotImplementedError

    def check_delete(self, deleted: Json, replied: Json) -> None:
        """The answer to a delete of its reply."""

    async def check_sent_variants(self, statuses: Sequence[int]) -> None:
        """What the raw deliveries of the signature scenario looked like on the wire."""


class FedifyCase(PeerCase):
    """Fedify 2.3.6: RFC 9421 first, a shared inbox, its own JSON-LD (see test_fedify.py)."""

    name = "fedify"
    accepted_variants = ("draft-cavage", "rfc9421")
    refused_variants = ("none",)
    remote: FedifyPeer

    def __init__(self, remote: FedifyPeer) -> None:
        super().__init__(remote)

    @property
    def shared_inbox(self) -> str:
        return f"{self.remote.base_url}/inbox"

    def received(self, entry: Json) -> Json:
        # What Fedify's vocabulary parsed and wrote back out: proves it understood us.
        received: Json = entry["json"]
        return received

    def assert_verified(self, entry: Json, ctx: Context, handle: str) -> None:
        """Fedify verified this activity as the assembly ``handle``'s.

        A public activity carries the assembly's RsaSignature2017 Linked Data signature and a
        FEP-8b32 proof (server/activitypub/proofs.py): Fedify's inbox checks the signature
        first and, as it holds, looks no further. Any other activity (an Accept) carries
        only our HTTP signature, which Fedify then verifies. Either way the peer's own check
        of the HTTP signature (fedify-peer/server.mjs, ``ownChecks``) holds with the
        assembly's key.
        """
        assert entry["verified"] is True, entry["unverifiedReason"]
        assert entry["actor"] == ctx.urls.actor(handle)
        if "signature" in entry["raw"]:
            assert entry["raw"]["signature"]["creator"] == ctx.urls.key_id(handle)
            assert entry["httpSignatureVerified"] is False  # not needed, so not checked
            assert entry["verification"] == "ld-signature", entry
            assert entry["ldSignatureVerified"] is True
        else:
            assert entry["verification"] == "http-signature", entry
            assert entry["httpSignatureVerified"] is True
            assert entry["ldSignatureVerified"] is False
            assert entry["httpSignatureKeyId"] == ctx.urls.key_id(handle)
        checked = entry["checks"]["httpSignature"]
        assert (checked["verified"], checked["keyId"]) == (True, ctx.urls.key_id(handle)), checked

    async def assert_signed_requests(self, ctx: Context, *, posts: int) -> None:
        """Every request Fedify made to us was signed RFC 9421 and succeeded at the first knock.

        Fedify signs with RFC 9421 first and re-signs with draft-cavage only after a 4xx/5xx
        (the "double knock"), so RFC 9421 on every request with attempt 1 and a 2xx means
        our server verified RFC 9421 and Fedify never had to fall back. For GETs the peer's
        ``attempt`` also counts unrelated refetches of the same URL, so there a 200 at every
        request is what proves no retry.
        """
        outgoing = [e for e in (await self.remote.inbox())["outgoing"] if ours(e, ctx)]
        key_id = self.remote.key_id
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

    async def send(self, inbox: str, activity: Json, variant: str) -> Json:
        return await self.remote.send(inbox, activity, scheme=variant)

    def variant_of(self, sent: Json) -> str:
        return str(sent["scheme"])

    def check_published(self, ours: datetime, replied: Json, fetched: Json) -> None:
        # Fedify's nanosecond `published` is kept (to the microsecond).
        assert fetched["published"].startswith(ours.strftime("%Y-%m-%dT%H:%M:%S.%f")), (
            fetched["published"],
            ours,
        )

    def check_updated(self, ours: datetime, updated: Json, ctx: Context) -> None:
        # Fedify's control API does not echo the Update: its time is "now".
        assert abs(ours - ctx.clock()) < timedelta(minutes=5)


class BovineCase(PeerCase):
    """bovine 0.5.19: draft-cavage only, no shared inbox, ids instead of embedded objects
    (see test_bovine.py)."""

    name = "bovine"
    accepted_variants = ("digest", "digest-uppercase")
    # A valid signature over a digest of other bytes, and no signature at all.
    refused_variants = ("wrong", "unsigned")
    remote: BovinePeer

    def __init__(self, remote: BovinePeer) -> None:
        super().__init__(remote)

    @property
    def shared_inbox(self) -> None:
        # bovine's actor model has no endpoints.sharedInbox.
        return None

    def received(self, entry: Json) -> Json:
        received: Json = entry["raw"]
        return received

    def assert_verified(self, entry: Json, ctx: Context, handle: str) -> None:
        """bovine's SignatureChecker verified our draft-cavage signature with the assembly's
        key."""
        assert entry["verified"] is True, entry["verifyLog"]
        assert entry["scheme"] == "draft-cavage", entry
        assert entry["algorithm"] == "rsa-sha256", entry
        assert entry["keyId"] == ctx.urls.key_id(handle)
        assert entry["keyOwner"] == ctx.urls.actor(handle) == entry["actor"]
        assert entry["signedHeaders"] == OUR_POST_HEADERS, entry
        assert entry["inbox"] == "/users/alice/inbox"

    async def assert_signed_requests(self, ctx: Context, *, posts: int) -> None:
        """Every request bovine made to us was signed by alice and answered at once.

        POSTs are signed over ``(request-target) host date digest content-type`` and must get
        202; signed GETs (our actors, keys, notes) 200, apart from our followers collection,
        which bovine tries when it looks for inboxes among a reply's ``cc``. WebFinger is the
        one unsigned lookup.
        """
        key_id = self.remote.key_id
        outgoing = [e for e in (await self.remote.inbox())["outgoing"] if ours(e, ctx)]
        sent = [e for e in outgoing if e["method"] == "POST"]
        assert len(sent) == posts, [(e["url"], e["status"]) for e in sent]
        for e in sent:
            assert (e["scheme"], e["keyId"], e["status"]) == ("draft-cavage", key_id, 202), e
            assert e["signedHeaders"] == BOVINE_POST_HEADERS, e
            assert e["digest"].startswith("sha-256="), e  # lower case, bovine's default
        fetched = [e for e in outgoing if e["method"] == "GET" and "/.well-known/" not in e["url"]]
        assert fetched, "bovine fetched nothing from us"
        for e in fetched:
            assert (e["scheme"], e["keyId"]) == ("draft-cavage", key_id), e
            expected = {200, 401, 403, 404} if e["url"].endswith("/followers") else {200}
            assert e["status"] in expected, e

    async def send(self, inbox: str, activity: Json, variant: str) -> Json:
        return await self.remote.send(inbox, activity, digest=variant)

    def variant_of(self, sent: Json) -> str:
        return str(sent["digest"])

    def check_follow(self, followed: Json, ctx: Context, handle: str) -> None:
        # bovine delivers to the actor's own inbox (it has no notion of a shared inbox).
        assert followed["requests"] == [
            {"url": ctx.urls.inbox(handle), "status": 202, "responseBody": None}
        ]
        # Its Follow names us by id and is addressed to us.
        assert followed["json"]["object"] == ctx.urls.actor(handle)
        assert followed["json"]["to"] == [ctx.urls.actor(handle)]

    async def check_after_follow(self, ctx: Context, handle: str) -> None:
        # To verify our Accept bovine fetched our key, with a signed GET.
        outgoing = (await self.remote.inbox())["outgoing"]
        assert any(e["url"] == ctx.urls.key_id(handle) for e in outgoing), outgoing

        # And it verified our instance actor's signed GETs of alice (after answering them).
        async def gets_verified() -> bool:
            entries = [
                e for e in (await self.remote.inbox())["incoming"] if e["path"] == "/users/alice"
            ]
            return all(e["signatureVerified"] is not None for e in entries)

        await self.remote.wait_for(gets_verified, "bovine to verify our signed GETs")
        incoming = (await self.remote.inbox())["incoming"]
        got = [e for e in incoming if e["method"] == "GET" and e["path"] == "/users/alice"]
        for e in got:
            assert e["signatureVerified"] is True, e
            assert e["keyOwner"] == ctx.urls.instance_actor(), e
            assert e["signedHeaders"] == ["(request-target)", "host", "date", "accept"], e

    def check_undo(self, undone: Json, followed: Json) -> None:
        # bovine's Undo names the Follow by its id, it does not embed it (Fedify does).
        assert undone["json"]["object"] == followed["followId"]

    def check_reply(self, replied: Json, ctx: Context, handle: str, original: str) -> None:
        # `to` the author, the Note's audience in cc, and a Mention of the assembly.
        reply_note = replied["json"]["object"]
        assert reply_note["inReplyTo"] == original
        assert reply_note["to"] == [ctx.urls.actor(handle)]
        assert PUBLIC in reply_note["cc"]
        # bovine's Mention carries its own @context and names the handle without a leading @.
        (mention,) = reply_note["tag"]
        assert mention["type"] == "Mention" and mention["href"] == ctx.urls.actor(handle)
        assert mention["name"] == f"{handle}@{ctx.urls.host}"

    def check_published(self, ours: datetime, replied: Json, fetched: Json) -> None:
        # bovine's `published` is whole seconds with a Z.
        assert ours.strftime("%Y-%m-%dT%H:%M:%SZ") == replied["json"]["object"]["published"]

    def check_updated(self, ours: datetime, updated: Json, ctx: Context) -> None:
        assert ours.strftime("%Y-%m-%dT%H:%M:%SZ") == updated["json"]["object"]["updated"]

    def check_delete(self, deleted: Json, replied: Json) -> None:
        # A Delete naming the Note by id (the Note then answers 410).
        assert deleted["json"]["object"] == replied["noteId"]

    async def check_sent_variants(self, statuses: Sequence[int]) -> None:
        # bovine's default Digest is lower case (unlike Mastodon and us); it also offers
        # upper case. "wrong" is a lower-case one over other bytes; "unsigned" has none.
        posts = [e for e in (await self.remote.inbox())["outgoing"] if e["method"] == "POST"]
        assert [(e["digest"] or "")[:8] for e in posts] == ["sha-256=", "SHA-256=", "sha-256=", ""]
        assert [e["status"] for e in posts] == list(statuses)


# -- our side, which processes what a peer sends after answering 202 ----------------------------


async def settled_count(ctx: Context, expected: int, model: type[Base], *where: Any) -> None:
    """Wait until ``count(model, *where)`` is ``expected`` (fail with the last count if not)."""

    async def check() -> bool:
        found = await count(ctx, model, *where)
        assert found == expected, f"{found} {model.__name__} rows, not {expected}"
        return True

    await eventually(check)


async def inbox_activities(ctx: Context) -> list[InboxActivity]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(InboxActivity))).all())


# -- steps shared by the scenarios ------------------------------------------------------------


async def follow_accepted(ctx: Context, peer: PeerCase, handle: str) -> Json:
    """The peer's alice follows the assembly by handle; we store her and deliver the Accept."""
    remote = peer.remote
    followed = await remote.follow(f"{handle}@{ctx.urls.host}")
    assert followed["targetActor"] == ctx.urls.actor(handle)
    # One POST, to the assembly's own inbox, accepted at the first attempt.
    assert [(r["url"], r["status"]) for r in followed["requests"]] == [
        (ctx.urls.inbox(handle), 202)
    ], followed["requests"]
    peer.check_follow(followed, ctx, handle)

    async def stored() -> bool:
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    select(Follower, RemoteActor).join(
                        RemoteActor, Follower.actor_id == RemoteActor.id
                    )
                )
            ).one_or_none()
        assert row is not None, "no follower stored yet"
        follower, actor = row
        assert actor.uri == remote.actor
        assert actor.inbox_uri == f"{remote.actor}/inbox"
        assert actor.shared_inbox_uri == peer.shared_inbox
        assert follower.follow_uri == followed["followId"]
        assert follower.status == FollowerStatus.ACCEPTED
        return True

    await eventually(stored)

    assert await worker.run_once(ctx) == 1
    await remote.wait_for_activity("Accept")
    (accept,) = await remote.activities("Accept")
    peer.assert_verified(accept, ctx, handle)
    assert accept["object"] == followed["followId"]
    # The Accept went to alice's own inbox (even where she has a shared one).
    assert accept["inbox"] == "/users/alice/inbox"

    async def accepted() -> bool:
        following: list[Json] = (await remote.state())["following"]
        mine = [f for f in following if f["actor"] == ctx.urls.actor(handle)]
        return len(mine) == 1 and mine[0]["status"] == "accepted"

    await remote.wait_for(accepted, f"the {remote.name} to record the follow as accepted")
    return followed


async def delivered(ctx: Context, peer: PeerCase, activity_type: str, since: int) -> Json:
    """Run the worker once; the peer must have received exactly one such activity since
    ``since``."""
    assert await worker.run_once(ctx) == 1
    activities: list[Json] = (await peer.remote.inbox(since))["activities"]
    received = [a for a in activities if a["type"] == activity_type]
    assert len(received) == 1, received
    return received[0]
