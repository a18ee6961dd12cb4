"""The test peer's own draft-cavage HTTP signatures, the way Mastodon does them.

Deliberately independent of server/: only `cryptography` primitives are shared.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

POST_HEADERS = "(request-target) host date digest"
GET_HEADERS = "(request-target) host date accept"

_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^",\s]*))\s*(,|$)')


def http_date(when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return format_datetime(when.astimezone(UTC), usegmt=True)


def digest(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def _target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = parts.path or "/"
    return parts.netloc.rpartition("@")[2], path + (f"?{parts.query}" if parts.query else "")


def signing_string(
    covered: list[str],
    method: str,
    target: str,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> str:
    """Lines "name: value" joined by "\\n"; headers must be a lowercase-keyed mapping."""
    lines = []
    for name in covered:
        if name == "(request-target)":
            value = f"{method.lower()} {target}"
        elif name in ("(created)", "(expires)"):
            value = (params or {})[name[1:-1]]
        else:
            value = headers[name]
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    key_id: str,
    private_key: rsa.RSAPrivateKey,
    date: datetime | None = None,
) -> dict[str, str]:
    """Headers to add to the request: Date, Host, Digest (with a body) and Signature."""
    host, target = _target(url)
    lower = {k.lower(): v for k, v in headers.items()}
    out = {"Date": http_date(date), "Host": host}
    if body is not None:
        out["Digest"] = digest(body)
    lower.update({k.lower(): v for k, v in out.items()})
    if method.upper() == "GET":
        covered = GET_HEADERS if "accept" in lower else "(request-target) host date"
    else:
        covered = POST_HEADERS if body is not None else "(request-target) host date"
    text = signing_string(covered.split(), method, target, lower)
    sig = private_key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    out["Signature"] = (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{covered}",'
        f'signature="{base64.b64encode(sig).decode()}"'
    )
    return out


def parse_signature_header(value: str) -> dict[str, str]:
    """Parse `k="v",k2="v2"` (unquoted values allowed, e.g. created=123). ValueError on junk."""
    params: dict[str, str] = {}
    pos = 0
    while pos < len(value):
        m = _PARAM.match(value, pos)
        if not m or m.end() == pos:
            raise ValueError(f"malformed Signature header at {pos}: {value[pos : pos + 20]!r}")
        key, quoted, bare, _sep = m.groups()
        params[key] = quoted if quoted is not None else bare
        pos = m.end()
    return params


def _digest_ok(header: str, body: bytes) -> bool:
    for part in header.split(","):
        algo, _, value = part.strip().partition("=")
        if algo.lower() == "sha-256":
            return value == digest(body).partition("=")[2]
    return False


def verify(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    public_key_pem: str,
    *,
    now: datetime | float | None = None,
    window_seconds: int = 3600,
) -> tuple[bool, str]:
    """(ok, reason). `target` is the request path plus "?query" if any."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "signature" not in lower:
        return False, "missing Signature header"
    try:
        params = parse_signature_header(lower["signature"])
    except ValueError as exc:
        return False, str(exc)
    if not params.get("keyId") or not params.get("signature"):
        return False, "Signature header lacks keyId or signature"
    algorithm = params.get("algorithm")
    if algorithm is not None and algorithm.lower() not in ("rsa-sha256", "hs2019"):
        return False, f"unsupported algorithm {algorithm!r}"
    covered = params.get("headers", "date").lower().split()
    required = ["(request-target)", "host", "date"]
    if method.upper() == "POST" or body:
        required.append("digest")
    missing = [h for h in required if h not in covered]
    if missing:
        return False, f"signature does not cover {' '.join(missing)}"
    absent = [h for h in covered if not h.startswith("(") and h not in lower]
    if absent:
        return False, f"covered headers absent from request: {' '.join(absent)}"
    if "digest" in lower and not _digest_ok(lower["digest"], body):
        return False, "Digest does not match body"
    try:
        sent = parsedate_to_datetime(lower["date"])
    except (TypeError, ValueError):
        return False, f"unparseable Date {lower['date']!r}"
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    if now is None:
        now = datetime.now(UTC)
    now_ts = now if isinstance(now, int | float) else now.timestamp()
    if abs(now_ts - sent.timestamp()) > window_seconds:
        return False, f"Date {lower['date']!r} outside the {window_seconds}s window"
    try:
        key: Any = serialization.load_pem_public_key(public_key_pem.encode())
        raw = base64.b64decode(params["signature"], validate=True)
    except ValueError as exc:
        return False, f"bad key or signature encoding: {exc}"
    if not isinstance(key, rsa.RSAPublicKey):
        return False, "public key is not RSA"
    try:
        text = signing_string(covered, method, target, lower, params)
        key.verify(raw, text.encode(), padding.PKCS1v15(), hashes.SHA256())
    except KeyError as exc:
        return False, f"missing signature parameter {exc}"
    except InvalidSignature:
        return False, "signature does not verify"
    return True, "ok"
