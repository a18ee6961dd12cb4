"""HTTP message signatures: draft-cavage-12 (as Mastodon uses it) and RFC 9421 (as Fedify sends it).

Pure: no I/O, no clock, no key fetching, no state. An inbox handler calls
:func:`parse_signature` to learn the key id, fetches that key itself, then calls
:func:`verify_request` with the key and the current time. Outgoing requests are signed with
:func:`sign_request` (draft-cavage, what every fediverse server verifies) or
:func:`sign_request_rfc9421`.

Crypto is delegated to ``cryptography``; digests to ``hashlib``; Structured Field parsing and
serialisation (RFC 8941, which RFC 9421 is built on) to ``http_sf``. Only the string building
of the signing string / signature base lives here. The ``http-message-signatures`` package is
not used: its verifier reads the wall clock (``datetime.now``) for created/expires, binds one
algorithm per verifier object, wants a request object rather than parts, and cannot try both
schemes for ``@target-uri`` behind a TLS-terminating proxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

import http_sf
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

Headers: TypeAlias = Mapping[str, str]
PublicKey: TypeAlias = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
Scheme: TypeAlias = Literal["draft-cavage", "rfc9421"]

__all__ = [
    "Headers",
    "PrivateKey",
    "PublicKey",
    "Rejected",
    "SignatureInfo",
    "Verified",
    "content_digest_header",
    "digest_header",
    "generate_private_key_pem",
    "load_private_key",
    "load_public_key",
    "parse_signature",
    "sign_request",
    "sign_request_rfc9421",
    "verify_request",
]


@dataclass(frozen=True)
class SignatureInfo:
    """What a parse of the incoming request found, before any key is known."""

    scheme: Scheme
    key_id: str


@dataclass(frozen=True)
class Verified:
    key_id: str
    scheme: Scheme


@dataclass(frozen=True)
class Rejected:
    reason: str  # short, human readable, safe to echo back to the remote


class _Fail(Exception):
    """Internal control flow: becomes ``Rejected(reason)`` at the public boundary."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Internal names for the signature algorithms we can verify (RFC 9421 registry names).
_Alg: TypeAlias = Literal["rsa-v1_5-sha256", "rsa-pss-sha512", "ed25519"]

_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "sha-256": lambda data: hashlib.sha256(data).digest(),
    "sha-512": lambda data: hashlib.sha512(data).digest(),
}

# RFC 9110 token characters; header names arrive lower-cased in both schemes.
_FIELD_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,100}\Z")
_DERIVED_COMPONENTS = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"}
)


# --------------------------------------------------------------------------------------------
# Keys and digests


def digest_header(body: bytes) -> str:
    """``Digest`` (RFC 3230) value, as draft-cavage senders put it: ``SHA-256=<base64>``."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def content_digest_header(body: bytes) -> str:
    """``Content-Digest`` (RFC 9530) value: a Structured Field dictionary ``sha-256=:<b64>:``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def load_public_key(pem: str) -> PublicKey | None:
    """RSA or Ed25519 public key from PEM, or None when it is not one.

    ``load_pem_public_key`` reads both SubjectPublicKeyInfo ("BEGIN PUBLIC KEY") and PKCS#1
    ("BEGIN RSA PUBLIC KEY", which some older servers publish in ``publicKeyPem``).
    """
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except Exception:  # malformed PEM, unsupported key type, non-ASCII junk...
        return None
    if isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return key
    return None


def load_private_key(pem: str) -> PrivateKey:
    """PKCS#8 (or PKCS#1 RSA) PEM without a password. Raises ValueError for anything else."""
    key = serialization.load_pem_private_key(pem.strip().encode("ascii"), password=None)
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise ValueError("only RSA and Ed25519 private keys are supported")


def generate_private_key_pem() -> tuple[str, str]:
    """(private PKCS#8 PEM, public SubjectPublicKeyInfo PEM) for a fresh RSA-2048 key.

    RSA rather than Ed25519 because Mastodon and most of the fediverse only accept RSA keys
    in ``publicKeyPem``.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


# --------------------------------------------------------------------------------------------
# Small helpers


class FieldLines(dict[str, str]):
    """Request headers read once: each field name lower-cased, its lines trimmed and joined
    with ", " (what ``_header`` returns). Verification asks for a dozen headers; reading a
    starlette ``Headers`` that often costs more than the RSA check."""

    @classmethod
    def of(cls, headers: Headers) -> FieldLines:
        if isinstance(headers, FieldLines):
            return headers
        lines: dict[str, list[str]] = {}
        for key, value in headers.items():
            lines.setdefault(key.lower(), []).append(value.strip(" \t"))
        return cls((key, ", ".join(values)) for key, values in lines.items())


def _header(headers: Headers, name: str) -> str | None:
    """All field lines of ``name`` (case-insensitively), each trimmed, joined with ", ".

    Iterating ``items()`` rather than indexing: starlette's ``Headers`` lists every field line
    there (``headers[name]`` would return only the first), httpx's ``Headers`` pre-joins them,
    and a plain dict may use any capitalisation.
    """
    wanted = name.lower()
    if isinstance(headers, FieldLines):
        return headers.get(wanted)
    values = [value.strip(" \t") for key, value in headers.items() if key.lower() == wanted]
    if not values:
        return None
    return ", ".join(values)


def _as_utc(moment: datetime) -> datetime:
    # A naive datetime is taken to be UTC (the HTTP-date and the created/expires
    # parameters are all UTC).
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _http_date(now: datetime) -> str:
    """RFC 9110 IMF-fixdate, e.g. ``Sat, 28 Nov 2026 12:00:00 GMT``."""
    return format_datetime(_as_utc(now).replace(microsecond=0), usegmt=True)


def _timestamp(value: int, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _Fail(f"invalid {what} time") from exc


def _check_window(moment: datetime, now: datetime, window: timedelta, what: str) -> None:
    if abs(moment - now) > window:
        raise _Fail(f"{what} outside the accepted window")


def _check_expires(expires: datetime, now: datetime) -> None:
    if expires < now:
        raise _Fail("signature has expired")


def _encode_base(text: str) -> bytes:
    """Bytes that were signed.

    ASGI servers (uvicorn, hence starlette) decode header bytes as latin-1, so encoding back
    with latin-1 restores exactly what was on the wire when a covered header (User-Agent,
    say) carries UTF-8. Text that is not latin-1-encodable can only have come from a caller
    building str headers itself; UTF-8 is the best guess there.
    """
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _no_line_breaks(value: str) -> str:
    # A CR/LF inside a value could forge extra lines in the signing string / signature base.
    if "\n" in value or "\r" in value:
        raise _Fail("header value contains a line break")
    return value


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Fail(f"malformed {what}") from exc


def _verify_bytes(key: PublicKey, alg: _Alg, signature: bytes, data: bytes) -> bool:
    try:
        if alg == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(signature, data)
            return True
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        if alg == "rsa-v1_5-sha256":
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            # RFC 9421 §3.3.1 fixes the salt at 64 bytes; AUTO also accepts signers that
            # used another salt length (e.g. the "maximum" default of some libraries).
            key.verify(
                signature,
                data,
                padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=padding.PSS.AUTO),
                hashes.SHA512(),
            )
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def _sign_bytes(private_key: PrivateKey, data: bytes) -> bytes:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(data)


def _split_target(target: str) -> tuple[str, str | None]:
    """(path, query or None) of a request target in origin-form or absolute-form."""
    if not target.startswith("/") and "://" in target:
        # absolute-form (RFC 9112 §3.2.2), normally only sent to proxies.
        parts = urlsplit(target)
        return (parts.path or "/"), (parts.query if "?" in target else None)
    # Not urlsplit for origin-form: it would read "//host/x" as an authority.
    path, mark, query = target.partition("?")
    return (path or "/"), (query if mark else None)


def _body_needs_digest(method: str, body: bytes, require_body_digest: bool) -> bool:
    return require_body_digest and (method.upper() == "POST" or len(body) > 0)


# --------------------------------------------------------------------------------------------
# draft-cavage-http-signatures-12


@dataclass(frozen=True)
class _CavageSignature:
    key_id: str
    algorithm: str | None
    covered: tuple[str, ...]
    signature: str
    created: str | None
    expires: str | None


# One `name="value"` or `name=123` pair and the comma after it. No backslash escapes: the
# draft has none and no fediverse server emits them.
_CAVAGE_PARAM_RE = re.compile(
    r"[ \t]*([A-Za-z][A-Za-z0-9_-]*)[ \t]*=[ \t]*"  # name =
    r'(?:"([^"]*)"|([^",\s]*))'  # "quoted" or bare (created=1700000000)
    r"[ \t]*(?:,|\Z)"
)
_AUTHORIZATION_RE = re.compile(r"[ \t]*signature[ \t]+(.*)\Z", re.IGNORECASE | re.DOTALL)
_CAVAGE_INTEGER_RE = re.compile(r"[0-9]{1,15}\Z")


def _cavage_header_value(headers: Headers) -> str | None:
    value = _header(headers, "signature")
    if value is not None:
        return value
    # draft-cavage §3.1 also defines `Authorization: Signature <params>`.
    authorization = _header(headers, "authorization")
    if authorization is not None:
        match = _AUTHORIZATION_RE.match(authorization)
        if match:
            return match.group(1)
    return None


def _parse_cavage(value: str) -> _CavageSignature:
    params: dict[str, str] = {}
    value = value.strip()
    position = 0
    while position < len(value):
        match = _CAVAGE_PARAM_RE.match(value, position)
        if match is None:
            raise _Fail("malformed Signature header")
        # Parameter names are case-sensitive in the draft (keyId), but some senders write
        # `keyid`; accepting either costs nothing.
        name = match.group(1).lower()
        if name in params:
            raise _Fail("malformed Signature header")  # duplicates are ambiguous
        quoted, bare = match.group(2), match.group(3)
        params[name] = quoted if quoted is not None else bare
        position = match.end()
    key_id = params.get("keyid")
    if not key_id:
        raise _Fail("signature has no keyId")
    signature = params.get("signature")
    if not signature:
        raise _Fail("signature has no signature value")
    # `headers` defaults to "date" per the draft (§2.1.6); such a signature then fails the
    # coverage rules below, which is the point.
    covered = tuple(params.get("headers", "date").lower().split())
    if not covered:
        raise _Fail("signature covers no headers")
    for name in covered:
        if not (name.startswith("(") or _FIELD_NAME_RE.match(name)):
            raise _Fail("malformed headers parameter")
    for name in ("created", "expires"):
        if name in params and not _CAVAGE_INTEGER_RE.match(params[name]):
            raise _Fail(f"malformed {name} parameter")
    algorithm = params.get("algorithm")
    return _CavageSignature(
        key_id=key_id,
        algorithm=algorithm.lower() if algorithm is not None else None,
        covered=covered,
        signature=signature,
        created=params.get("created"),
        expires=params.get("expires"),
    )


def _cavage_algorithms(algorithm: str | None, key: PublicKey) -> tuple[_Alg, ...]:
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    if algorithm == "rsa-sha256":
        if not is_rsa:
            raise _Fail("algorithm does not match key type")
        return ("rsa-v1_5-sha256",)
    if algorithm == "ed25519":
        if is_rsa:
            raise _Fail("algorithm does not match key type")
        return ("ed25519",)
    if algorithm in (None, "hs2019"):
        # hs2019 means "derive it from the key". GoToSocial (see its docs, "HTTP Signatures")
        # sends hs2019 with RSA keys but signs RSASSA-PKCS1-v1_5/SHA-256, and Mastodon's
        # verifier reads hs2019 that way; the draft itself suggests RSASSA-PSS/SHA-512, so
        # that is tried second. (Mastodon itself sends rsa-sha256.)
        if is_rsa:
            return ("rsa-v1_5-sha256", "rsa-pss-sha512")
        return ("ed25519",)
    # rsa-sha1 is broken; hmac-* needs a shared secret that ActivityPub never has.
    raise _Fail("unsupported signature algorithm")


def _check_cavage_digest(value: str, body: bytes) -> None:
    """``Digest: SHA-256=<b64>[, SHA-512=<b64>]``: every listed digest we know must match."""
    matched = False
    for entry in value.split(","):
        name, equals, encoded = entry.strip().partition("=")
        algorithm = name.strip().lower()  # "SHA-256" (RFC 3230) and "sha-256" both occur
        compute = _DIGESTS.get(algorithm)
        if not equals or compute is None:
            continue
        expected = _b64decode(encoded, "Digest header")
        if not hmac.compare_digest(expected, compute(body)):
            raise _Fail("Digest does not match body")
        matched = True
    if not matched:
        raise _Fail("Digest has no SHA-256 or SHA-512 value")


def _same_host(signed: str, expected: str) -> bool:
    """Host[:port] equality, case-insensitive, with a default port written or not."""

    def bare(value: str) -> str:
        value = value.strip().lower()
        for default in (":443", ":80"):
            if value.endswith(default):
                return value[: -len(default)]
        return value

    return bare(signed) == bare(expected)


def _check_host(signed: str | None, expected_host: str | None) -> None:
    # A request signed for another server's inbox must not replay here.
    if expected_host is not None and (signed is None or not _same_host(signed, expected_host)):
        raise _Fail("signed Host is not this server")


def _prepare_cavage(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    now: datetime,
    window: timedelta,
    require_body_digest: bool,
    authority: str | None,
    expected_host: str | None,
) -> tuple[_CavageSignature, list[list[str]]]:
    """Every check that needs no key, and the signing strings to try."""
    value = _cavage_header_value(headers)
    if value is None:
        raise _Fail("missing signature")
    sig = _parse_cavage(value)
    covered = sig.covered

    if "(request-target)" not in covered:
        raise _Fail("signature must cover (request-target)")
    if "host" not in covered:
        raise _Fail("signature must cover host")
    if "date" not in covered and "(created)" not in covered:
        raise _Fail("signature must cover date or (created)")
    # Digest (RFC 3230) or its successor Content-Digest (RFC 9530): bovine, among others,
    # can be set to send the latter with a draft-cavage signature.
    if _body_needs_digest(method, body, require_body_digest) and not {
        "digest",
        "content-digest",
    } & set(covered):
        raise _Fail("signature must cover digest")

    # Freshness: every covered time source must be within the window.
    if "date" in covered:
        date_value = _header(headers, "date")
        if date_value is None:
            raise _Fail("missing Date header")
        try:
            date = _as_utc(parsedate_to_datetime(date_value))
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            raise _Fail("invalid Date header") from exc
        _check_window(date, now, window, "Date header")
    if "(created)" in covered:
        if sig.created is None:
            raise _Fail("(created) covered but created parameter missing")
        _check_window(
            _timestamp(int(sig.created), "created"), now, window, "signature created time"
        )
    if sig.expires is not None:
        _check_expires(_timestamp(int(sig.expires), "expires"), now)

    # A covered Digest is always checked, even when not required: it is what binds the body.
    if "digest" in covered:
        digest_value = _header(headers, "digest")
        if digest_value is None:
            raise _Fail("covered header digest missing")
        _check_cavage_digest(digest_value, body)
    if "content-digest" in covered:
        content_digest = _header(headers, "content-digest")
        if content_digest is None:
            raise _Fail("covered header content-digest missing")
        _check_content_digest(content_digest, body)

    # (request-target) candidates. Fedify (signRequestDraft uses url.pathname) and older
    # Mastodon versions sign the path without the query string; Mastodon's own verifier
    # retries without it for that reason. The query is then unsigned, as it is for them.
    path, query = _split_target(target)
    targets = [target] if query is None else [target, path]
    lines_per_candidate: list[list[str]] = []
    for request_target in targets:
        lines: list[str] = []
        for name in covered:
            if name == "(request-target)":
                line_value = f"{method.lower()} {request_target}"
            elif name == "(created)":
                line_value = sig.created or ""
            elif name == "(expires)":
                if sig.expires is None:
                    raise _Fail("(expires) covered but expires parameter missing")
                line_value = sig.expires
            elif name.startswith("("):
                raise _Fail("unsupported pseudo-header in signature")
            else:
                header_value = _header(headers, name)
                if header_value is None and name == "host":
                    header_value = authority
                if header_value is None:
                    raise _Fail(f"covered header {name} missing")
                line_value = header_value
            lines.append(f"{name}: {_no_line_breaks(line_value)}")
        lines_per_candidate.append(lines)
    _check_host(_header(headers, "host") or authority, expected_host)
    return sig, lines_per_candidate


# --------------------------------------------------------------------------------------------
# RFC 9421


@dataclass(frozen=True)
class _Rfc9421Signature:
    label: str
    key_id: str
    components: tuple[str, ...]
    alg: str | None
    created: int | None
    expires: int | None
    params_texts: tuple[str, ...]  # candidate serialisations for "@signature-params"
    signature: bytes


def _reject_duplicate(key: str, context: str) -> None:
    # RFC 8941 says "last one wins", but for signatures a repeated label or parameter is
    # ambiguous (and would make the received text differ from what we parsed), so refuse.
    raise ValueError(f"duplicate {context} key {key!r}")


def _parse_dictionary(value: str, what: str) -> http_sf.DictionaryType:
    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=_reject_duplicate
        )
    except (ValueError, TypeError, KeyError) as exc:  # StructuredFieldError is a ValueError
        raise _Fail(f"malformed {what} header") from exc
    if not isinstance(parsed, dict):
        raise _Fail(f"malformed {what} header")
    return parsed


def _split_dictionary_members(value: str) -> Iterator[tuple[str, str]]:
    """(key, member text) pairs of an already *validated* Structured Field dictionary.

    In a valid dictionary a comma is either a member separator or inside a quoted string
    (tokens, integers and :byte sequences: never contain one), so a quote-aware split finds
    the members with their text exactly as received.
    """
    start, in_string, escaped = 0, False, False
    for index, char in enumerate(value + ","):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == ",":
            member = value[start:index].strip(" \t")
            key, _, text = member.partition("=")
            yield key, text
            start = index + 1


def _parse_rfc9421(signature_input: str, signature_value: str) -> _Rfc9421Signature:
    inputs = _parse_dictionary(signature_input, "Signature-Input")
    signatures = _parse_dictionary(signature_value, "Signature")
    # Take the first Signature-Input label that also has a Signature. Fedify sends one
    # signature ("sig1"); a proxy could add its own, which we do not need.
    label = next((name for name in inputs if name in signatures), None)
    if label is None:
        raise _Fail("Signature-Input and Signature labels do not match")

    member = inputs[label]
    if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], list)):
        raise _Fail("malformed Signature-Input header")
    items, params = member[0], member[1]

    components: list[str] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise _Fail("malformed Signature-Input header")
        name, item_params = item
        if not isinstance(name, str):  # a Token or number is not a component identifier
            raise _Fail("malformed Signature-Input header")
        if item_params:
            # ;sf ;key ;bs ;req ;tr ;name are not used by fediverse software yet.
            raise _Fail("unsupported component parameter")
        if not (name in _DERIVED_COMPONENTS or _FIELD_NAME_RE.match(name)):
            raise _Fail("unsupported component in signature")
        if name in components:
            raise _Fail("duplicate component in signature")
        components.append(name)

    signature_member = signatures[label]
    if not (
        isinstance(signature_member, tuple)
        and len(signature_member) == 2
        and isinstance(signature_member[0], bytes)
    ):
        raise _Fail("malformed Signature header")

    key_id = params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise _Fail("signature has no keyid")
    alg = params.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise _Fail("malformed alg parameter")
    created = params.get("created")
    expires = params.get("expires")
    for time_value, name in ((created, "created"), (expires, "expires")):
        # type() rather than isinstance(): a Structured Field boolean is a Python bool.
        if time_value is not None and type(time_value) is not int:
            raise _Fail(f"malformed {name} parameter")

    # "@signature-params" is the serialised inner list with its parameters. RFC 9421 §2.3
    # defines it as the canonical serialisation; taking the text exactly as received first
    # also accepts signers whose serialisation is not canonical (extra spaces, etc.). Both
    # parse to the same structure, so neither can smuggle in anything we did not check.
    texts: list[str] = []
    for key, text in _split_dictionary_members(signature_input):
        if key == label:
            texts.append(text)
            break
    canonical = http_sf.ser({label: member})[len(label) + 1 :]
    if canonical not in texts:
        texts.append(canonical)

    return _Rfc9421Signature(
        label=label,
        key_id=key_id,
        components=tuple(components),
        alg=alg,
        created=created if isinstance(created, int) else None,
        expires=expires if isinstance(expires, int) else None,
        params_texts=tuple(texts),
        signature=signature_member[0],
    )


def _rfc9421_algorithm(alg: str | None, key: PublicKey) -> _Alg:
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    if alg is None:
        return "rsa-v1_5-sha256" if is_rsa else "ed25519"
    if alg in ("rsa-v1_5-sha256", "rsa-pss-sha512"):
        if not is_rsa:
            raise _Fail("algorithm does not match key type")
        return "rsa-v1_5-sha256" if alg == "rsa-v1_5-sha256" else "rsa-pss-sha512"
    if alg == "ed25519":
        if is_rsa:
            raise _Fail("algorithm does not match key type")
        return "ed25519"
    raise _Fail("unsupported signature algorithm")


def _check_content_digest(value: str, body: bytes) -> None:
    """RFC 9530 ``Content-Digest``: every listed sha-256/sha-512 digest must match."""
    digests = _parse_dictionary(value, "Content-Digest")
    matched = False
    for algorithm, member in digests.items():
        compute = _DIGESTS.get(algorithm)
        if compute is None:
            continue
        if not (isinstance(member, tuple) and isinstance(member[0], bytes)):
            raise _Fail("malformed Content-Digest header")
        if not hmac.compare_digest(member[0], compute(body)):
            raise _Fail("Content-Digest does not match body")
        matched = True
    if not matched:
        raise _Fail("Content-Digest has no sha-256 or sha-512 value")


def _rfc9421_base(lines: Sequence[tuple[str, str]], params_text: str) -> str:
    """RFC 9421 §2.5: one ``"<component>": <value>`` line each, then ``"@signature-params"``.

    Component names here are plain (no parameters) and restricted to token characters or
    a known derived name, so quoting them needs no escaping.
    """
    out = [f'"{name}": {_no_line_breaks(value)}' for name, value in lines]
    out.append(f'"@signature-params": {params_text}')
    return "\n".join(out)


def _prepare_rfc9421(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    now: datetime,
    window: timedelta,
    require_body_digest: bool,
    authority: str | None,
    expected_host: str | None,
    signature_input: str,
    signature_value: str,
) -> tuple[_Rfc9421Signature, list[bytes]]:
    """Every check that needs no key, and the signature bases to try."""
    sig = _parse_rfc9421(signature_input, signature_value)
    covered = sig.components

    if "@method" not in covered:
        raise _Fail("signature must cover @method")
    if "@target-uri" not in covered and not (
        "@authority" in covered and ("@path" in covered or "@request-target" in covered)
    ):
        raise _Fail("signature must cover @target-uri or @authority and @path")
    if _body_needs_digest(method, body, require_body_digest) and "content-digest" not in covered:
        raise _Fail("signature must cover content-digest")

    if sig.created is None:
        raise _Fail("signature has no created time")
    _check_window(_timestamp(sig.created, "created"), now, window, "signature created time")
    if sig.expires is not None:
        _check_expires(_timestamp(sig.expires, "expires"), now)

    if "content-digest" in covered:
        digest_value = _header(headers, "content-digest")
        if digest_value is None:
            raise _Fail("covered header content-digest missing")
        _check_content_digest(digest_value, body)

    host = _header(headers, "host") or authority
    host = host.lower() if host else None
    path, query = _split_target(target)
    absolute_target = "://" in target and not target.startswith("/")

    def values(name: str, scheme: str) -> list[str]:
        if name == "@method":
            return [method]
        if name == "@scheme":
            return [scheme]
        if name in ("@authority", "@target-uri"):
            if name == "@target-uri" and absolute_target:
                return [target]
            if not host:
                raise _Fail("missing Host header")
            return [host] if name == "@authority" else [f"{scheme}://{host}{target}"]
        if name == "@path":
            return [path]
        if name == "@query":
            # RFC 9421 §2.2.7: "?" plus the query, "?" alone when there is none. Fedify's
            # derivedComponents return url.search without the "?" (so "" when absent).
            return ["?" + (query or ""), query or ""]
        if name == "@request-target":
            # Fedify's derivedComponents build it draft-cavage style ("post /inbox")
            # rather than RFC 9421 §2.2.5's bare "/inbox".
            return [target, f"{method.lower()} {target}"]
        header_value = _header(headers, name)
        if header_value is None:
            raise _Fail(f"covered header {name} missing")
        return [header_value]

    if "@target-uri" in covered and absolute_target:
        _check_host(urlsplit(target).netloc, expected_host)
    else:
        _check_host(host, expected_host)

    # We sit behind a TLS-terminating proxy, so the scheme the signer saw is not knowable
    # from the request itself: https is what remotes use, http is tried for the rest.
    schemes = ("https", "http") if {"@target-uri", "@scheme"} & set(covered) else ("https",)
    bases: list[bytes] = []
    for scheme in schemes:
        per_component = [values(name, scheme) for name in covered]
        for combination in itertools.product(*per_component):
            for params_text in sig.params_texts:
                base = _rfc9421_base(list(zip(covered, combination, strict=True)), params_text)
                bases.append(_encode_base(base))
    return sig, bases


# --------------------------------------------------------------------------------------------
# Public entry points: incoming


def _rfc9421_headers(headers: Headers) -> tuple[str, str] | None:
    # Both headers present means RFC 9421; a lone `Signature` is draft-cavage's header of
    # the same name.
    signature_input = _header(headers, "signature-input")
    signature = _header(headers, "signature")
    if signature_input is None or signature is None:
        return None
    return signature_input, signature


def parse_signature(headers: Headers) -> SignatureInfo | Rejected:
    """Which scheme signed the request and with which key id; never raises.

    RFC 9421 (Signature-Input + Signature) is preferred when present, else draft-cavage's
    ``Signature`` header, else ``Authorization: Signature ...``.
    """
    try:
        rfc9421 = _rfc9421_headers(headers)
        if rfc9421 is not None:
            return SignatureInfo(scheme="rfc9421", key_id=_parse_rfc9421(*rfc9421).key_id)
        value = _cavage_header_value(headers)
        if value is None:
            return Rejected("missing signature")
        return SignatureInfo(scheme="draft-cavage", key_id=_parse_cavage(value).key_id)
    except _Fail as fail:
        return Rejected(fail.reason)
    except Exception:
        return Rejected("malformed signature")


def _prepare(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    now: datetime,
    window: timedelta,
    require_body_digest: bool,
    authority: str | None,
    expected_host: str | None,
) -> Callable[[PublicKey], Verified]:
    """Every check that needs no key, then a function that checks the signature with one."""
    now = _as_utc(now)
    rfc9421 = _rfc9421_headers(headers)
    if rfc9421 is not None:
        sig9421, bases = _prepare_rfc9421(
            method,
            target,
            headers,
            body,
            now,
            window,
            require_body_digest,
            authority,
            expected_host,
            *rfc9421,
        )

        def check_rfc9421(public_key: PublicKey) -> Verified:
            alg = _rfc9421_algorithm(sig9421.alg, public_key)
            for base in bases:
                if _verify_bytes(public_key, alg, sig9421.signature, base):
                    return Verified(key_id=sig9421.key_id, scheme="rfc9421")
            raise _Fail("signature verification failed")

        return check_rfc9421
    sig, lines_per_candidate = _prepare_cavage(
        method, target, headers, body, now, window, require_body_digest, authority, expected_host
    )

    def check_cavage(public_key: PublicKey) -> Verified:
        algorithms = _cavage_algorithms(sig.algorithm, public_key)
        signature = _b64decode(sig.signature, "signature value")
        for lines in lines_per_candidate:
            data = _encode_base("\n".join(lines))
            for alg in algorithms:
                if _verify_bytes(public_key, alg, signature, data):
                    return Verified(key_id=sig.key_id, scheme="draft-cavage")
        raise _Fail("signature verification failed")

    return check_cavage


def prepare_request(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    *,
    now: datetime,
    window: timedelta,
    require_body_digest: bool = True,
    authority: str | None = None,
    expected_host: str | None = None,
) -> Rejected | Callable[[PublicKey], Verified | Rejected]:
    """Every check that needs no key first (Rejected if one fails), then a function that
    checks the signature with a key, as many keys as the caller has to try; never raises.

    So a request whose Date is out of the window, whose digest does not match its body,
    whose signature does not cover what it must or was made for another host costs no key
    lookup and no request to the signer's server."""
    try:
        check = _prepare(
            method,
            target,
            FieldLines.of(headers),
            body,
            now,
            window,
            require_body_digest,
            authority,
            expected_host,
        )
    except _Fail as fail:
        return Rejected(fail.reason)
    except Exception:
        return Rejected("malformed signature")

    def verify(public_key: PublicKey) -> Verified | Rejected:
        try:
            return check(public_key)
        except _Fail as fail:
            return Rejected(fail.reason)
        except Exception:
            # Fail closed on anything unforeseen in hostile input.
            return Rejected("malformed signature")

    return verify


def verify_request(
    method: str,
    target: str,
    headers: Headers,
    body: bytes,
    *,
    public_key: PublicKey,
    now: datetime,
    window: timedelta,
    require_body_digest: bool = True,
    authority: str | None = None,
    expected_host: str | None = None,
) -> Verified | Rejected:
    """Check the request's signature against ``public_key``; never raises.

    ``target`` is the request target exactly as received (path plus ``?query``); ``body`` the
    exact received bytes. ``authority`` (host[:port]) stands in for a missing Host header;
    ``expected_host``, when given, is the only Host the signature may have been made for.
    The caller must still check that the returned ``key_id`` belongs to the actor the
    activity claims to come from.
    """
    prepared = prepare_request(
        method,
        target,
        headers,
        body,
        now=now,
        window=window,
        require_body_digest=require_body_digest,
        authority=authority,
        expected_host=expected_host,
    )
    return prepared if isinstance(prepared, Rejected) else prepared(public_key)


# --------------------------------------------------------------------------------------------
# Public entry points: outgoing


def _url_parts(url: str) -> tuple[str, str, str]:
    """(scheme, authority, target) exactly as httpx will put them on the wire.

    httpx lower-cases and IDNA-encodes the host, drops a default port and percent-encodes
    the path; using its parser keeps the signed Host and (request-target) identical to what
    is sent.
    """
    parsed = httpx.URL(url)
    if not parsed.host:
        raise ValueError("URL has no host")
    return parsed.scheme, parsed.netloc.decode("ascii"), parsed.raw_path.decode("ascii")


def _check_key_id(key_id: str) -> None:
    if not key_id or '"' in key_id or "\n" in key_id or "\r" in key_id or not key_id.isascii():
        raise ValueError("key_id must be non-empty ASCII without quotes or line breaks")


def sign_request(
    method: str,
    url: str,
    headers: Headers,
    body: bytes | None,
    *,
    key_id: str,
    private_key: PrivateKey,
    now: datetime,
) -> dict[str, str]:
    """draft-cavage signature; returns the headers to set (Date, Host, Digest, Signature).

    Covers ``(request-target) host date digest`` with a body, ``(request-target) host date``
    (plus ``accept`` when ``headers`` has one) without: the set Mastodon requires.
    """
    _check_key_id(key_id)
    _, host, target = _url_parts(url)
    date = _http_date(now)
    out = {"Date": date, "Host": host}
    lines = [("(request-target)", f"{method.lower()} {target}"), ("host", host), ("date", date)]
    if body is not None:
        digest = digest_header(body)
        out["Digest"] = digest
        lines.append(("digest", digest))
    else:
        accept = _header(headers, "accept")
        if accept is not None:
            lines.append(("accept", accept))
    signing_string = "\n".join(f"{name}: {value}" for name, value in lines)
    signature = base64.b64encode(_sign_bytes(private_key, _encode_base(signing_string)))
    # hs2019 for Ed25519: "rsa-sha256" would be a lie, and Mastodon's parser only knows
    # rsa-sha256 and hs2019.
    algorithm = "rsa-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "hs2019"
    covered = " ".join(name for name, _ in lines)
    out["Signature"] = (
        f'keyId="{key_id}",algorithm="{algorithm}",headers="{covered}",'
        f'signature="{signature.decode("ascii")}"'
    )
    return out


def sign_request_rfc9421(
    method: str,
    url: str,
    headers: Headers,
    body: bytes | None,
    *,
    key_id: str,
    private_key: PrivateKey,
    now: datetime,
    label: str = "sig1",
) -> dict[str, str]:
    """RFC 9421 signature; returns Signature-Input, Signature and (with a body) Content-Digest.

    Covers ``"@method" "@target-uri" "@authority"`` (+ ``"content-digest"``) with the
    parameters created, keyid and alg. The Host header httpx sends equals ``@authority``.
    """
    _check_key_id(key_id)
    scheme, host, target = _url_parts(url)
    lines = [
        ("@method", method.upper()),
        ("@target-uri", f"{scheme}://{host}{target}"),
        ("@authority", host),
    ]
    out: dict[str, str] = {}
    if body is not None:
        content_digest = content_digest_header(body)
        out["Content-Digest"] = content_digest
        lines.append(("content-digest", content_digest))
    alg = "rsa-v1_5-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "ed25519"
    inner_list: http_sf.InnerListType = (
        [(name, {}) for name, _ in lines],
        {"created": int(_as_utc(now).timestamp()), "keyid": key_id, "alg": alg},
    )
    signature_input = http_sf.ser({label: inner_list})  # raises ValueError for a bad label
    params_text = signature_input[len(label) + 1 :]
    base = _rfc9421_base(lines, params_text)
    signature = _sign_bytes(private_key, base.encode("ascii"))
    out["Signature-Input"] = signature_input
    out["Signature"] = http_sf.ser({label: (signature, {})})
    return out
