"""FEP-8b32 object integrity proofs: ``DataIntegrityProof`` with the ``eddsa-jcs-2022`` suite.

A proof makes a document carry its own origin: whoever holds the actor's Ed25519 key signs the
JSON itself, so the document can be checked wherever it travels (forwarded, fetched from a
relay, kept in an archive), not only on the HTTP request that delivered it.

The algorithm is W3C Data Integrity EdDSA Cryptosuites v1.0, §3.3 "eddsa-jcs-2022"::

    proofConfig = the proof without proofValue, with the document's @context
    hashData    = SHA-256(JCS(proofConfig)) || SHA-256(JCS(document without proof))
    proofValue  = "z" + base58btc(Ed25519-sign(hashData))

JCS is RFC 8785, from the ``rfc8785`` package (Trail of Bits); base58btc from ``base58``;
Ed25519 from ``cryptography``. Keys are published as FEP-521a ``Multikey`` entries of the
actor's ``assertionMethod``: ``publicKeyMultibase`` is "z" + base58btc(0xed 0x01 + 32 key bytes),
which always reads "z6Mk…".

Pure, like ``signatures``: no I/O, no clock (``verify`` is handed ``now``), no key lookup.
``verify`` checks the proof and that its key sits on the document owner's origin (FEP-fe34);
the caller still has to fetch the key named by ``verification_method_of`` and make sure the
owner's own actor document lists it under ``assertionMethod`` (``assertion_keys_of``).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import base58
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from server.activitypub.jsonld import as_list, id_of
from server.activitypub.signatures import PublicKey, Rejected

__all__ = [
    "CRYPTOSUITE",
    "DATA_INTEGRITY_CONTEXT",
    "MULTIKEY_CONTEXT",
    "PROOF_TYPE",
    "Rejected",
    "Verified",
    "assertion_keys_of",
    "build_multikey",
    "canonical_json",
    "multikey_public",
    "parse_multikey",
    "sign",
    "verification_method_of",
    "verify",
]

PROOF_TYPE = "DataIntegrityProof"
CRYPTOSUITE = "eddsa-jcs-2022"
ASSERTION_METHOD = "assertionMethod"
# The current FEP-8b32 revision (2025-10) names data-integrity/v2; earlier ones used v1.
DATA_INTEGRITY_CONTEXT = "https://w3id.org/security/data-integrity/v2"
# Contexts that define `proof` and DataIntegrityProof: with one of them, sign() adds none.
_PROOF_CONTEXTS = frozenset(
    {
        DATA_INTEGRITY_CONTEXT,
        "https://w3id.org/security/data-integrity/v1",
        "https://www.w3.org/ns/credentials/v2",  # Verifiable Credentials 2.0 embeds them
    }
)
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
_AS = "https://www.w3.org/ns/activitystreams"

# Multicodec "ed25519-pub" (0xed) as an unsigned varint.
_ED25519_PUB = b"\xed\x01"
_BASE58BTC = re.compile(r"z[1-9A-HJ-NP-Za-km-z]{1,200}\Z")
# XML Schema 1.1 dateTime (what Data Integrity requires of created/expires), seconds and
# fraction included; fromisoformat alone would also take dates, week dates and basic format.
_XSD_DATETIME = re.compile(r"-?\d{4,}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?\Z")


@dataclass(frozen=True)
class Verified:
    """A proof that holds: who it names, whose document it is, and when it was made."""

    verification_method_uri: str
    owner_uri: str | None  # the document's actor (or attributedTo); None if it names none
    created: datetime | None


class _Fail(Exception):
    """Internal control flow: becomes ``Rejected(reason)`` at the public boundary."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# JCS, multibase, Multikey


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) serialisation; ValueError for what JCS cannot represent.

    That is: integers beyond ±(2**53 - 1) (JSON numbers are IEEE 754 doubles, and a JavaScript
    signer would already have rounded them), NaN and infinities, lone surrogates, non-string
    keys and anything that is not JSON.
    """
    try:
        return rfc8785.dumps(value)
    except RecursionError as exc:
        raise ValueError("document is nested too deeply") from exc
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(str(exc)) from exc


def _multibase_decode(value: object) -> bytes | None:
    """Bytes of a base58btc multibase string ("z…"), or None when it is not one."""
    if not isinstance(value, str) or not _BASE58BTC.match(value):
        return None
    return base58.b58decode(value[1:])


def _multibase_encode(data: bytes) -> str:
    return "z" + base58.b58encode(data).decode("ascii")


def multikey_public(key: ed25519.Ed25519PublicKey) -> str:
    """FEP-521a ``publicKeyMultibase`` of an Ed25519 key: "z6Mk…"."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _multibase_encode(_ED25519_PUB + raw)


def parse_multikey(value: object) -> ed25519.Ed25519PublicKey | None:
    """The Ed25519 key of a ``publicKeyMultibase`` value, or None when it is not one."""
    data = _multibase_decode(value)
    if data is None or len(data) != 34 or not data.startswith(_ED25519_PUB):
        return None
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(data[2:])
    except ValueError:
        return None


@lru_cache(maxsize=2048)
def ed25519_public_of(private_pem: str) -> ed25519.Ed25519PublicKey:
    """The public half of an Ed25519 private key in PKCS#8 PEM (parsed once per PEM)."""
    key = serialization.load_pem_private_key(private_pem.encode("ascii"), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key.public_key()


def build_multikey(
    key_uri: str, controller_uri: str, key: ed25519.Ed25519PublicKey
) -> dict[str, Any]:
    """One ``assertionMethod`` entry (FEP-521a); the actor's @context needs MULTIKEY_CONTEXT."""
    return {
        "id": key_uri,
        "type": "Multikey",
        "controller": controller_uri,
        "publicKeyMultibase": multikey_public(key),
    }


def assertion_keys_of(doc: Mapping[str, Any]) -> list[tuple[str, str, ed25519.Ed25519PublicKey]]:
    """(key id, controller, key) for each Ed25519 Multikey in ``assertionMethod``.

    Reads the actor document as fetched, not ``jsonld.normalise``'s output: with the contexts
    FEP-521a and FEP-8b32 show (activitystreams, data-integrity, multikey), no context defines
    ``assertionMethod`` at the top level, so JSON-LD processing drops it; every implementation
    reads it as plain JSON. Entries that are bare references, other key types, or whose id is
    not on the controller's origin are skipped; the caller checks that the controller is the
    actor whose document this is.
    """
    keys: list[tuple[str, str, ed25519.Ed25519PublicKey]] = []
    for entry in as_list(doc.get("assertionMethod")):
        if not isinstance(entry, dict) or "Multikey" not in as_list(entry.get("type")):
            continue
        key_id, controller = id_of(entry.get("id")), id_of(entry.get("controller"))
        key = parse_multikey(entry.get("publicKeyMultibase"))
        if key_id and controller and key is not None and _same_origin(key_id, controller):
            keys.append((key_id, controller, key))
    return keys


# --------------------------------------------------------------------------------------------
# Small helpers


def _origin(uri: str) -> tuple[str, str, int] | None:
    """RFC 6454 origin of an http(s) URL (what FEP-fe34 compares), or None."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80)


def _same_origin(a: str, b: str) -> bool:
    origin = _origin(a)
    return origin is not None and origin == _origin(b)


def _as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken to be UTC, as in ``signatures``.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _xsd_datetime(moment: datetime) -> str:
    """``2023-02-24T23:36:38Z``: UTC, whole seconds, as the FEP and W3C examples write it."""
    return _as_utc(moment).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_datetime(value: object, what: str) -> datetime:
    if not isinstance(value, str) or not _XSD_DATETIME.match(value):
        raise _Fail(f"malformed {what}")
    try:
        return _as_utc(datetime.fromisoformat(value))
    except ValueError as exc:  # month 13, year 0, a six-digit year…
        raise _Fail(f"malformed {what}") from exc


def _context_list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _is_ld_signature(value: object) -> bool:
    # A Mastodon-style Linked Data Signature (RsaSignature2017), which FEP-8b32 says is made
    # after the proof and removed before the proof is verified.
    return isinstance(value, dict) and "signatureValue" in value


def _owner_of(document: Mapping[str, Any]) -> str | None:
    """The owner FEP-fe34 means: the actor of an activity, else the object's attributedTo."""
    for name in ("actor", "attributedTo"):
        if name in document:
            values = as_list(document[name])
            owner = id_of(values[0]) if len(values) == 1 else None
            if owner is None:
                raise _Fail(f"document's {name} is not one actor")
            return owner
    return None


def _hash_data(proof_config: Mapping[str, Any], unsecured: Mapping[str, Any]) -> bytes:
    try:
        config_bytes = canonical_json(proof_config)
        document_bytes = canonical_json(unsecured)
    except ValueError as exc:
        raise _Fail("document cannot be canonicalised (RFC 8785)") from exc
    return hashlib.sha256(config_bytes).digest() + hashlib.sha256(document_bytes).digest()


# --------------------------------------------------------------------------------------------
# Sign and verify


def sign(
    document: Mapping[str, Any],
    *,
    verification_method: str,
    private_key: ed25519.Ed25519PrivateKey,
    created: datetime,
    purpose: str = ASSERTION_METHOD,
    expires: datetime | None = None,
) -> dict[str, Any]:
    """A copy of ``document`` with an eddsa-jcs-2022 ``proof`` (FEP-8b32, 2025-10 revision).

    The data-integrity context is appended to the document's ``@context`` unless a context
    defining ``proof`` is there (a document without one gets ActivityStreams first, which is
    how it was read), and the proof carries the same ``@context``, as the current FEP-8b32 and
    eddsa-jcs-2022 (Create Proof step 2) do.
    ValueError if the document already has a proof (proof sets are not supported), carries a
    Linked Data Signature (FEP-8b32: the proof comes first), or is not JCS-representable.
    """
    if "proof" in document:
        raise ValueError("document already has a proof")
    if _is_ld_signature(document.get("signature")):
        raise ValueError("add the integrity proof before the Linked Data Signature")
    signed = copy.deepcopy(dict(document))
    contexts = _context_list(signed.get("@context", _AS))
    if not _PROOF_CONTEXTS.intersection(c for c in contexts if isinstance(c, str)):
        contexts.append(DATA_INTEGRITY_CONTEXT)
    signed["@context"] = contexts
    proof: dict[str, Any] = {
        "@context": copy.deepcopy(contexts),
        "type": PROOF_TYPE,
        "cryptosuite": CRYPTOSUITE,
        "verificationMethod": verification_method,
        "proofPurpose": purpose,
        "created": _xsd_datetime(created),
    }
    if expires is not None:
        proof["expires"] = _xsd_datetime(expires)
    try:
        hash_data = _hash_data(proof, signed)
    except _Fail as exc:
        raise ValueError(exc.reason) from exc
    proof["proofValue"] = _multibase_encode(private_key.sign(hash_data))
    signed["proof"] = proof
    return signed


def verification_method_of(document: object) -> str | None:
    """The key id the document's single proof names (to look the key up), or None."""
    if not isinstance(document, dict):
        return None
    proofs = as_list(document.get("proof"))
    if len(proofs) != 1 or not isinstance(proofs[0], dict):
        return None
    method = proofs[0].get("verificationMethod")
    return method if isinstance(method, str) and method else None


def verify(
    document: object,
    public_key: PublicKey,
    *,
    now: datetime,
    purpose: str = ASSERTION_METHOD,
) -> Verified | Rejected:
    """Check the document's eddsa-jcs-2022 proof with ``public_key``; never raises for bad input.

    ``document`` is the JSON as received: JCS hashes it byte for byte, and ``jsonld.normalise``
    rewrites ``proof`` (a named graph in the data-integrity context) and much else.
    ``public_key`` is the key the proof's ``verificationMethod`` resolved to; ``now`` is
    compared with the proof's ``expires``.
    """
    try:
        return _verify(document, public_key, _as_utc(now), purpose)
    except _Fail as exc:
        return Rejected(exc.reason)


def _verify(document: object, public_key: PublicKey, now: datetime, purpose: str) -> Verified:
    if not isinstance(document, dict):
        raise _Fail("document is not a JSON object")
    proofs = as_list(document.get("proof"))
    if not proofs:
        raise _Fail("document has no proof")
    if len(proofs) > 1:
        raise _Fail("document has more than one proof")  # FEP-8b32: SHOULD NOT
    proof = proofs[0]
    if not isinstance(proof, dict):
        raise _Fail("malformed proof")
    if proof.get("type") != PROOF_TYPE:
        raise _Fail("proof is not a DataIntegrityProof")
    if proof.get("cryptosuite") != CRYPTOSUITE:
        raise _Fail("unsupported cryptosuite")
    if proof.get("proofPurpose") != purpose:
        raise _Fail(f"proof purpose is not {purpose}")
    method = proof.get("verificationMethod")
    if not isinstance(method, str) or not method:
        raise _Fail("proof names no verification method")
    signature = _multibase_decode(proof.get("proofValue"))
    if signature is None or len(signature) != 64:
        raise _Fail("malformed proofValue")
    created = _parse_datetime(proof["created"], "created") if "created" in proof else None
    if "expires" in proof and _parse_datetime(proof["expires"], "expires") <= now:
        raise _Fail("proof has expired")
    owner = _owner_of(document)
    # FEP-fe34: the key must be on the owner's origin, or anyone could sign in another
    # actor's name with a key of their own. (DID methods, FEP-c390 / ef61, are not supported.)
    if owner is not None and not _same_origin(method, owner):
        raise _Fail("verification method is not on the origin of the document's owner")
    if not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise _Fail("key is not an Ed25519 key")

    unsecured = {
        key: value
        for key, value in document.items()
        if key != "proof" and not (key == "signature" and _is_ld_signature(value))
    }
    options = {key: value for key, value in proof.items() if key != "proofValue"}
    if "@context" in options:
        # Verify Proof step 4: the proof's context must begin the document's (a proof made
        # for another document's context is refused), and the document is hashed with it.
        expected = _context_list(options["@context"])
        if _context_list(document.get("@context"))[: len(expected)] != expected:
            raise _Fail("proof @context does not match the document's")
        unsecured["@context"] = options["@context"]
    # A proof without @context (FEP-8b32 before 2024-06) is hashed as it stands.
    try:
        public_key.verify(signature, _hash_data(options, unsecured))
    except InvalidSignature:
        raise _Fail("proof does not match the document and key") from None
    return Verified(verification_method_uri=method, owner_uri=owner, created=created)
