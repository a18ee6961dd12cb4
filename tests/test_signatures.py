"""HTTP signatures: round trips, independent vectors, tampering, and hostile input."""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from starlette.datastructures import Headers as StarletteHeaders

from server.activitypub.signatures import (
    PrivateKey,
    PublicKey,
    Rejected,
    SignatureInfo,
    Verified,
    content_digest_header,
    digest_header,
    generate_private_key_pem,
    load_private_key,
    load_public_key,
    parse_signature,
    sign_request,
    sign_request_rfc9421,
    verify_request,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW_DATE = "Sat, 28 Nov 2026 12:00:00 GMT"
NOW_TS = 1795867200
WINDOW = timedelta(minutes=5)
KEY_ID = "https://remote.example/users/alice#main-key"
INBOX = "https://example.org/inbox"
BODY = b'{"type":"Create","actor":"https://remote.example/users/alice"}'
# Computed independently of the module (and re-checked in test_digest_helpers).
BODY_SHA256 = "AC7gtjXpGRqNA0W/OjuW00vf7OpA31GbjSlSZnsHH34="


@dataclass(frozen=True)
class Keys:
    rsa: PrivateKey
    rsa_public: PublicKey
    other_rsa: PrivateKey
    other_rsa_public: PublicKey
    ed: ed25519.Ed25519PrivateKey
    ed_public: ed25519.Ed25519PublicKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    private_pem, public_pem = generate_private_key_pem()
    other_private_pem, other_public_pem = generate_private_key_pem()
    rsa_public = load_public_key(public_pem)
    other_public = load_public_key(other_public_pem)
    assert rsa_public is not None and other_public is not None
    ed = ed25519.Ed25519PrivateKey.generate()
    return Keys(
        rsa=load_private_key(private_pem),
        rsa_public=rsa_public,
        other_rsa=load_private_key(other_private_pem),
        other_rsa_public=other_public,
        ed=ed,
        ed_public=ed.public_key(),
    )


# ---- helpers --------------------------------------------------------------------------------


def verify(
    method: str,
    target: str,
    headers: dict[str, str] | httpx.Headers | StarletteHeaders,
    body: bytes,
    key: PublicKey,
    **kwargs: object,
) -> Verified | Rejected:
    options: dict[str, object] = {"now": NOW, "window": WINDOW}
    options.update(kwargs)
    return verify_request(method, target, headers, body, public_key=key, **options)  # type: ignore[arg-type]


def assert_rejected(result: Verified | Rejected, fragment: str) -> None:
    assert isinstance(result, Rejected), result
    assert fragment.lower() in result.reason.lower(), result.reason


def sign_raw(key: PrivateKey, data: str) -> str:
    """Sign with `cryptography` directly, bypassing the module under test."""
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(data.encode())
    return base64.b64encode(signature).decode()


def cavage(
    key: PrivateKey,
    signing_string: str,
    covered: str,
    *,
    algorithm: str | None = "rsa-sha256",
    extra: str = "",
    key_id: str = KEY_ID,
) -> str:
    """A draft-cavage Signature header value over a hand-written signing string."""
    parts = [f'keyId="{key_id}"']
    if algorithm is not None:
        parts.append(f'algorithm="{algorithm}"')
    parts.append(f'headers="{covered}"')
    if extra:
        parts.append(extra)
    parts.append(f'signature="{sign_raw(key, signing_string)}"')
    return ",".join(parts)


def mastodon_post_headers(
    key: PrivateKey,
    *,
    date: str = NOW_DATE,
    algorithm: str | None = "rsa-sha256",
) -> dict[str, str]:
    signing_string = (
        "(request-target): post /inbox\n"
        "host: example.org\n"
        f"date: {date}\n"
        f"digest: SHA-256={BODY_SHA256}"
    )
    return {
        "Host": "example.org",
        "Date": date,
        "Digest": f"SHA-256={BODY_SHA256}",
        "Content-Type": "application/activity+json",
        "Signature": cavage(
            key, signing_string, "(request-target) host date digest", algorithm=algorithm
        ),
    }


def signed_post(key: PrivateKey, url: str = INBOX, body: bytes = BODY) -> dict[str, str]:
    headers = {"Content-Type": "application/activity+json"}
    headers.update(
        sign_request("POST", url, headers, body, key_id=KEY_ID, private_key=key, now=NOW)
    )
    return headers


def signed_post_rfc9421(key: PrivateKey, url: str = INBOX, body: bytes = BODY) -> dict[str, str]:
    host = httpx.URL(url).netloc.decode()
    headers = {"Host": host, "Content-Type": "application/activity+json"}
    headers.update(
        sign_request_rfc9421("POST", url, headers, body, key_id=KEY_ID, private_key=key, now=NOW)
    )
    return headers


def fedify_style_rfc9421(
    key: PrivateKey,
    *,
    created: int = NOW_TS,
    extra_params: str = "",
    scheme: str = "https",
    digest: str = f"sha-256=:{BODY_SHA256}:",
    components: str = '"@method" "@target-uri" "@authority" "host" "date" "content-digest"',
) -> dict[str, str]:
    """What Fedify 2.x sends, with the signature base written out by hand."""
    params = f'({components});alg="rsa-v1_5-sha256";keyid="{KEY_ID}";created={created}'
    params += extra_params
    lines = {
        "@method": "POST",
        "@target-uri": f"{scheme}://example.org/inbox",
        "@authority": "example.org",
        "host": "example.org",
        "date": NOW_DATE,
        "content-digest": digest,
    }
    names = [name.strip('"') for name in components.split()]
    base = "".join(f'"{name}": {lines[name]}\n' for name in names)
    base += f'"@signature-params": {params}'
    return {
        "Host": "example.org",
        "Date": NOW_DATE,
        "Content-Digest": digest,
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{sign_raw(key, base)}:",
    }


# ---- keys and digests -----------------------------------------------------------------------


def test_digest_helpers() -> None:
    assert base64.b64encode(hashlib.sha256(BODY).digest()).decode() == BODY_SHA256
    assert digest_header(BODY) == f"SHA-256={BODY_SHA256}"
    assert content_digest_header(BODY) == f"sha-256=:{BODY_SHA256}:"
    assert digest_header(b"") == "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def test_generated_key_is_rsa_2048(keys: Keys) -> None:
    private_pem, public_pem = generate_private_key_pem()
    assert private_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    key = load_private_key(private_pem)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537


def test_load_public_key_formats(keys: Keys) -> None:
    assert isinstance(keys.rsa_public, rsa.RSAPublicKey)
    pkcs1 = keys.rsa_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    ).decode()
    assert pkcs1.startswith("-----BEGIN RSA PUBLIC KEY-----")
    assert isinstance(load_public_key(pkcs1), rsa.RSAPublicKey)
    ed_pem = keys.ed_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    assert isinstance(load_public_key("\n  " + ed_pem + "\n"), ed25519.Ed25519PublicKey)

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert load_public_key(ec_pem) is None  # not a key type we verify
    assert load_public_key("garbage") is None
    assert load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----") is None
    assert load_public_key("ключ") is None
    private_pem, _ = generate_private_key_pem()
    assert load_public_key(private_pem) is None


def test_load_private_key_rejects_other_types() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError):
        load_private_key(ec_pem)


# ---- draft-cavage round trips ---------------------------------------------------------------


def test_cavage_post_round_trip(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    assert headers["Date"] == NOW_DATE
    assert headers["Host"] == "example.org"
    assert headers["Digest"] == f"SHA-256={BODY_SHA256}"
    assert headers["Signature"].startswith(
        f'keyId="{KEY_ID}",algorithm="rsa-sha256",headers="(request-target) host date digest",'
    )
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public)
    assert result == Verified(key_id=KEY_ID, scheme="draft-cavage")


def test_cavage_get_round_trip(keys: Keys) -> None:
    url = "https://example.org/users/bob?page=true"
    out = sign_request("GET", url, {}, None, key_id=KEY_ID, private_key=keys.rsa, now=NOW)
    assert "Digest" not in out
    assert 'headers="(request-target) host date"' in out["Signature"]
    assert verify("GET", "/users/bob?page=true", out, b"", keys.rsa_public) == Verified(
        KEY_ID, "draft-cavage"
    )


def test_cavage_get_with_accept(keys: Keys) -> None:
    accept = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
    request_headers = {"accept": accept}
    out = sign_request(
        "GET", INBOX, request_headers, None, key_id=KEY_ID, private_key=keys.rsa, now=NOW
    )
    assert 'headers="(request-target) host date accept"' in out["Signature"]
    headers = {**out, "Accept": accept}
    assert isinstance(verify("GET", "/inbox", headers, b"", keys.rsa_public), Verified)
    # The Accept header is covered: changing it breaks the signature.
    headers["Accept"] = "text/html"
    assert_rejected(verify("GET", "/inbox", headers, b"", keys.rsa_public), "verification failed")


def test_cavage_ed25519_round_trip(keys: Keys) -> None:
    headers = signed_post(keys.ed)
    assert 'algorithm="hs2019"' in headers["Signature"]
    assert verify("POST", "/inbox", headers, BODY, keys.ed_public) == Verified(
        KEY_ID, "draft-cavage"
    )
    out = sign_request("GET", INBOX, {}, None, key_id=KEY_ID, private_key=keys.ed, now=NOW)
    assert isinstance(verify("GET", "/inbox", out, b"", keys.ed_public), Verified)


def test_cavage_host_keeps_non_default_port(keys: Keys) -> None:
    headers = signed_post(keys.rsa, url="https://Example.ORG:8443/inbox")
    assert headers["Host"] == "example.org:8443"
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)
    assert signed_post(keys.rsa, url="https://example.org:443/inbox")["Host"] == "example.org"


def test_cavage_case_insensitive_header_mappings(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    lowered = {name.lower(): value for name, value in headers.items()}
    assert isinstance(verify("POST", "/inbox", lowered, BODY, keys.rsa_public), Verified)
    as_httpx = httpx.Headers(headers)
    assert isinstance(verify("POST", "/inbox", as_httpx, BODY, keys.rsa_public), Verified)
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    as_starlette = StarletteHeaders(raw=raw)
    assert isinstance(verify("POST", "/inbox", as_starlette, BODY, keys.rsa_public), Verified)


def test_cavage_repeated_header_lines_are_joined(keys: Keys) -> None:
    # Two X-Custom field lines are signed as "x-custom: a, b" (draft-cavage §2.3).
    signing_string = (
        f"(request-target): get /inbox\nhost: example.org\ndate: {NOW_DATE}\nx-custom: a, b"
    )
    signature = cavage(keys.rsa, signing_string, "(request-target) host date x-custom")
    raw = [
        (b"host", b"example.org"),
        (b"date", NOW_DATE.encode()),
        (b"x-custom", b"a"),
        (b"x-custom", b" b "),
        (b"signature", signature.encode()),
    ]
    result = verify("GET", "/inbox", StarletteHeaders(raw=raw), b"", keys.rsa_public)
    assert isinstance(result, Verified), result


# ---- draft-cavage: vectors built by hand ----------------------------------------------------


def test_cavage_mastodon_literal_vector(keys: Keys) -> None:
    # The signing string exactly as Mastodon builds it, written out literally.
    signing_string = """(request-target): post /inbox
host: example.org
date: Sat, 28 Nov 2026 12:00:00 GMT
digest: SHA-256=AC7gtjXpGRqNA0W/OjuW00vf7OpA31GbjSlSZnsHH34="""
    headers = {
        "Host": "example.org",
        "Date": "Sat, 28 Nov 2026 12:00:00 GMT",
        "Digest": "SHA-256=AC7gtjXpGRqNA0W/OjuW00vf7OpA31GbjSlSZnsHH34=",
        "Signature": cavage(keys.rsa, signing_string, "(request-target) host date digest"),
    }
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Verified(
        KEY_ID, "draft-cavage"
    )
    # And our signer produces exactly this signing string (PKCS#1 v1.5 is deterministic).
    ours = sign_request("POST", INBOX, {}, BODY, key_id=KEY_ID, private_key=keys.rsa, now=NOW)
    assert ours["Signature"] == headers["Signature"]


def test_cavage_hs2019_accepted(keys: Keys) -> None:
    headers = mastodon_post_headers(keys.rsa, algorithm="hs2019")
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)


def test_cavage_hs2019_rsa_pss_accepted(keys: Keys) -> None:
    # The draft's own reading of hs2019 for RSA: RSASSA-PSS with SHA-512.
    signing_string = f"(request-target): get /inbox\nhost: example.org\ndate: {NOW_DATE}"
    assert isinstance(keys.rsa, rsa.RSAPrivateKey)
    signature = keys.rsa.sign(
        signing_string.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64),
        hashes.SHA512(),
    )
    headers = {
        "Host": "example.org",
        "Date": NOW_DATE,
        "Signature": f'keyId="{KEY_ID}",algorithm="hs2019",headers="(request-target) host date",'
        f'signature="{base64.b64encode(signature).decode()}"',
    }
    assert isinstance(verify("GET", "/inbox", headers, b"", keys.rsa_public), Verified)


def test_cavage_missing_algorithm_inferred_from_key(keys: Keys) -> None:
    headers = mastodon_post_headers(keys.rsa, algorithm=None)
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)
    headers = mastodon_post_headers(keys.ed, algorithm=None)
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.ed_public), Verified)
    headers = mastodon_post_headers(keys.ed, algorithm="ed25519")
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.ed_public), Verified)


def test_cavage_authorization_header_accepted(keys: Keys) -> None:
    headers = mastodon_post_headers(keys.rsa)
    headers["Authorization"] = "Signature " + headers.pop("Signature")
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Verified(
        KEY_ID, "draft-cavage"
    )
    assert parse_signature(headers) == SignatureInfo("draft-cavage", KEY_ID)


def test_cavage_created_pseudo_header(keys: Keys) -> None:
    def with_created(created: int, expires: int | None = None) -> dict[str, str]:
        covered = "(request-target) host (created) digest"
        signing_string = (
            f"(request-target): post /inbox\nhost: example.org\n(created): {created}\n"
            f"digest: SHA-256={BODY_SHA256}"
        )
        extra = f"created={created}"
        if expires is not None:
            covered += " (expires)"
            signing_string += f"\n(expires): {expires}"
            extra += f",expires={expires}"
        return {
            "Host": "example.org",
            "Digest": f"SHA-256={BODY_SHA256}",
            "Signature": cavage(keys.rsa, signing_string, covered, algorithm="hs2019", extra=extra),
        }

    # (created) stands in for Date: no Date header at all.
    assert isinstance(
        verify("POST", "/inbox", with_created(NOW_TS), BODY, keys.rsa_public), Verified
    )
    future = NOW_TS + int(WINDOW.total_seconds()) + 1
    assert_rejected(
        verify("POST", "/inbox", with_created(future), BODY, keys.rsa_public),
        "created time outside the accepted window",
    )
    assert isinstance(
        verify("POST", "/inbox", with_created(NOW_TS, NOW_TS + 60), BODY, keys.rsa_public),
        Verified,
    )
    assert_rejected(
        verify("POST", "/inbox", with_created(NOW_TS - 60, NOW_TS - 1), BODY, keys.rsa_public),
        "expired",
    )


def test_cavage_query_string_signed_without_query(keys: Keys) -> None:
    # Fedify (and older Mastodon) put only the path into (request-target).
    signing_string = f"(request-target): get /outbox\nhost: example.org\ndate: {NOW_DATE}"
    headers = {
        "Host": "example.org",
        "Date": NOW_DATE,
        "Signature": cavage(keys.rsa, signing_string, "(request-target) host date"),
    }
    assert isinstance(verify("GET", "/outbox?page=1", headers, b"", keys.rsa_public), Verified)
    assert_rejected(verify("GET", "/other?page=1", headers, b"", keys.rsa_public), "failed")


def test_cavage_digest_variants(keys: Keys) -> None:
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    for digest in (
        f"sha-256={BODY_SHA256}",
        f"SHA-512={sha512}",
        f"SHA-256={BODY_SHA256}, SHA-512={sha512}",
        f"MD5=abc, SHA-256={BODY_SHA256}",
    ):
        signing_string = (
            f"(request-target): post /inbox\nhost: example.org\ndate: {NOW_DATE}\ndigest: {digest}"
        )
        headers = {
            "Host": "example.org",
            "Date": NOW_DATE,
            "Digest": digest,
            "Signature": cavage(keys.rsa, signing_string, "(request-target) host date digest"),
        }
        assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified), (
            digest
        )


def test_cavage_host_falls_back_to_authority(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    del headers["Host"]
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "host missing")
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public, authority="example.org")
    assert isinstance(result, Verified)


# ---- draft-cavage: tampering ----------------------------------------------------------------


def test_cavage_changed_body(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    assert_rejected(
        verify("POST", "/inbox", headers, BODY + b" ", keys.rsa_public),
        "Digest does not match body",
    )


def test_cavage_changed_digest_header(keys: Keys) -> None:
    # Body and Digest both swapped: the digest matches but the signature does not.
    headers = signed_post(keys.rsa)
    other = b'{"type":"Delete"}'
    headers["Digest"] = digest_header(other)
    assert_rejected(
        verify("POST", "/inbox", headers, other, keys.rsa_public), "verification failed"
    )


def test_cavage_changed_path(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    assert_rejected(
        verify("POST", "/users/bob/inbox", headers, BODY, keys.rsa_public), "verification failed"
    )
    assert_rejected(verify("PUT", "/inbox", headers, BODY, keys.rsa_public), "verification failed")


def test_cavage_changed_host(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    headers["Host"] = "evil.example"
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "verification failed")


@pytest.mark.parametrize(
    "offset", [WINDOW + timedelta(seconds=1), -(WINDOW + timedelta(seconds=1))]
)
def test_cavage_date_outside_window(keys: Keys, offset: timedelta) -> None:
    headers = signed_post(keys.rsa)
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public, now=NOW + offset)
    assert_rejected(result, "Date header outside the accepted window")


@pytest.mark.parametrize("offset", [WINDOW, -WINDOW, timedelta(0)])
def test_cavage_date_just_inside_window(keys: Keys, offset: timedelta) -> None:
    headers = signed_post(keys.rsa)
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public, now=NOW + offset)
    assert isinstance(result, Verified)


@pytest.mark.parametrize("date", [None, "", "yesterday", "Sat, 99 Nov 2026 12:00:00 GMT"])
def test_cavage_missing_or_garbage_date(keys: Keys, date: str | None) -> None:
    headers = signed_post(keys.rsa)
    if date is None:
        del headers["Date"]
    else:
        headers["Date"] = date
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public)
    assert_rejected(result, "Date header")


def test_cavage_post_without_digest_coverage(keys: Keys) -> None:
    signing_string = f"(request-target): post /inbox\nhost: example.org\ndate: {NOW_DATE}"
    headers = {
        "Host": "example.org",
        "Date": NOW_DATE,
        "Signature": cavage(keys.rsa, signing_string, "(request-target) host date"),
    }
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "cover digest")
    # Allowed when the caller says so.
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public, require_body_digest=False)
    assert isinstance(result, Verified)


@pytest.mark.parametrize(
    ("covered", "fragment"),
    [
        ("host date digest", "cover (request-target)"),
        ("(request-target) date digest", "cover host"),
        ("(request-target) host digest", "cover date"),
    ],
)
def test_cavage_required_coverage(keys: Keys, covered: str, fragment: str) -> None:
    headers = mastodon_post_headers(keys.rsa)
    signature = headers["Signature"].replace(
        'headers="(request-target) host date digest"', f'headers="{covered}"'
    )
    headers["Signature"] = signature
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), fragment)


def test_cavage_headers_parameter_defaults_to_date(keys: Keys) -> None:
    signed = sign_raw(keys.rsa, "date: " + NOW_DATE)
    signature = f'keyId="{KEY_ID}",algorithm="rsa-sha256",signature="{signed}"'
    headers = {"Host": "example.org", "Date": NOW_DATE, "Signature": signature}
    assert_rejected(verify("GET", "/inbox", headers, b"", keys.rsa_public), "(request-target)")


def test_missing_signature(keys: Keys) -> None:
    headers = {"Host": "example.org", "Date": NOW_DATE}
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Rejected("missing signature")
    assert parse_signature(headers) == Rejected("missing signature")
    headers["Authorization"] = "Bearer abc"
    assert parse_signature(headers) == Rejected("missing signature")


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "",
        'keyId="x"',
        'keyId="x",signature="abc",keyId="y"',
        'signature="abc",headers="date"',
        'keyId="https://a/#k",headers="(request-target) host date",signature="',
        'keyId="a" junk signature="b"',
        'keyId="a",headers="(request-target) host\x00 date",signature="AAAA"',
    ],
)
def test_cavage_garbage_signature_header(keys: Keys, value: str) -> None:
    headers = {**signed_post(keys.rsa), "Signature": value}
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Rejected)
    assert isinstance(parse_signature(headers), Rejected | SignatureInfo)


def test_cavage_bad_base64_signature(keys: Keys) -> None:
    headers = signed_post(keys.rsa)
    headers["Signature"] = headers["Signature"].replace('signature="', 'signature="!!!', 1)
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "malformed signature")


def test_cavage_signature_by_another_key(keys: Keys) -> None:
    headers = signed_post(keys.other_rsa)
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "verification failed")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.ed_public), "key type")


@pytest.mark.parametrize("algorithm", ["rsa-sha1", "hmac-sha256", "ecdsa-sha256", "RSA-SHA1"])
def test_cavage_weak_algorithms_rejected(keys: Keys, algorithm: str) -> None:
    headers = mastodon_post_headers(keys.rsa, algorithm=algorithm)
    assert_rejected(
        verify("POST", "/inbox", headers, BODY, keys.rsa_public), "unsupported signature algorithm"
    )


def test_cavage_algorithm_must_match_key(keys: Keys) -> None:
    headers = mastodon_post_headers(keys.ed, algorithm="rsa-sha256")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.ed_public), "key type")
    headers = mastodon_post_headers(keys.rsa, algorithm="ed25519")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "key type")


def test_cavage_line_break_in_covered_header(keys: Keys) -> None:
    # A value with a newline could forge extra lines in the signing string.
    signing_string = f"(request-target): get /inbox\nhost: example.org\nx: y\ndate: {NOW_DATE}"
    headers = {
        "Host": "example.org\nx: y",
        "Date": NOW_DATE,
        "Signature": cavage(keys.rsa, signing_string, "(request-target) host date"),
    }
    assert_rejected(verify("GET", "/inbox", headers, b"", keys.rsa_public), "line break")


# ---- RFC 9421 round trips -------------------------------------------------------------------


def test_rfc9421_post_round_trip(keys: Keys) -> None:
    out = sign_request_rfc9421(
        "POST", INBOX, {}, BODY, key_id=KEY_ID, private_key=keys.rsa, now=NOW
    )
    assert out["Content-Digest"] == f"sha-256=:{BODY_SHA256}:"
    assert out["Signature-Input"] == (
        'sig1=("@method" "@target-uri" "@authority" "content-digest")'
        f';created={NOW_TS};keyid="{KEY_ID}";alg="rsa-v1_5-sha256"'
    )
    assert out["Signature"].startswith("sig1=:") and out["Signature"].endswith(":")
    headers = {"Host": "example.org", **out}
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Verified(KEY_ID, "rfc9421")


def test_rfc9421_get_round_trip(keys: Keys) -> None:
    url = "https://example.org/users/bob?page=true"
    out = sign_request_rfc9421(
        "GET", url, {}, None, key_id=KEY_ID, private_key=keys.rsa, now=NOW, label="fed"
    )
    assert "Content-Digest" not in out
    assert out["Signature-Input"].startswith('fed=("@method" "@target-uri" "@authority");')
    headers = {"Host": "example.org", **out}
    result = verify("GET", "/users/bob?page=true", headers, b"", keys.rsa_public)
    assert result == Verified(KEY_ID, "rfc9421")
    assert_rejected(verify("GET", "/users/bob?page=2", headers, b"", keys.rsa_public), "failed")


def test_rfc9421_ed25519_round_trip(keys: Keys) -> None:
    headers = signed_post_rfc9421(keys.ed)
    assert 'alg="ed25519"' in headers["Signature-Input"]
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.ed_public), Verified)


def test_rfc9421_preferred_over_cavage(keys: Keys) -> None:
    headers = signed_post_rfc9421(keys.rsa)
    headers["Authorization"] = "Signature " + signed_post(keys.rsa)["Signature"]
    assert parse_signature(headers) == SignatureInfo("rfc9421", KEY_ID)
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Verified(KEY_ID, "rfc9421")


def test_rfc9421_authority_fallback(keys: Keys) -> None:
    headers = signed_post_rfc9421(keys.rsa)
    del headers["Host"]
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "Host")
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public, authority="example.org")
    assert isinstance(result, Verified)


# ---- RFC 9421: vectors ----------------------------------------------------------------------

# RFC 9421 Appendix B.1.4 test key and Appendix B.2.6 "Signing a Request Using ed25519".
RFC9421_ED25519_PUBLIC = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=
-----END PUBLIC KEY-----
"""
RFC9421_ED25519_PRIVATE = """-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF
-----END PRIVATE KEY-----
"""
RFC9421_B26_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+T"
    "aPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    "Content-Length": "18",
    "Signature-Input": 'sig-b26=("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"',
    "Signature": "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1"
    "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
}
RFC9421_B26_BASE = """"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");\
created=1618884473;keyid="test-key-ed25519\""""
RFC9421_B26_CREATED = datetime.fromtimestamp(1618884473, UTC)


def test_rfc9421_appendix_b26_vector() -> None:
    public_key = load_public_key(RFC9421_ED25519_PUBLIC)
    assert isinstance(public_key, ed25519.Ed25519PublicKey)
    # The base as printed in the RFC really is what was signed (checked without our code).
    signature = base64.b64decode(RFC9421_B26_HEADERS["Signature"][len("sig-b26=:") : -1])
    public_key.verify(signature, RFC9421_B26_BASE.encode())

    body = b'{"hello": "world"}'
    # The example covers no content-digest (and sends no keyid URL), hence the flag.
    result = verify_request(
        "POST",
        "/foo?param=Value&Pet=dog",
        RFC9421_B26_HEADERS,
        body,
        public_key=public_key,
        now=RFC9421_B26_CREATED,
        window=WINDOW,
        require_body_digest=False,
    )
    assert result == Verified(key_id="test-key-ed25519", scheme="rfc9421")
    assert parse_signature(RFC9421_B26_HEADERS) == SignatureInfo("rfc9421", "test-key-ed25519")

    # Its Content-Digest is valid too, so the default flag only fails on coverage.
    strict = verify_request(
        "POST",
        "/foo?param=Value&Pet=dog",
        RFC9421_B26_HEADERS,
        body,
        public_key=public_key,
        now=RFC9421_B26_CREATED,
        window=WINDOW,
    )
    assert_rejected(strict, "cover content-digest")
    tampered = {**RFC9421_B26_HEADERS, "Content-Type": "text/plain"}
    result = verify_request(
        "POST",
        "/foo",
        tampered,
        body,
        public_key=public_key,
        now=RFC9421_B26_CREATED,
        window=WINDOW,
        require_body_digest=False,
    )
    assert_rejected(result, "verification failed")


def test_rfc9421_b26_private_key_reproduces_signature() -> None:
    # Ed25519 is deterministic, so loading the RFC private key must give the RFC's bytes.
    private_key = load_private_key(RFC9421_ED25519_PRIVATE)
    assert sign_raw(private_key, RFC9421_B26_BASE) == RFC9421_B26_HEADERS["Signature"][9:-1]


def test_rfc9421_fedify_style_literal_vector(keys: Keys) -> None:
    headers = fedify_style_rfc9421(keys.rsa)
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Verified(KEY_ID, "rfc9421")
    assert parse_signature(headers) == SignatureInfo("rfc9421", KEY_ID)


def test_rfc9421_signature_params_exactly_as_received(keys: Keys) -> None:
    # Non-canonical spacing inside the inner list; the signer signed that very text.
    params = f'( "@method"  "@target-uri" "@authority" );created={NOW_TS};keyid="{KEY_ID}"'
    base = (
        '"@method": GET\n"@target-uri": https://example.org/inbox\n'
        f'"@authority": example.org\n"@signature-params": {params}'
    )
    headers = {
        "Host": "example.org",
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{sign_raw(keys.rsa, base)}:",
    }
    assert isinstance(verify("GET", "/inbox", headers, b"", keys.rsa_public), Verified)


def test_rfc9421_target_uri_http_and_https(keys: Keys) -> None:
    for scheme in ("https", "http"):
        headers = fedify_style_rfc9421(keys.rsa, scheme=scheme)
        assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)
    headers = fedify_style_rfc9421(keys.rsa, scheme="ftp")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "failed")


def test_rfc9421_derived_components(keys: Keys) -> None:
    # @path/@query/@scheme/@request-target per RFC 9421 §2.2, and Fedify's variants of
    # @request-target ("get /x?y") and @query (no leading "?").
    target = "/users/bob/outbox?page=true"
    cases = [
        ("@path", "/users/bob/outbox"),
        ("@query", "?page=true"),
        ("@query", "page=true"),
        ("@scheme", "https"),
        ("@request-target", target),
        ("@request-target", f"get {target}"),
    ]
    for name, value in cases:
        params = f'("@method" "@authority" "{name}" "@path");created={NOW_TS};keyid="{KEY_ID}"'
        if name == "@path":
            params = f'("@method" "@authority" "@path");created={NOW_TS};keyid="{KEY_ID}"'
        lines = ['"@method": GET', '"@authority": example.org']
        if name != "@path":
            lines.append(f'"{name}": {value}')
        lines.append('"@path": /users/bob/outbox')
        base = "\n".join(lines) + f'\n"@signature-params": {params}'
        headers = {
            "Host": "Example.org",
            "Signature-Input": f"sig1={params}",
            "Signature": f"sig1=:{sign_raw(keys.rsa, base)}:",
        }
        result = verify("GET", target, headers, b"", keys.rsa_public)
        assert isinstance(result, Verified), (name, value, result)


def test_rfc9421_query_absent_is_question_mark(keys: Keys) -> None:
    params = f'("@method" "@authority" "@path" "@query");created={NOW_TS};keyid="{KEY_ID}"'
    base = (
        '"@method": GET\n"@authority": example.org\n"@path": /inbox\n"@query": ?\n'
        f'"@signature-params": {params}'
    )
    headers = {
        "Host": "example.org",
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{sign_raw(keys.rsa, base)}:",
    }
    assert isinstance(verify("GET", "/inbox", headers, b"", keys.rsa_public), Verified)


def test_rfc9421_picks_label_present_in_both(keys: Keys) -> None:
    headers = fedify_style_rfc9421(keys.rsa)
    headers["Signature-Input"] = (
        'proxy=("@method");created=1;keyid="https://proxy/#k", ' + headers["Signature-Input"]
    )
    assert verify("POST", "/inbox", headers, BODY, keys.rsa_public) == Verified(KEY_ID, "rfc9421")
    headers["Signature"] = headers["Signature"].replace("sig1=", "other=")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "labels")


# ---- RFC 9421: tampering --------------------------------------------------------------------


def test_rfc9421_content_digest_mismatch(keys: Keys) -> None:
    headers = signed_post_rfc9421(keys.rsa)
    assert_rejected(
        verify("POST", "/inbox", headers, b"{}", keys.rsa_public),
        "Content-Digest does not match body",
    )
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    headers = fedify_style_rfc9421(keys.rsa, digest=f"sha-512=:{sha512}:")
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)
    headers = fedify_style_rfc9421(keys.rsa, digest="md5=:AAAA:")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "sha-256")
    headers = fedify_style_rfc9421(keys.rsa, digest="sha-256=garbage")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "Content-Digest")


def test_rfc9421_post_without_content_digest_coverage(keys: Keys) -> None:
    components = '"@method" "@target-uri" "@authority" "host" "date"'
    headers = fedify_style_rfc9421(keys.rsa, components=components)
    assert_rejected(
        verify("POST", "/inbox", headers, BODY, keys.rsa_public), "cover content-digest"
    )
    result = verify("POST", "/inbox", headers, BODY, keys.rsa_public, require_body_digest=False)
    assert isinstance(result, Verified)


def test_rfc9421_required_coverage(keys: Keys) -> None:
    headers = fedify_style_rfc9421(keys.rsa, components='"@target-uri" "content-digest"')
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "cover @method")
    headers = fedify_style_rfc9421(keys.rsa, components='"@method" "@authority" "content-digest"')
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "@target-uri")


def test_rfc9421_changed_path_and_host(keys: Keys) -> None:
    headers = signed_post_rfc9421(keys.rsa)
    assert_rejected(verify("POST", "/outbox", headers, BODY, keys.rsa_public), "failed")
    headers["Host"] = "evil.example"
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "failed")


def test_rfc9421_created_window(keys: Keys) -> None:
    beyond = int(WINDOW.total_seconds()) + 1
    for created in (NOW_TS + beyond, NOW_TS - beyond):
        headers = fedify_style_rfc9421(keys.rsa, created=created)
        assert_rejected(
            verify("POST", "/inbox", headers, BODY, keys.rsa_public),
            "created time outside the accepted window",
        )
    inside = int(WINDOW.total_seconds())
    for created in (NOW_TS + inside, NOW_TS - inside):
        headers = fedify_style_rfc9421(keys.rsa, created=created)
        assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)


def test_rfc9421_missing_created(keys: Keys) -> None:
    params = f'("@method" "@target-uri");keyid="{KEY_ID}"'
    base = (
        f'"@method": GET\n"@target-uri": https://example.org/inbox\n"@signature-params": {params}'
    )
    headers = {
        "Host": "example.org",
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{sign_raw(keys.rsa, base)}:",
    }
    assert_rejected(verify("GET", "/inbox", headers, b"", keys.rsa_public), "no created")


def test_rfc9421_expires(keys: Keys) -> None:
    headers = fedify_style_rfc9421(keys.rsa, extra_params=f";expires={NOW_TS - 1}")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "expired")
    headers = fedify_style_rfc9421(keys.rsa, extra_params=f";expires={NOW_TS + 60}")
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Verified)


def test_rfc9421_other_key_and_algorithms(keys: Keys) -> None:
    headers = signed_post_rfc9421(keys.other_rsa)
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.rsa_public), "failed")
    assert_rejected(verify("POST", "/inbox", headers, BODY, keys.ed_public), "key type")
    for alg in ("hmac-sha256", "ecdsa-p256-sha256", "rsa-sha1"):
        headers = signed_post_rfc9421(keys.rsa)
        headers["Signature-Input"] = headers["Signature-Input"].replace("rsa-v1_5-sha256", alg)
        assert_rejected(
            verify("POST", "/inbox", headers, BODY, keys.rsa_public), "unsupported signature"
        )


def test_rfc9421_rsa_pss_sha512(keys: Keys) -> None:
    params = f'("@method" "@target-uri");created={NOW_TS};keyid="{KEY_ID}";alg="rsa-pss-sha512"'
    base = (
        f'"@method": GET\n"@target-uri": https://example.org/inbox\n"@signature-params": {params}'
    )
    assert isinstance(keys.rsa, rsa.RSAPrivateKey)
    signature = keys.rsa.sign(
        base.encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64),
        hashes.SHA512(),
    )
    headers = {
        "Host": "example.org",
        "Signature-Input": f"sig1={params}",
        "Signature": f"sig1=:{base64.b64encode(signature).decode()}:",
    }
    assert isinstance(verify("GET", "/inbox", headers, b"", keys.rsa_public), Verified)


@pytest.mark.parametrize(
    ("signature_input", "signature"),
    [
        ("sig1=garbage(", "sig1=:AAAA:"),
        ('sig1=("@method");created=1;keyid="k"', "sig1=notbytes"),
        ('sig1="@method";created=1;keyid="k"', "sig1=:AAAA:"),
        ('sig1=("@method");created=1', "sig1=:AAAA:"),
        ('sig1=("@method");created=1;keyid="k", sig1=("@path")', "sig1=:AAAA:"),
        ('sig1=("@method" "@method");created=1;keyid="k"', "sig1=:AAAA:"),
        ('sig1=("@method";req);created=1;keyid="k"', "sig1=:AAAA:"),
        ('sig1=(method);created=1;keyid="k"', "sig1=:AAAA:"),
        ('sig1=("@status");created=1;keyid="k"', "sig1=:AAAA:"),
        ('sig1=("Host");created=1;keyid="k"', "sig1=:AAAA:"),
        ('sig1=("@method");created="1";keyid="k"', "sig1=:AAAA:"),
        ('sig1=("@method");created=?1;keyid="k"', "sig1=:AAAA:"),
        ("sig1=()", "sig1=:AAAA:"),
        ("sïg1=()", "sig1=:AAAA:"),
    ],
)
def test_rfc9421_garbage(keys: Keys, signature_input: str, signature: str) -> None:
    headers = {
        "Host": "example.org",
        "Content-Digest": content_digest_header(BODY),
        "Signature-Input": signature_input,
        "Signature": signature,
    }
    assert isinstance(verify("POST", "/inbox", headers, BODY, keys.rsa_public), Rejected)
    assert isinstance(parse_signature(headers), Rejected | SignatureInfo)


# ---- parse_signature ------------------------------------------------------------------------


def test_parse_signature(keys: Keys) -> None:
    assert parse_signature(signed_post(keys.rsa)) == SignatureInfo("draft-cavage", KEY_ID)
    assert parse_signature(signed_post_rfc9421(keys.rsa)) == SignatureInfo("rfc9421", KEY_ID)
    assert parse_signature({}) == Rejected("missing signature")
    assert isinstance(parse_signature({"Signature": "garbage"}), Rejected)
    # A lone Signature-Input is not RFC 9421 without its Signature.
    assert parse_signature({"Signature-Input": 'sig1=();keyid="k"'}) == Rejected(
        "missing signature"
    )


# ---- hostile input --------------------------------------------------------------------------


def test_fuzz_never_raises(keys: Keys) -> None:
    rng = random.Random(0)
    alphabet = (
        'abcdefgHIJK0123456789=:;,"()@*?/\\ \t\r\n\x00\x7f-_.+%éü€\U0001f600'
        "keyIdsignatureheadersalgorithmcreatedexpiressig1"
    )
    bases = [
        (signed_post(keys.rsa), keys.rsa_public),
        (signed_post_rfc9421(keys.rsa), keys.rsa_public),
        (fedify_style_rfc9421(keys.rsa), keys.rsa_public),
        (signed_post(keys.ed), keys.ed_public),
    ]
    names = [
        "Signature",
        "Signature-Input",
        "Authorization",
        "Date",
        "Digest",
        "Content-Digest",
        "Host",
    ]

    def garble(value: str) -> str:
        choice = rng.randrange(5)
        if choice == 0:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        if choice == 1 and value:
            position = rng.randrange(len(value))
            return value[:position] + rng.choice(alphabet) + value[position + 1 :]
        if choice == 2:
            return value[: rng.randrange(len(value) + 1)]
        if choice == 3:
            return value + rng.choice([",", ", sig2=:AAAA:", ";", '"', "=", "\n"])
        return value * rng.randrange(0, 3)

    outcomes: set[type] = set()
    for _ in range(400):
        headers, public_key = rng.choice(bases)
        mutated = dict(headers)
        for name in rng.sample(names, rng.randrange(1, 3)):
            mutated[name] = garble(mutated.get(name, ""))
        method = rng.choice(["POST", "GET", "", "post", "P\nOST"])
        target = rng.choice(["/inbox", "", "/inbox?x", "//evil/x", "https://h/x?y", "*"])
        body = rng.choice([BODY, b"", b"\xff\x00"])
        now = rng.choice([NOW, NOW.replace(tzinfo=None), datetime.max.replace(tzinfo=UTC)])
        result = verify_request(
            method,
            target,
            mutated,
            body,
            public_key=public_key,
            now=now,
            window=WINDOW,
            authority=rng.choice([None, "example.org", "\x00"]),
        )
        outcomes.add(type(result))
        assert isinstance(result, Verified | Rejected)
        assert isinstance(parse_signature(mutated), SignatureInfo | Rejected)
    assert Rejected in outcomes
