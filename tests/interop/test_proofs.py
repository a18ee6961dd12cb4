"""Interop acceptance of issue 13 (proofs of origin), checked by an independent implementation.

Every public activity of an assembly carries a FEP-8b32 ``eddsa-jcs-2022`` proof (and its
communiqué one of its own) and a Mastodon ``RsaSignature2017`` Linked Data signature
(server/activitypub/proofs.py). Here Fedify 2.3.6 (tests/interop/fedify-peer) checks them: its
inbox as it runs, and the peer's own calls of Fedify's exported ``verifyJsonLd``,
``verifyObject``/``verifyProof`` and ``verifyRequestDetailed`` on the raw body of every inbox
POST (``checks`` in the control API; fedify-peer/server.mjs, ``ownChecks``).

- Our signatures verify with Fedify: ``test_fedify_verifies_an_assemblys_proofs_and_signature``
  (Create, Update, and the Delete's proof) and
  ``test_fedify_verifies_the_ld_signature_of_a_delete``.
- Two InterOcc instances and the peer, which follows only the author B; A co-signs; B forwards
  A's Announce, signed over HTTP by B; Fedify accepts it on A's own signature and proof and
  never asks A's server for it (no origin check):
  ``test_fedify_accepts_a_forwarded_cosignature_on_its_own_proof``.
- The same Announce with one byte changed is refused by Fedify:
  ``test_fedify_refuses_a_tampered_forwarded_cosignature``.

Instance A is ``ctx``/``server``, instance B ``ctx_b``/``server_b`` (tests/conftest.py). The
workers are driven by hand, so each hop is one ``worker.run_once``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urldefrag

import httpx
import pytest

from server import assemblies, communiques, cosign, worker
from server.activitypub.signatures import load_private_key, sign_request
from server.context import Context
from tests.helpers import approved_assembly, post
from tests.interop.conftest import FedifyPeer
from tests.interop.peers import FedifyCase, Json, delivered, follow_accepted, fresh_handle
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

CRYPTOSUITE = "eddsa-jcs-2022"


def proven_by(ctx: Context, handle: str) -> list[Json]:
    """What the peer's ``verifyProof`` reports for a document proven by ``handle`` alone."""
    return [
        {
            "keyId": ctx.urls.assertion_key_id(handle),
            "cryptosuite": CRYPTOSUITE,
            "verified": True,
            "controller": ctx.urls.actor(handle),
        }
    ]


def no_origin_check(outgoing: list[Json], activity_id: str) -> None:
    """The peer never requested ``activity_id`` (with or without a fragment)."""
    asked = [e for e in outgoing if urldefrag(str(e["url"])).url == activity_id]
    assert asked == [], asked


def fetched_by_fedify(outgoing: list[Json], checks: Json) -> list[str]:
    """What Fedify's inbox fetched for one delivery (``outgoing``: the peer's requests since
    just before it). The peer's own checks run first, one request at a time, and log what
    they fetched; Fedify's requests are the rest."""
    urls = [str(e["url"]) for e in outgoing]
    ours = list(checks["fetched"])
    assert urls[: len(ours)] == ours, (urls, ours)
    return urls[len(ours) :]


async def signed_post(ctx: Context, handle: str, inbox: str, document: Json) -> httpx.Response:
    """POST ``document`` to ``inbox`` signed over HTTP (draft-cavage) by the assembly
    ``handle`` of ``ctx``: what its worker does when it forwards, with bytes of our choosing."""
    async with ctx.sessions() as session:
        assembly = await assemblies.get(session, handle)
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/activity+json"}
    headers |= sign_request(
        "POST",
        inbox,
        headers,
        body,
        key_id=ctx.urls.key_id(handle),
        private_key=load_private_key(assembly.private_key_pem),
        now=datetime.now(UTC),
    )
    async with httpx.AsyncClient(trust_env=False, timeout=20) as http:
        return await http.post(inbox, content=body, headers=headers)


def assert_checks_hold(entry: Json, ctx: Context, handle: str, note_url: str) -> None:
    """The peer's own Fedify checks of a public activity of ``handle``: the HTTP signature,
    the Linked Data signature, the activity's proof and its Note's (``note_url``)."""
    checks = entry["checks"]
    # verifyRequestDetailed: the delivery's HTTP signature, which Fedify's inbox did not need.
    assert checks["httpSignature"] == {
        "present": True,
        "verified": True,
        "keyId": ctx.urls.key_id(handle),
        "owner": ctx.urls.actor(handle),
        "reason": None,
    }, checks["httpSignature"]
    # verifyJsonLd: the RsaSignature2017 holds, by a key the actor owns.
    assert checks["ldSignature"] == {
        "present": True,
        "type": "RsaSignature2017",
        "creator": ctx.urls.key_id(handle),
        "verified": True,
        "error": None,
    }, checks["ldSignature"]
    # verifyObject(Activity, the body without `signature`): the activity's proof holds and
    # its key's controller is the actor.
    assert checks["proof"] == {
        "present": True,
        "verified": True,
        "keys": proven_by(ctx, handle),
        "error": None,
    }, checks["proof"]
    # verifyObject(Object, the embedded Note): the communiqué proves itself on its own.
    assert checks["objectProof"] == {
        "type": "Note",
        "id": note_url,
        "present": True,
        "verified": True,
        "keys": proven_by(ctx, handle),
        "error": None,
    }, checks["objectProof"]


async def test_fedify_verifies_an_assemblys_proofs_and_signature(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """A communiqué's Create and Update: their LD signatures, their proofs and their Notes'
    proofs all verify with Fedify, and Fedify's inbox accepts them on the LD signature. Its
    Delete's proof holds too (its LD signature: see the next test)."""
    peer = FedifyCase(fedify)
    handle = fresh_handle("plazab")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, peer, handle)

    # Fedify reads the assembly's Ed25519 key (FEP-521a Multikey) under assertionMethod.
    found = await fedify.post("lookup", {"target": ctx.urls.actor(handle)})
    assert found["assertionMethods"] == [ctx.urls.assertion_key_id(handle)], found

    seq = (await fedify.inbox())["seq"]
    published = await post(ctx, handle, "Asamblea general el domingo. #InterOcc")
    create = await delivered(ctx, peer, "Create", seq)
    # Fedify's inbox accepted it (its listener recorded it), on our LD signature.
    peer.assert_verified(create, ctx, handle)
    assert create["verification"] == "ld-signature"
    assert create["object"] == published.url
    assert_checks_hold(create, ctx, handle, published.url)

    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx.urls, url=published.url, source="Moved to Monday.", now=ctx.clock()
        )
    update = await delivered(ctx, peer, "Update", seq)
    peer.assert_verified(update, ctx, handle)
    assert update["verification"] == "ld-signature"
    assert_checks_hold(update, ctx, handle, published.url)

    # The Delete: its Tombstone carries no proof of its own; the activity's proof holds.
    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    deleted = await delivered(ctx, peer, "Delete", seq)
    peer.assert_verified(deleted, ctx, handle)
    checks = deleted["checks"]
    assert checks["proof"]["verified"] is True and checks["proof"]["keys"] == proven_by(
        ctx, handle
    ), checks["proof"]
    assert checks["objectProof"]["present"] is False  # a Tombstone
    assert checks["httpSignature"]["verified"] is True
    assert (await fedify.inbox())["errors"] == []


async def test_fedify_verifies_the_ld_signature_of_a_delete(
    ctx: Context, server: ServerThread, fedify: FedifyPeer
) -> None:
    """Issue 13 wants every signature of ours to verify elsewhere: the Delete's too."""
    peer = FedifyCase(fedify)
    handle = fresh_handle("plazadel")
    await approved_assembly(ctx, handle)
    await follow_accepted(ctx, peer, handle)
    published = await post(ctx, handle, "A communiqué soon withdrawn.")
    assert await worker.run_once(ctx) == 1
    seq = (await fedify.inbox())["seq"]
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    deleted = await delivered(ctx, peer, "Delete", seq)
    # A Tombstone without formerType: "Note" would be a relative IRI that Fedify's JSON-LD
    # processing refuses, so its Linked Data signature could not be checked.
    assert "formerType" not in deleted["raw"]["object"]
    assert deleted["checks"]["ldSignature"]["verified"] is True, deleted["checks"]
    assert deleted["verification"] == "ld-signature"


@dataclass
class Forwarded:
    """A's co-signature of B's communiqué, as B forwarded it to the peer."""

    handle_a: str
    handle_b: str
    note_url: str
    announce_id: str
    seq: int  # the peer's log position before B's worker forwarded it
    request: Json  # the peer's incoming[] entry for B's POST
    activity: Json  # the peer's activities[] entry for it


async def forwarded_cosignature(ctx: Context, ctx_b: Context, peer: FedifyCase) -> Forwarded:
    """The peer follows only B; B publishes; A co-signs; B forwards A's Announce to the peer."""
    fedify = peer.remote
    handle_a, handle_b = fresh_handle("sol"), fresh_handle("plaza")
    await approved_assembly(ctx, handle_a, name="Asamblea de Sol")
    await approved_assembly(ctx_b, handle_b, name="Liberty Plaza General Assembly")
    await follow_accepted(ctx_b, peer, handle_b)
    seq = (await fedify.inbox())["seq"]
    published = await post(ctx_b, handle_b, "Every assembly meets on Sunday. #InterOcc")
    await delivered(ctx_b, peer, "Create", seq)

    # A co-signs: its Announce goes to B (A has no followers) and names B's followers in cc.
    target = await cosign.find_target(ctx, published.url)
    async with ctx.sessions() as session, session.begin():
        announce = await cosign.cosign(
            session, ctx, handle=handle_a, target=target, now=ctx.clock()
        )
    # To B, whose inbox records the share and queues the forward before answering.
    assert await worker.run_once(ctx) == 1

    # B's worker forwards A's Announce, as it arrived, to the peer's shared inbox.
    seq = (await fedify.inbox())["seq"]
    got = await delivered(ctx_b, peer, "Announce", seq)
    log = await fedify.inbox(seq)
    [request] = [e for e in log["incoming"] if e["method"] == "POST"]
    return Forwarded(handle_a, handle_b, published.url, announce.uri, seq, request, got)


async def test_fedify_accepts_a_forwarded_cosignature_on_its_own_proof(
    ctx: Context,
    server: ServerThread,
    ctx_b: Context,
    server_b: ServerThread,
    fedify: FedifyPeer,
) -> None:
    """Issue 13: B forwards A's Announce; Fedify believes it on A's own signature and proof,
    not on B's HTTP signature, and without fetching it from A."""
    peer = FedifyCase(fedify)
    fwd = await forwarded_cosignature(ctx, ctx_b, peer)
    a_actor, b_key = ctx.urls.actor(fwd.handle_a), ctx_b.urls.key_id(fwd.handle_b)

    # On the wire: B's POST, HTTP-signed with B's key, of an activity whose actor is A.
    request = fwd.request
    assert (request["path"], request["status"]) == ("/inbox", 202), request
    assert request["keyId"] == b_key and request["scheme"] == "draft-cavage", request
    assert (request["activityType"], request["activityId"]) == ("Announce", fwd.announce_id)
    raw = request["raw"]
    assert (raw["actor"], raw["object"]) == (a_actor, fwd.note_url)
    assert ctx_b.urls.followers(fwd.handle_b) in raw["cc"]  # why B forwarded it
    assert raw["signature"]["creator"] == ctx.urls.key_id(fwd.handle_a)
    assert raw["proof"]["verificationMethod"] == ctx.urls.assertion_key_id(fwd.handle_a)

    # Fedify accepted it: its Announce listener recorded it (a refusal is a 401, unrecorded).
    announce = fwd.activity
    assert (announce["id"], announce["actor"], announce["object"]) == (
        fwd.announce_id,
        a_actor,
        fwd.note_url,
    )
    assert announce["verified"] is True and announce["raw"] == raw
    assert announce["httpSignatureRequestKeyId"] == b_key
    # Which path Fedify took (the span event it emits, see fedify-peer/README.md): the Linked
    # Data signature comes first in its inbox (middleware: `ldSigVerified`), and A's holds; so
    # Fedify neither needed A's proof nor checked B's HTTP signature (had it relied on that,
    # its key-owner check would have refused the Announce: B is not its actor).
    assert announce["verification"] == "ld-signature", announce
    assert announce["ldSignatureVerified"] is True
    assert announce["httpSignatureVerified"] is False
    assert request["fedify"]["ldSignatureVerified"] is True, request["fedify"]

    # Fedify's own functions on that raw body, run by the peer: A's signature and A's proof
    # each hold on their own, and the HTTP signature is B's.
    checks = announce["checks"]
    assert (checks["ldSignature"]["verified"], checks["ldSignature"]["creator"]) == (
        True,
        ctx.urls.key_id(fwd.handle_a),
    ), checks["ldSignature"]
    assert checks["proof"] == {
        "present": True,
        "verified": True,
        "keys": proven_by(ctx, fwd.handle_a),
        "error": None,
    }, checks["proof"]
    assert checks["objectProof"] is None  # the Announce names the Note by its id
    assert checks["httpSignature"]["verified"] is True
    assert checks["httpSignature"]["keyId"] == b_key
    assert checks["httpSignature"]["owner"] == ctx_b.urls.actor(fwd.handle_b)

    # No origin check: the peer never asked A's server (nor anyone) for the Announce. Fedify
    # itself fetched one thing: A's RSA key, to check A's signature (B's key, which its
    # inbox would need for the HTTP signature, it never fetched).
    log = await fedify.inbox(fwd.seq)
    no_origin_check(log["outgoing"], fwd.announce_id)
    assert fetched_by_fedify(log["outgoing"], checks) == [ctx.urls.key_id(fwd.handle_a)]
    assert log["errors"] == []

    # On A's proof alone: the same bytes without the LD signature, HTTP-signed by B again
    # (to alice's own inbox: Fedify remembers the activity ids it processed per inbox).
    # Fedify's inbox has no signature to check first, so it verifies the proof (Object
    # Integrity Proofs; `verifyObject`) and accepts it on that.
    seq = (await fedify.inbox())["seq"]
    bare = {k: v for k, v in raw.items() if k != "signature"}
    answer = await signed_post(ctx_b, fwd.handle_b, f"{fedify.actor}/inbox", bare)
    assert answer.status_code == 202, answer.text
    log = await fedify.inbox(seq)
    [again] = [a for a in log["activities"] if a["type"] == "Announce"]
    assert (again["id"], again["actor"], again["inbox"]) == (
        fwd.announce_id,
        a_actor,
        "/users/alice/inbox",
    )
    assert again["verified"] is True
    assert again["verification"] == "object-integrity-proof", again
    assert again["ldSignatureVerified"] is False and again["httpSignatureVerified"] is False
    assert again["checks"]["ldSignature"]["present"] is False
    assert again["checks"]["proof"]["verified"] is True
    no_origin_check(log["outgoing"], fwd.announce_id)
    # Fedify fetched A's Ed25519 key (FEP-521a, from A's actor), and nothing else.
    assert fetched_by_fedify(log["outgoing"], again["checks"]) == [
        ctx.urls.assertion_key_id(fwd.handle_a)
    ]
    assert log["errors"] == []


async def test_fedify_refuses_a_tampered_forwarded_cosignature(
    ctx: Context,
    server: ServerThread,
    ctx_b: Context,
    server_b: ServerThread,
    fedify: FedifyPeer,
) -> None:
    """The forwarded Announce with one byte of what it co-signs changed, HTTP-signed by B:
    neither A's signature nor A's proof holds, B's HTTP signature is not A's, so Fedify
    refuses it (401) and its listener never sees it; with the LD signature removed, A's
    proof alone is enough to refuse it too."""
    peer = FedifyCase(fedify)
    fwd = await forwarded_cosignature(ctx, ctx_b, peer)
    raw = fwd.request["raw"]
    assert fwd.activity["verified"] is True  # the original was accepted

    tampered = copy.deepcopy(raw)
    last = tampered["object"][-1]
    tampered["object"] = tampered["object"][:-1] + ("A" if last != "A" else "B")
    assert len(tampered["object"]) == len(raw["object"]) != 0
    bare = {k: v for k, v in tampered.items() if k != "signature"}

    for document, inbox in ((tampered, peer.shared_inbox), (bare, f"{fedify.actor}/inbox")):
        seq = (await fedify.inbox())["seq"]
        answer = await signed_post(ctx_b, fwd.handle_b, inbox, document)
        assert answer.status_code == 401, answer.text
        assert "signer and the actor do not match" in answer.text, answer.text
        log = await fedify.inbox(seq)
        assert log["activities"] == [], log["activities"]  # not recorded, not acted on
        [request] = [e for e in log["incoming"] if e["method"] == "POST"]
        assert request["status"] == 401
        # Fedify's inbox found neither A's signature nor A's proof to hold, and fell back to
        # the HTTP signature: B's, which is not the Announce's actor's.
        assert request["fedify"]["ldSignatureVerified"] is False, request["fedify"]
        assert request["fedify"]["httpSignatureKeyId"] == ctx_b.urls.key_id(fwd.handle_b)
        checks = request["checks"]
        signed = "signature" in document
        assert checks["ldSignature"]["verified"] is (False if signed else None), checks
        assert checks["proof"]["verified"] is False, checks["proof"]
        assert checks["httpSignature"]["verified"] is True, checks["httpSignature"]
        no_origin_check(log["outgoing"], fwd.announce_id)
