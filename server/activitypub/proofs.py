"""Proofs of origin that travel with a document: what we publish carries them, what is
forwarded to us is checked by them.

Outgoing (``secure_activity``): every public activity of an assembly is signed once, when it is
recorded (``outbox.send``), never per delivery:

1. a FEP-8b32 ``eddsa-jcs-2022`` proof on the communiqué it carries (the embedded object the
   assembly wrote), so the Note proves its origin wherever it is copied;
2. a proof on the activity itself, with the assembly's Ed25519 key (``#ed25519-key``, a
   FEP-521a ``Multikey`` under the actor's ``assertionMethod``);
3. last, a Mastodon ``RsaSignature2017`` Linked Data signature with the assembly's RSA key
   (``#main-key``), over the document with its proofs, as FEP-8b32 orders them.

Incoming (``check_document``): an activity signed over HTTP by someone other than its actor (a
forwarded co-signature, a relayed communiqué) is believed only if it proves itself: a proof by
a key its actor lists under ``assertionMethod``, or a Linked Data signature by a key its actor
lists as ``publicKey``. A proof or signature that is there and fails is a tampered document and
is refused; one we cannot check (a key we cannot get, a context we do not hold) leaves the
caller to ask the origin, as before.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urldefrag

import anyio.to_thread
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from server.activitypub import integrity, ldsig
from server.activitypub.actors import (
    ACTOR_TYPES,
    ResolvedKey,
    same_origin,
)
from server.activitypub.jsonld import JsonLdError, as_list, id_of, normalise_off_loop
from server.activitypub.signatures import (
    PrivateKey,
    PublicKey,
    Rejected,
    load_private_key,
    load_public_key,
)
from server.activitypub.verification import fetch_key, stored_key_of
from server.context import Context
from server.errors import RemoteError
from server.models import Assembly, AssemblyStatus
from server.urls import Urls

log = logging.getLogger(__name__)

Doc = dict[str, Any]

ED25519_KEY_FRAGMENT = "#ed25519-key"  # Urls.assertion_key_id
# Objects an assembly writes and sends inside its activities: these get their own proof.
_PROVEN_OBJECT_TYPES = frozenset({"Note", "Question", "Article", "Event"})


class Scheme(StrEnum):
    """How an activity was shown to be its actor's."""

    HTTP_SIGNATURE = "http-signature"  # signed over HTTP by the actor's own key
    INTEGRITY_PROOF = integrity.CRYPTOSUITE  # a FEP-8b32 proof by the actor's Ed25519 key
    LD_SIGNATURE = ldsig.SIGNATURE_TYPE  # a Linked Data signature by the actor's RSA key
    ORIGIN = "origin"  # fetched from the actor's own server at its id
    LOCAL = "local"  # written on this instance


@dataclass(frozen=True)
class Provenance:
    scheme: Scheme
    key_id: str | None  # the verifying key; for ORIGIN, the URL the document was fetched from


class ProofInvalid(Exception):
    """A proof or signature is present and does not hold: the document was altered, or
    signed by a key that is not its actor's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Keys


def new_ed25519_private_key_pem() -> str:
    """A fresh Ed25519 key as PKCS#8 PEM (an assembly's proof key)."""
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )


@lru_cache(maxsize=2048)
def private_key(pem: str) -> PrivateKey:
    """The private key of ``pem``, parsed once (RSA keys take milliseconds to load)."""
    return load_private_key(pem)


def public_pem(key: PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass(frozen=True)
class SigningKeys:
    """What an assembly signs its public documents with."""

    actor_id: str
    rsa_key_id: str
    rsa_private_pem: str
    ed25519_key_id: str | None
    ed25519_private_pem: str | None


def signing_keys(urls: Urls, assembly: Assembly) -> SigningKeys:
    return SigningKeys(
        actor_id=urls.actor(assembly.handle),
        rsa_key_id=urls.key_id(assembly.handle),
        rsa_private_pem=assembly.private_key_pem,
        ed25519_key_id=(
            urls.assertion_key_id(assembly.handle) if assembly.ed25519_private_key_pem else None
        ),
        ed25519_private_pem=assembly.ed25519_private_key_pem,
    )


# --------------------------------------------------------------------------------------------
# Signing what we publish


def prove_object(doc: Mapping[str, Any], keys: SigningKeys, created: datetime) -> Doc:
    """``doc`` with a FEP-8b32 proof by the assembly's Ed25519 key, if ``doc`` is its own
    (attributed to it) and carries no proof yet; otherwise an unchanged copy."""
    if (
        keys.ed25519_key_id is None
        or keys.ed25519_private_pem is None
        or "proof" in doc
        or id_of(doc.get("attributedTo")) != keys.actor_id
    ):
        return dict(doc)
    key = private_key(keys.ed25519_private_pem)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return integrity.sign(
        doc, verification_method=keys.ed25519_key_id, private_key=key, created=created
    )


def secure_activity(doc: Mapping[str, Any], keys: SigningKeys, created: datetime) -> Doc:
    """``doc`` (an activity of ``keys.actor_id``) with its proofs and Linked Data signature.

    Sync and CPU-bound (URDNA2015 takes milliseconds): async callers use
    ``secure_activity_off_loop``. A document the Linked Data signature cannot cover (a context
    we do not hold) goes out with its proofs only, and the failure is logged: an unsigned
    activity still reaches every follower over its HTTP signature.
    """
    secured = copy.deepcopy(dict(doc))
    obj = secured.get("object")
    if isinstance(obj, dict) and _PROVEN_OBJECT_TYPES.intersection(
        t for t in as_list(obj.get("type")) if isinstance(t, str)
    ):
        secured["object"] = prove_object(obj, keys, created)
    if keys.ed25519_key_id is not None and keys.ed25519_private_pem is not None:
        ed_key = private_key(keys.ed25519_private_pem)
        assert isinstance(ed_key, ed25519.Ed25519PrivateKey)
        secured = integrity.sign(
            secured, verification_method=keys.ed25519_key_id, private_key=ed_key, created=created
        )
    try:
        rsa_key = private_key(keys.rsa_private_pem)
        return ldsig.sign(secured, creator=keys.rsa_key_id, private_key=rsa_key, created=created)
    except ValueError as exc:
        log.warning("activity %s sent without a Linked Data signature: %s", doc.get("id"), exc)
        return secured


async def secure_activity_off_loop(
    doc: Mapping[str, Any], keys: SigningKeys, created: datetime
) -> Doc:
    return await anyio.to_thread.run_sync(secure_activity, doc, keys, created)


# --------------------------------------------------------------------------------------------
# Checking what others forward


@dataclass(frozen=True)
class Checked:
    """A document's proof (or signature) that holds, and a key fetched to check it (to store)."""

    provenance: Provenance
    fetched: ResolvedKey | None


async def check_document(
    ctx: Context, raw: Mapping[str, Any], *, owner_uri: str, fetch: bool = True
) -> Checked | None:
    """Whether ``raw`` (the JSON as it arrived) proves itself to be ``owner_uri``'s.

    Checked when its FEP-8b32 proof, or else its RsaSignature2017 signature, holds with a key
    ``owner_uri`` lists. None when it carries neither, or one we cannot check (its key cannot
    be had; ``fetch=False`` asks for our stored keys only; a context we do not hold).
    ProofInvalid when one is there and fails: altered content, a key that is not the owner's.
    """
    if "proof" in raw:
        checked = await _check_proof(ctx, raw, owner_uri, fetch)
        if checked is not None:
            return checked
    # No proof, or one we could not check (its key is out of reach): the signature may do.
    if "signature" in raw:
        return await _check_ld_signature(ctx, raw, owner_uri, fetch)
    return None


async def _check_proof(
    ctx: Context, raw: Mapping[str, Any], owner_uri: str, fetch: bool
) -> Checked | None:
    proof = raw.get("proof")
    if (
        not isinstance(proof, dict)
        or proof.get("type") != integrity.PROOF_TYPE
        or proof.get("cryptosuite") != integrity.CRYPTOSUITE
    ):
        # A proof set, or another suite (eddsa-rdfc-2022…): not ours to judge, not a forgery.
        return None
    method = integrity.verification_method_of(dict(raw))
    if method is None:
        raise ProofInvalid("the proof names no key")
    if not same_origin(method, owner_uri):
        raise ProofInvalid("the proof's key is not on its actor's server")
    now = ctx.clock()
    kept = await _stored_assertion_key(ctx, method, owner_uri)
    if kept is not None:
        result = integrity.verify(dict(raw), kept, now=now)
        if not isinstance(result, Rejected):
            return _proof_checked(result, owner_uri, method, None)
        if not fetch or ctx.urls.is_local(method):
            raise ProofInvalid(result.reason)
    if not fetch or ctx.urls.is_local(method):
        return None
    # Not kept, or perhaps rotated since: ask the owner's server for its keys, once.
    try:
        fetched = await fetch_key(ctx, method, _resolve_assertion_key)
    except RemoteError as exc:
        log.info("proof key %s not obtained: %s", method[:200], exc.message)
        return None
    if fetched.owner_uri != owner_uri:
        raise ProofInvalid("the proof's key belongs to another actor")
    public = load_public_key(fetched.pem)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    result = integrity.verify(dict(raw), public, now=now)
    if isinstance(result, Rejected):
        raise ProofInvalid(result.reason)
    return _proof_checked(result, owner_uri, method, fetched)


def _proof_checked(
    result: integrity.Verified, owner_uri: str, method: str, fetched: ResolvedKey | None
) -> Checked:
    if result.owner_uri != owner_uri:
        raise ProofInvalid("the proof is on a document of another actor")
    return Checked(Provenance(Scheme.INTEGRITY_PROOF, method), fetched)


async def _check_ld_signature(
    ctx: Context, raw: Mapping[str, Any], owner_uri: str, fetch: bool
) -> Checked | None:
    creator = ldsig.creator_of(dict(raw))
    if creator is None:
        raise ProofInvalid("malformed Linked Data signature")
    if not same_origin(creator, owner_uri):
        raise ProofInvalid("the signature's key is not on its actor's server")
    kept = await stored_key_of(ctx, creator)
    fetched: ResolvedKey | None = None
    if kept is not None:
        owner, pem = kept.owner_uri, kept.pem
    elif fetch and not ctx.urls.is_local(creator):
        try:
            fetched = await fetch_key(ctx, creator)
        except RemoteError as exc:
            log.info("signature key %s not obtained: %s", creator[:200], exc.message)
            return None
        owner, pem = fetched.owner_uri, fetched.pem
    else:
        return None
    if owner != owner_uri:
        raise ProofInvalid("the signature's key belongs to another actor")
    result = await ldsig.verify_off_loop(dict(raw), pem)
    if isinstance(result, Rejected):
        if isinstance(result, ldsig.Uncheckable):
            log.info("signature of %s not checked: %s", str(raw.get("id"))[:200], result.reason)
            return None
        raise ProofInvalid(result.reason)
    return Checked(Provenance(Scheme.LD_SIGNATURE, creator), fetched)


async def _stored_assertion_key(
    ctx: Context, key_id: str, owner_uri: str
) -> ed25519.Ed25519PublicKey | None:
    """An Ed25519 key we hold for ``key_id``: one of our assemblies', or one fetched before."""
    if ctx.urls.is_local(key_id):
        handle = key_id.removeprefix(ctx.urls.actor("")).removesuffix(ED25519_KEY_FRAGMENT)
        if not handle or key_id != ctx.urls.assertion_key_id(handle):
            return None
        async with ctx.sessions() as session:
            pem = await session.scalar(
                select(Assembly.ed25519_private_key_pem).where(
                    Assembly.handle == handle, Assembly.status == AssemblyStatus.APPROVED
                )
            )
        if pem is None or ctx.urls.actor(handle) != owner_uri:
            return None
        return integrity.ed25519_public_of(pem)
    kept = await stored_key_of(ctx, key_id)
    if kept is None or kept.owner_uri != owner_uri:
        return None
    key = load_public_key(kept.pem)
    return key if isinstance(key, ed25519.Ed25519PublicKey) else None


async def _resolve_assertion_key(ctx: Context, key_id: str) -> ResolvedKey:
    """An Ed25519 key from its controller's actor document, as served at the actor's id.

    ``assertionMethod`` is read from the JSON as served (JSON-LD processing drops it under the
    contexts most servers use, see ``integrity.assertion_keys_of``); the actor is stored from
    its normalised form, as every fetched actor is.
    """
    url = urldefrag(key_id).url
    fetched = await ctx.client.fetch_json(url, auth=ctx.instance_auth())
    raw = fetched.document
    if id_of(raw.get("id")) != url or fetched.url != url:
        raise RemoteError("remote document id does not match its URL", detail=url)
    if not set(t for t in as_list(raw.get("type")) if isinstance(t, str)) & ACTOR_TYPES:
        raise RemoteError("the key's controller is not an actor", detail=url)
    listed = [
        key
        for kid, controller, key in integrity.assertion_keys_of(raw)
        if kid == key_id and controller == url
    ]
    if not listed:
        raise RemoteError("the actor does not list that key under assertionMethod", detail=key_id)
    try:
        actor_doc = await normalise_off_loop(raw)
    except JsonLdError as exc:
        raise RemoteError("remote document is not valid JSON-LD", detail=url) from exc
    return ResolvedKey(key_id, url, public_pem(listed[0]), actor_doc)
