"""Linked Data Signatures as Mastodon makes and checks them: ``RsaSignature2017``.

Mastodon signs every public activity it sends with the actor's RSA key (``LinkedDataSignature``
in app/lib/activitypub/linked_data_signature.rb), so that the activity still proves its origin
when it is forwarded or relayed, away from the HTTP request that delivered it::

    options          = {"@context": identity/v1, "creator": key id, "created": xsd:dateTime}
    options_hash     = sha256_hex(URDNA2015(options))
    document_hash    = sha256_hex(URDNA2015(document without "signature"))
    signatureValue   = base64(RSASSA-PKCS1-v1_5-SHA256(options_hash + document_hash))

URDNA2015 is the canonical N-Quads form of the document's RDF, from pyld, with contexts from our
own offline tables only (``jsonld.offline_options``): a context we do not hold makes ``sign`` and
``verify`` refuse, because a signature over terms we cannot interpret proves nothing we can
check, and fetching the context would let a remote document make us issue requests.

Only what the contexts define is signed: a property no context defines is dropped from the
canonical form, so it can be changed without breaking the signature. ``jsonld.normalise`` drops
the same properties when the document is read, which is why a verified document must be read
through it and not as plain JSON.

Pure, like ``signatures``: no I/O, no clock, no key lookup. The caller reads the key id with
``creator_of``, fetches that key, calls ``verify``, and must still check that the key belongs
to the document's actor. Canonicalisation costs milliseconds: from async code use
``sign_off_loop`` / ``verify_off_loop``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyld import jsonld as _pyld
from pyld.canon import URDNA2015

from server.activitypub import bounds
from server.activitypub.jsonld import JsonLdError, offline_options
from server.activitypub.signatures import PrivateKey, PublicKey, Rejected, load_public_key

__all__ = [
    "IDENTITY_CONTEXT",
    "SIGNATURE_TYPE",
    "Rejected",
    "Uncheckable",
    "Verified",
    "creator_of",
    "sign",
    "sign_off_loop",
    "verify",
    "verify_off_loop",
]

SIGNATURE_TYPE = "RsaSignature2017"
# The context Mastodon gives the signature options (LinkedDataSignature::CONTEXT); it maps
# creator to dc:creator and created to dc:created (an xsd:dateTime). Held in context_tables.
IDENTITY_CONTEXT = "https://w3id.org/identity/v1"

_FIELDS = frozenset({"type", "creator", "created", "signatureValue"})
# xsd:dateTime as Mastodon writes it (Time#iso8601), with optional fractions and any offset.
_XSD_DATETIME = re.compile(
    r"-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z", re.ASCII
)
# An RSA signature of at most 16384 bits, in base64.
_MAX_SIGNATURE_CHARS = 2732

# URDNA2015 tells blank nodes apart by trying every order of those that look alike, which is
# factorial work: eight blank nodes all linked to each other (56 JSON values) take pyld 40
# seconds. The budget counts Hash N-Degree Quads calls and the permutations they will try;
# one unit is about 20 µs. Real activities need few (their nodes differ, or have ids); the
# budget admits five mutually linked look-alike nodes, refuses six.
_MAX_WORK = 10_000
_MAX_LOOKALIKES = 8  # larger groups exceed the budget on their own (8! > _MAX_WORK)


@dataclass(frozen=True)
class Verified:
    """A signature that holds: the key that made it, and when its signer says it did."""

    creator_uri: str
    created: datetime


@dataclass(frozen=True)
class _Signature:
    creator_uri: str
    created: str
    value: bytes


class _Fail(Exception):
    """Internal control flow: becomes ``Rejected(reason)`` (or ValueError in ``sign``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Uncanonical(_Fail):
    """The document could not be canonicalised: the signature is not wrong, only uncheckable."""


class _TooMuchWork(Exception):
    pass


@dataclass(frozen=True)
class Uncheckable(Rejected):
    """A signature ``verify`` could not check (a context we do not hold, JSON-LD we cannot
    process, a document too costly to canonicalise), as opposed to one that does not match."""


class _BoundedURDNA2015(URDNA2015):  # type: ignore[misc]  # pyld is untyped
    """pyld's URDNA2015, stopped once its blank-node disambiguation exceeds ``_MAX_WORK``."""

    def __init__(self) -> None:
        super().__init__()
        self._work = 0

    def _spend(self, units: int) -> None:
        self._work += units
        if self._work > _MAX_WORK:
            raise _TooMuchWork

    def hash_n_degree_quads(self, id_: str, issuer: Any) -> Any:
        self._spend(1)
        return super().hash_n_degree_quads(id_, issuer)

    def create_hash_to_related(self, id_: str, issuer: Any) -> Any:
        related: dict[str, list[str]] = super().create_hash_to_related(id_, issuer)
        for group in related.values():
            if len(group) > _MAX_LOOKALIKES:
                raise _TooMuchWork
            # hash_n_degree_quads tries every permutation of each group.
            self._spend(math.factorial(len(group)))
        return related


def _canonical_nquads(document: Mapping[str, Any]) -> str:
    """URDNA2015 canonical N-Quads of ``document``, with offline contexts only.

    The same as ``pyld.jsonld.normalize(document, {"algorithm": "URDNA2015", "format":
    "application/n-quads"})`` with our loader, with the work bounded. Raises ``_Fail`` for a
    context we do not hold, invalid JSON-LD, or a document too costly to canonicalise; the
    caller bounds its size (``bounds.check_document``).
    """
    try:
        dataset = _pyld.to_rdf(dict(document), offline_options(produceGeneralizedRdf=False))
        nquads: str = _BoundedURDNA2015().main(dataset, {"format": "application/n-quads"})
    except _TooMuchWork as exc:
        raise _Uncanonical("document has too many look-alike blank nodes to canonicalise") from exc
    except Exception as exc:  # pyld fails in many ways (see jsonld._SAFE_CODE)
        raise _Uncanonical(_reason(exc)) from exc
    return nquads


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, JsonLdError):  # our offline loader's refusal, which names the URL
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return "document is not valid JSON-LD"


def _sha256_hex(nquads: str) -> str:
    return hashlib.sha256(nquads.encode("utf-8")).hexdigest()


def _to_be_signed(document: Mapping[str, Any], creator_uri: str, created: str) -> bytes:
    """options_hash + document_hash, as ASCII hex (Mastodon concatenates the two strings)."""
    if not isinstance(document.get("@context"), str | list | dict):
        # Without a context nothing but keywords survives canonicalisation.
        raise _Fail("document has no @context")
    options = {"@context": IDENTITY_CONTEXT, "creator": creator_uri, "created": created}
    options_nquads = _canonical_nquads(options)
    # creator is an @id: a relative or malformed IRI would silently drop out of the signed form.
    if options_nquads.count("\n") != 2:
        raise _Fail("signature options do not canonicalise to creator and created")
    unsigned = {key: value for key, value in document.items() if key != "signature"}
    document_nquads = _canonical_nquads(unsigned)
    if not document_nquads:
        raise _Fail("document canonicalises to nothing")
    return (_sha256_hex(options_nquads) + _sha256_hex(document_nquads)).encode("ascii")


def _check_bounds(document: object) -> None:
    try:
        bounds.check_document(document)
    except bounds.TooComplex as exc:
        raise _Fail(exc.reason) from exc


def _http_uri(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 2048:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    return value


def _xsd_datetime(moment: datetime) -> str:
    """``2024-09-12T16:50:46Z``: UTC, whole seconds, as Mastodon writes ``created``."""
    # A naive datetime is taken to be UTC, as in ``signatures`` and ``integrity``.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_created(value: str) -> datetime:
    if not _XSD_DATETIME.match(value):
        raise _Fail("malformed signature created")
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError as exc:  # month 13, a five-digit year…
        raise _Fail("malformed signature created") from exc


def _parse(document: Mapping[str, Any]) -> _Signature:
    signature = document.get("signature")
    if signature is None:
        raise _Fail("document has no signature")
    if not isinstance(signature, dict):
        raise _Fail("signature is not an object")
    if signature.get("type") != SIGNATURE_TYPE:
        raise _Fail(f"signature type is not {SIGNATURE_TYPE}")
    # Mastodon hashes every other field into the options; we sign none, so we accept none
    # (nonce, domain, id...) rather than vouch for values we never check.
    extra = set(signature) - _FIELDS
    if extra:
        raise _Fail("signature has fields other than type, creator, created, signatureValue")
    creator_uri = _http_uri(signature.get("creator"))
    if creator_uri is None:
        raise _Fail("signature creator is missing or not an http(s) URL")
    created = signature.get("created")
    if not isinstance(created, str):
        raise _Fail("signature created is missing")
    value = signature.get("signatureValue")
    if not isinstance(value, str) or not value:
        raise _Fail("signatureValue is missing")
    if len(value) > _MAX_SIGNATURE_CHARS:
        raise _Fail("signatureValue is too long")
    try:
        # Mastodon writes Base64.strict_encode64: no line breaks or whitespace to tolerate.
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Fail("signatureValue is not base64") from exc
    return _Signature(creator_uri=creator_uri, created=created, value=raw)


def creator_of(document: object) -> str | None:
    """The key id an RsaSignature2017 ``signature`` names (to fetch), or None if it has none.

    Cheap: no canonicalisation; ``verify`` repeats every check.
    """
    if not isinstance(document, dict):
        return None
    try:
        return _parse(document).creator_uri
    except _Fail:
        return None


def sign(
    document: Mapping[str, Any],
    *,
    creator: str,
    private_key: PrivateKey,
    created: datetime,
) -> dict[str, Any]:
    """A copy of ``document`` with an RsaSignature2017 ``signature`` by the key ``creator``.

    ``creator`` is the key id (``https://host/actors/name#main-key``), which receivers fetch.
    An existing ``signature`` is replaced. ValueError for an RSA-less key, a document without
    ``@context`` or outside ``bounds``, a context we do not hold, or invalid JSON-LD.
    """
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError(f"{SIGNATURE_TYPE} needs an RSA key")
    if _http_uri(creator) is None:
        raise ValueError("creator must be an http(s) URL")
    stamp = _xsd_datetime(created)
    try:
        _check_bounds(document)
        data = _to_be_signed(document, creator, stamp)
    except _Fail as exc:
        raise ValueError(exc.reason) from exc
    value = private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    signed = {key: copy.deepcopy(item) for key, item in document.items() if key != "signature"}
    signed["signature"] = {
        "type": SIGNATURE_TYPE,
        "creator": creator,
        "created": stamp,
        "signatureValue": base64.b64encode(value).decode("ascii"),
    }
    return signed


def verify(document: object, public_key: str | PublicKey) -> Verified | Rejected:
    """Check the RsaSignature2017 ``signature`` of ``document``; never raises for bad input.

    ``public_key`` is the key (or its PEM) that ``creator_of(document)`` resolved to. Verified
    says which key signed; that this key belongs to the document's actor is the caller's check.
    """
    try:
        return _verify(document, public_key)
    except _Uncanonical as exc:
        return Uncheckable(exc.reason)
    except _Fail as exc:
        return Rejected(exc.reason)


def _verify(document: object, public_key: str | PublicKey) -> Verified:
    if not isinstance(document, dict):
        raise _Fail("document is not a JSON object")
    _check_bounds(document)
    signature = _parse(document)
    created = _parse_created(signature.created)
    key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    if not isinstance(key, rsa.RSAPublicKey):
        raise _Fail("key is not an RSA public key")
    data = _to_be_signed(document, signature.creator_uri, signature.created)
    try:
        key.verify(signature.value, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise _Fail("signature does not match the document") from exc
    return Verified(creator_uri=signature.creator_uri, created=created)


async def sign_off_loop(
    document: Mapping[str, Any],
    *,
    creator: str,
    private_key: PrivateKey,
    created: datetime,
) -> dict[str, Any]:
    """``sign`` in a worker thread: canonicalisation never runs on the event loop."""

    def run() -> dict[str, Any]:
        return sign(document, creator=creator, private_key=private_key, created=created)

    return await anyio.to_thread.run_sync(run)


async def verify_off_loop(document: object, public_key: str | PublicKey) -> Verified | Rejected:
    """``verify`` in a worker thread, like ``jsonld.normalise_off_loop``."""
    return await anyio.to_thread.run_sync(verify, document, public_key)
