"""Forwarded activities that must prove themselves: a FEP-8b32 proof or an RsaSignature2017
signature by the activity's own actor, checked on the JSON as it arrived.

The scene: a remote assembly (``author``, on a loopback host) co-signs one of our communiqués
with an Announce; someone else (``forwarder``) delivers it to our shared inbox, signed over
HTTP with the forwarder's own key, as inbox forwarding does. The Announce is believed only on
the author's proof or signature; tampered with in any way, it is refused with 401 and nothing
is stored. Without a proof it is confirmed at its origin (its id), or refused.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from server.activitypub import integrity, ldsig, proofs
from server.context import Context
from server.federation import inbox
from server.models import InboxItem, RemoteKey, Share
from tests.helpers import approved_assembly, post
from tests.security.support import (
    AS,
    Attacker,
    Keyed,
    actor_document,
    signed_post,
    snapshot,
)
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PUBLIC = AS + "#Public"
CREATED = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Author:
    """A remote actor with an RSA key (publicKey) and an Ed25519 key (assertionMethod)."""

    def __init__(self, attacker: Attacker, name: str) -> None:
        self.ed25519 = ed25519.Ed25519PrivateKey.generate()
        self.keyed, _ = actor_document(attacker, name)
        self.id = self.keyed.id
        self.assertion_key_id = self.id + "#ed25519-key"
        self.publish(attacker, name)

    def publish(self, attacker: Attacker, name: str) -> None:
        _, doc = actor_document(attacker, name, key=self.keyed.private_key)
        doc["@context"] = [
            *doc["@context"],
            integrity.MULTIKEY_CONTEXT,
            {
                "assertionMethod": {
                    "@id": "https://w3id.org/security#assertionMethod",
                    "@type": "@id",
                    "@container": "@set",
                }
            },
        ]
        doc["assertionMethod"] = [
            integrity.build_multikey(self.assertion_key_id, self.id, self.ed25519.public_key())
        ]
        attacker.serve(f"/users/{name}", doc)

    def prove(self, document: dict[str, Any], *, key_id: str | None = None) -> dict[str, Any]:
        return integrity.sign(
            document,
            verification_method=key_id or self.assertion_key_id,
            private_key=self.ed25519,
            created=CREATED,
        )

    def ld_sign(self, document: dict[str, Any]) -> dict[str, Any]:
        return ldsig.sign(
            document, creator=self.keyed.key_id, private_key=self.keyed.private_key, created=CREATED
        )


def announce(author: Author, attacker: Attacker, note_url: str, n: int = 1) -> dict[str, Any]:
    return {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": attacker.url(f"/users/{author.keyed.id.rsplit('/', 1)[-1]}/announces/{n}"),
        "type": "Announce",
        "actor": author.id,
        "published": "2026-12-01T12:00:00Z",
        "to": [PUBLIC],
        "object": note_url,
    }


@pytest.fixture
async def scene(ctx: Context, server: ServerThread, attacker: Attacker) -> dict[str, Any]:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "We meet at noon.")
    author = Author(attacker, "author")
    forwarder, _ = actor_document(attacker, "forwarder")
    return {"author": author, "forwarder": forwarder, "note_url": published.url}


async def forward(ctx: Context, forwarder: Keyed, activity: dict[str, Any]) -> Any:
    return await signed_post(
        ctx.urls.shared_inbox(),
        activity,
        key_id=forwarder.key_id,
        private_key=forwarder.private_key,
    )


async def shares(ctx: Context) -> list[Share]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(Share))).all())


def activity_path(activity: dict[str, Any], attacker: Attacker) -> str:
    return str(activity["id"]).removeprefix(attacker.base_url)


# ---- what holds ------------------------------------------------------------------------


async def test_a_forwarded_cosignature_is_believed_on_its_actors_proof(
    ctx: Context, scene: dict[str, Any], attacker: Attacker
) -> None:
    author: Author = scene["author"]
    activity = author.prove(announce(author, attacker, scene["note_url"]))
    answer = await forward(ctx, scene["forwarder"], activity)
    assert answer.status_code == 202, answer.text
    (share,) = await shares(ctx)
    assert share.actor_uri == author.id
    assert (share.verified_with, share.verified_by) == ("eddsa-jcs-2022", author.assertion_key_id)
    # Believed on the proof alone: its origin was never asked for the activity.
    assert attacker.gets(activity_path(activity, attacker)) == []
    # The Ed25519 key is kept for next time, under its id and owner.
    async with ctx.sessions() as session:
        kept = (
            await session.scalars(
                select(RemoteKey).where(RemoteKey.key_id == author.assertion_key_id)
            )
        ).one()
    assert kept.owner_uri == author.id


async def test_a_forwarded_cosignature_is_believed_on_its_actors_ld_signature(
    ctx: Context, scene: dict[str, Any], attacker: Attacker
) -> None:
    author: Author = scene["author"]
    activity = author.ld_sign(announce(author, attacker, scene["note_url"]))
    answer = await forward(ctx, scene["forwarder"], activity)
    assert answer.status_code == 202, answer.text
    (share,) = await shares(ctx)
    assert (share.verified_with, share.verified_by) == ("RsaSignature2017", author.keyed.key_id)
    assert attacker.gets(activity_path(activity, attacker)) == []


async def test_a_proof_whose_key_is_out_of_reach_falls_back_on_the_signature(
    ctx: Context, scene: dict[str, Any], attacker: Attacker
) -> None:
    """Proof first, then the signature: a proof naming a key the actor's server does not
    serve (a 404 here) cannot be checked, so the signature decides."""
    author: Author = scene["author"]
    unlisted = author.id.replace("/users/author", "/keys/author-ed25519")
    activity = author.ld_sign(
        author.prove(announce(author, attacker, scene["note_url"]), key_id=unlisted)
    )
    answer = await forward(ctx, scene["forwarder"], activity)
    assert answer.status_code == 202, answer.text
    (share,) = await shares(ctx)
    assert share.verified_with == "RsaSignature2017"


async def test_an_unproven_forward_is_confirmed_at_its_origin(
    ctx: Context, scene: dict[str, Any], attacker: Attacker
) -> None:
    author: Author = scene["author"]
    activity = announce(author, attacker, scene["note_url"])
    attacker.serve(activity_path(activity, attacker), activity)
    answer = await forward(ctx, scene["forwarder"], activity)
    assert answer.status_code == 202, answer.text
    (share,) = await shares(ctx)
    assert (share.verified_with, share.verified_by) == ("origin", activity["id"])
    assert attacker.gets(activity_path(activity, attacker)) == [activity_path(activity, attacker)]


async def test_a_proof_in_another_suite_is_not_judged_the_origin_is_asked(
    ctx: Context, scene: dict[str, Any], attacker: Attacker
) -> None:
    """A suite we do not implement (eddsa-rdfc-2022) is neither believed nor called forged:
    the activity is confirmed at its origin like an unproven one."""
    author: Author = scene["author"]
    activity = author.prove(announce(author, attacker, scene["note_url"]))
    activity["proof"]["cryptosuite"] = "eddsa-rdfc-2022"
    attacker.serve(activity_path(activity, attacker), activity)
    answer = await forward(ctx, scene["forwarder"], activity)
    assert answer.status_code == 202, answer.text
    (share,) = await shares(ctx)
    assert share.verified_with == "origin"


# ---- what is refused, with nothing stored -----------------------------------------------


def _changed_content(author: Author, attacker: Attacker, note_url: str) -> dict[str, Any]:
    activity = author.prove(announce(author, attacker, note_url))
    activity["published"] = "2026-12-01T13:00:00Z"
    return activity


def _changed_object(author: Author, attacker: Attacker, note_url: str) -> dict[str, Any]:
    activity = author.ld_sign(announce(author, attacker, note_url))
    activity["object"] = note_url + "x"
    return activity


def _changed_actor(author: Author, attacker: Attacker, note_url: str) -> dict[str, Any]:
    """The author's proof, claimed for another actor on the same host."""
    victim, _ = actor_document(attacker, "victim")
    activity = author.prove(announce(author, attacker, note_url))
    activity["actor"] = victim.id
    activity["id"] = victim.id + "/announces/1"
    return activity


def _key_of_another_actor(author: Author, attacker: Attacker, note_url: str) -> dict[str, Any]:
    """Proved with a key that another actor (on the same host) lists as its own."""
    other = Author(attacker, "other")
    return other.prove(announce(author, attacker, note_url))


def _key_on_another_host(author: Author, attacker: Attacker, note_url: str) -> dict[str, Any]:
    return author.prove(
        announce(author, attacker, note_url), key_id="https://elsewhere.example/keys/1"
    )


def _signature_over_other_options(
    author: Author, attacker: Attacker, note_url: str
) -> dict[str, Any]:
    activity = author.ld_sign(announce(author, attacker, note_url))
    activity["signature"]["created"] = "2026-12-01T12:00:01Z"
    return activity


def _signature_by_another_actor(
    author: Author, attacker: Attacker, note_url: str
) -> dict[str, Any]:
    other = Author(attacker, "signer")
    return ldsig.sign(
        announce(author, attacker, note_url),
        creator=other.keyed.key_id,
        private_key=other.keyed.private_key,
        created=CREATED,
    )


def _proof_removed(author: Author, attacker: Attacker, note_url: str) -> dict[str, Any]:
    """Proved, then the proof taken off; the origin does not serve the activity."""
    activity = author.prove(announce(author, attacker, note_url))
    del activity["proof"]
    return activity


TAMPERED = {
    "changed content": (_changed_content, "proof does not hold"),
    "changed object under a signature": (_changed_object, "proof does not hold"),
    "changed actor": (_changed_actor, "belongs to another actor"),
    "key of another actor": (_key_of_another_actor, "belongs to another actor"),
    "key on another host": (_key_on_another_host, "not on its actor's server"),
    "signature over other options": (_signature_over_other_options, "proof does not hold"),
    "signature by another actor": (_signature_by_another_actor, "belongs to another actor"),
    "proof removed": (_proof_removed, "origin does not serve it"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
async def test_a_tampered_forward_is_refused_and_nothing_is_stored(
    ctx: Context, scene: dict[str, Any], attacker: Attacker, case: str
) -> None:
    make, reason = TAMPERED[case]
    author: Author = scene["author"]
    activity = make(author, attacker, scene["note_url"])
    before = await snapshot(ctx)
    async with ctx.sessions() as session:
        queued = len((await session.scalars(select(InboxItem))).all())
    answer = await forward(ctx, scene["forwarder"], copy.deepcopy(activity))
    assert answer.status_code == 401, (case, answer.status_code, answer.text)
    assert reason in answer.json()["error"], (case, answer.json())
    after = await snapshot(ctx)
    # The forwarder's own key may be kept (it did sign the request); nothing else changes.
    for table in ("RemoteKey", "RemoteActor"):
        after.pop(table), before.pop(table)
    assert after == before, case
    async with ctx.sessions() as session:
        assert len((await session.scalars(select(InboxItem))).all()) == queued
    assert await shares(ctx) == []


# ---- an announced communiqué whose origin is down ----------------------------------------


async def test_an_announced_copy_is_used_only_on_a_proof_by_a_key_we_already_keep(
    ctx: Context, attacker: Attacker
) -> None:
    """When an Announce's object cannot be fetched from its origin, the copy embedded in the
    Announce is used only if its proof holds with the author's key as we already keep it
    (the origin being down, nothing is fetched); a tampered copy, or one whose key we never
    saw, is not."""
    author = Author(attacker, "author")
    note = author.prove(
        {
            "@context": AS,
            "id": author.id + "/notes/1",
            "type": "Note",
            "attributedTo": author.id,
            "content": "<p>The camp is back.</p>",
            "to": [PUBLIC],
        }
    )
    assert await inbox._proven_copy(ctx, note, note["id"]) is None  # key never seen
    async with ctx.sessions() as session, session.begin():
        session.add(
            RemoteKey(
                key_id=author.assertion_key_id,
                owner_uri=author.id,
                public_key_pem=proofs.public_pem(author.ed25519.public_key()),
            )
        )
    requests = len(attacker.requests)
    kept = await inbox._proven_copy(ctx, note, note["id"])
    assert kept is not None and kept["content"] == "<p>The camp is back.</p>"
    tampered = {**note, "content": "<p>The camp is gone.</p>"}
    assert await inbox._proven_copy(ctx, tampered, note["id"]) is None
    # Another id than the Announce's object, or an author on another origin: not this copy.
    assert await inbox._proven_copy(ctx, note, note["id"] + "x") is None
    assert len(attacker.requests) == requests  # nothing was fetched
