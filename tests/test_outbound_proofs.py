"""What we publish proves its origin: the assembly's Ed25519 key in its actor, a FEP-8b32 proof
on every public activity and on the communiqué it carries, an RsaSignature2017 signature over
both, made once per activity; the Note at its URL with its own proof; and the permalink saying
which key verified the communiqué and each co-signature.

Receivers' checks are done here as a receiver would: keys read from the actor document fetched
over HTTP, the Linked Data signature checked by the independent implementation
(tests/support/ldsig_spec.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pyld import jsonld as pyld_jsonld
from sqlalchemy import select

from server import communiques, cosign, worker
from server.activitypub import integrity, ldsig, proofs
from server.activitypub.jsonld import offline_options
from server.activitypub.signatures import load_public_key
from server.context import Context
from server.federation import inbox_queue
from server.models import Activity, Assembly, Delivery
from tests.helpers import approved_assembly, post
from tests.support import ldsig_spec
from tests.support.peer import PUBLISHED_CONTEXTS, Peer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

AP_JSON = "application/activity+json"


async def get_json(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(url, headers={"Accept": AP_JSON})
    assert response.status_code == 200, (url, response.status_code)
    document: dict[str, Any] = response.json()
    return document


async def keys_of(actor_url: str) -> tuple[Any, Any]:
    """(Ed25519 key, RSA key) as the actor's document publishes them."""
    actor = await get_json(actor_url)
    ((method, controller, ed_key),) = integrity.assertion_keys_of(actor)
    assert (method, controller) == (actor_url + "#ed25519-key", actor_url)
    rsa_key = load_public_key(actor["publicKey"]["publicKeyPem"])
    return ed_key, rsa_key


def assert_proved(document: dict[str, Any], ed_key: Any, method: str) -> None:
    result = integrity.verify(document, ed_key, now=proofs_now())
    assert isinstance(result, integrity.Verified), result
    assert result.verification_method_uri == method


def proofs_now() -> datetime:
    return datetime.now(UTC)


async def test_an_assembly_publishes_its_proof_key_as_a_multikey(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "plaza")
    actor = await get_json(ctx.urls.actor("plaza"))
    async with ctx.sessions() as session:
        pem = await session.scalar(
            select(Assembly.ed25519_private_key_pem).where(Assembly.handle == "plaza")
        )
    assert pem is not None
    (entry,) = actor["assertionMethod"]
    assert entry == {
        "id": ctx.urls.assertion_key_id("plaza"),
        "type": "Multikey",
        "controller": ctx.urls.actor("plaza"),
        "publicKeyMultibase": integrity.multikey_public(integrity.ed25519_public_of(pem)),
    }
    assert entry["publicKeyMultibase"].startswith("z6Mk")
    # JSON-LD processors (Fedify reads actors this way) see it as sec:assertionMethod.
    expanded = pyld_jsonld.expand(actor, offline_options())
    (node,) = expanded
    (key,) = node["https://w3id.org/security#assertionMethod"]
    assert key["@id"] == ctx.urls.assertion_key_id("plaza")
    assert key["@type"] == ["https://w3id.org/security#Multikey"]


async def test_a_communique_is_signed_once_and_every_follower_gets_the_same_proofs(
    ctx: Context, server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    await approved_assembly(ctx, "plaza")
    calls: list[str] = []
    real = proofs.secure_activity

    def counting(doc: Any, keys: Any, created: Any) -> dict[str, Any]:
        calls.append(str(doc.get("type")))
        return real(doc, keys, created)

    monkeypatch.setattr(proofs, "secure_activity", counting)
    with Peer(name="one") as one, Peer(name="two") as two, Peer(name="three") as three:
        for peer in (one, two, three):
            actor = peer.add_actor("reader")
            await peer.follow(actor, f"plaza@{ctx.urls.host}")
        while await worker.run_once(ctx):
            pass
        calls.clear()  # the Accepts are not public: they were never signed this way
        published = await post(ctx, "plaza", "Asamblea general el domingo. #InterOcc")
        assert calls == ["Create"]  # once for the activity, however many inboxes
        async with ctx.sessions() as session:
            rows = (
                await session.scalars(
                    select(Delivery).where(Delivery.activity_id == published.activity.id)
                )
            ).all()
        assert len(rows) == 3
        assert await worker.run_once(ctx) == 3
        bodies = [
            r.body for peer in (one, two, three) for r in peer.received if b'"Create"' in r.body
        ]
        assert calls == ["Create"]  # delivering signed nothing more
    assert len(bodies) == 3 and len(set(bodies)) == 1  # the same bytes to everyone

    create = json.loads(bodies[0])
    ed_key, rsa_key = await keys_of(ctx.urls.actor("plaza"))
    method = ctx.urls.assertion_key_id("plaza")
    # 1. the communiqué's own proof, 2. the activity's, 3. the Linked Data signature over both.
    assert_proved(create["object"], ed_key, method)
    assert_proved({k: v for k, v in create.items() if k != "signature"}, ed_key, method)
    assert create["signature"]["creator"] == ctx.urls.key_id("plaza")
    assert ldsig_spec.verify(create, rsa_key, PUBLISHED_CONTEXTS)
    assert isinstance(ldsig.verify(create, rsa_key), ldsig.Verified)
    # What the activity's id serves is what was sent.
    assert await get_json(published.activity.uri) == create

    # Tampered, none of them holds.
    tampered = json.loads(bodies[0])
    tampered["object"]["content"] = "<p>Cancelled.</p>"
    assert not ldsig_spec.verify(tampered, rsa_key, PUBLISHED_CONTEXTS)
    assert isinstance(
        integrity.verify(tampered["object"], ed_key, now=proofs_now()), ldsig.Rejected
    )


async def test_the_note_at_its_url_carries_its_proof_and_the_outbox_no_stale_one(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "plaza")
    published = await post(ctx, "plaza", "We meet at noon.")
    ed_key, _rsa = await keys_of(ctx.urls.actor("plaza"))
    method = ctx.urls.assertion_key_id("plaza")
    note = await get_json(published.url)
    assert_proved(note, ed_key, method)
    assert await get_json(published.url) == note  # one version, one proof

    async with ctx.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx.urls, url=published.url, source="We meet at one.", now=ctx.clock()
        )
    edited = await get_json(published.url)
    assert "one." in edited["content"] and edited["proof"] != note["proof"]
    assert_proved(edited, ed_key, method)
    # The old proof does not vouch for the new text.
    stale = {**edited, "proof": note["proof"]}
    assert isinstance(integrity.verify(stale, ed_key, now=proofs_now()), ldsig.Rejected)

    page = await get_json(ctx.urls.outbox("plaza") + "?page=1")
    (item,) = page["orderedItems"]
    assert item["type"] == "Create" and "proof" not in item and "signature" not in item
    assert item["object"]["content"] == edited["content"]
    assert_proved(item["object"], ed_key, method)


async def test_the_permalink_says_which_key_verified_the_communique_and_its_cosigners(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "plaza", name="Liberty Plaza")
    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    published = await post(ctx, "plaza", "We meet at noon.")
    target = await cosign.find_target(ctx, published.url)
    async with ctx.sessions() as session, session.begin():
        await cosign.cosign(session, ctx, handle="sol", target=target, now=ctx.clock())
    # Between two assemblies of one instance the Announce is delivered in-process, signed
    # over HTTP like any other.
    while await worker.run_once(ctx):
        pass
    await inbox_queue.drain(ctx)
    async with httpx.AsyncClient(trust_env=False) as http:
        page = await http.get(published.url, headers={"Accept": "text/html"})
    assert page.status_code == 200
    html = page.text
    assert "Verified" in html and ctx.urls.assertion_key_id("plaza") in html
    assert "Asamblea de Sol" in html
    assert f'verified: signed by its key <code class="key">{ctx.urls.key_id("sol")}</code>' in html


async def test_a_document_we_cannot_sign_goes_out_with_its_proofs(ctx: Context) -> None:
    """A context we do not hold stops the Linked Data signature, not the activity."""
    await approved_assembly(ctx, "plaza")
    async with ctx.sessions() as session:
        plaza = (await session.scalars(select(Assembly).where(Assembly.handle == "plaza"))).one()
    keys = proofs.signing_keys(ctx.urls, plaza)
    doc = {
        "@context": ["https://www.w3.org/ns/activitystreams", "https://unknown.example/ns"],
        "id": ctx.urls.actor("plaza") + "/x",
        "type": "Like",
        "actor": ctx.urls.actor("plaza"),
        "object": "https://elsewhere.example/notes/1",
    }
    secured = proofs.secure_activity(doc, keys, ctx.clock())
    assert "signature" not in secured and "proof" in secured
    ed_key = integrity.ed25519_public_of(plaza.ed25519_private_key_pem or "")
    assert_proved(secured, ed_key, ctx.urls.assertion_key_id("plaza"))


async def test_activities_not_public_carry_no_proofs(ctx: Context, server: ServerThread) -> None:
    """Followers-only or private activities (a Follow, an Accept, a letter) are not signed for
    forwarding: nothing of theirs is meant to travel beyond their addressees."""
    await approved_assembly(ctx, "plaza")
    with Peer() as peer:
        actor = peer.add_actor("reader")
        await peer.follow(actor, f"plaza@{ctx.urls.host}")
        await worker.run_once(ctx)
        (accept,) = [r.json for r in peer.received if r.json and r.json["type"] == "Accept"]
    assert "proof" not in accept and "signature" not in accept
    async with ctx.sessions() as session:
        activity = (await session.scalars(select(Activity).where(Activity.type == "Accept"))).one()
    assert not activity.public
