"""FEP-8b32 integrity proofs (eddsa-jcs-2022): known-good values, round trips, tampering.

The key pair is the W3C Data Integrity EdDSA test key (vc-di-eddsa, TestVectors/keyPair.json),
which FEP-8b32's own test vectors use too; the expected proof values below are the published
ones for those inputs. The reference leg checks the published files themselves.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import base58
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from server.activitypub.integrity import (
    CRYPTOSUITE,
    DATA_INTEGRITY_CONTEXT,
    PROOF_TYPE,
    Rejected,
    Verified,
    assertion_keys_of,
    build_multikey,
    canonical_json,
    multikey_public,
    parse_multikey,
    sign,
    verification_method_of,
    verify,
)

# W3C vc-di-eddsa test key pair (multibase), also FEP-8b32's "Ed25519 secret key".
PUBLIC_MULTIBASE = "z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2"
SECRET_MULTIBASE = "z3u2en7t5LR2WtQH5PfFqMqwVHBeXouLzo6haApm8XHqvjxq"
CREATED = datetime(2023, 2, 24, 23, 36, 38, tzinfo=UTC)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

ALICE = "https://server.example/users/alice"
ALICE_KEY = ALICE + "#ed25519-key"
AS = "https://www.w3.org/ns/activitystreams"

# FEP-8b32's "Signing document" scenario (2025-10 revision) and the proofValue it expects.
FEP_ACTIVITY: dict[str, Any] = {
    "@context": [AS, DATA_INTEGRITY_CONTEXT],
    "id": "https://server.example/activities/1",
    "type": "Create",
    "actor": ALICE,
    "object": {
        "id": "https://server.example/objects/1",
        "type": "Note",
        "attributedTo": ALICE,
        "content": "Hello world",
        "location": {"type": "Place", "longitude": -71.184902, "latitude": 25.273962},
    },
}
FEP_PROOF_VALUE = (
    "z42ffGu6AUKPCFcFPiabmUvnGLPJzC7e4DGWC52NUasSSH37UMa9c58tdgVszUcZfytxa4fQ5TYHaJENCxUDe9SdL"
)

# The W3C credential of the eddsa-jcs-2022 vectors and its proofValue.
W3C_KEY = "did:key:" + PUBLIC_MULTIBASE + "#" + PUBLIC_MULTIBASE
W3C_CREDENTIAL: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/credentials/v2",
        "https://www.w3.org/ns/credentials/examples/v2",
    ],
    "id": "urn:uuid:58172aac-d8ba-11ed-83dd-0b3aef56cc33",
    "type": ["VerifiableCredential", "AlumniCredential"],
    "name": "Alumni Credential",
    "description": "A minimum viable example of an Alumni Credential.",
    "issuer": "https://vc.example/issuers/5678",
    "validFrom": "2023-01-01T00:00:00Z",
    "credentialSubject": {"id": "did:example:abcdefgh", "alumniOf": "The School of Examples"},
}
W3C_PROOF_VALUE = (
    "z2HnFSSPPBzR36zdDgK8PbEHeXbR56YF24jwMpt3R1eHXQzJDMWS93FCzpvJpwTWd3GAVFuUfjoJdcnTMuVor51aX"
)


def secret_key(multibase: str) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 ``secretKeyMultibase``: multicodec ed25519-priv (0x1300, varint 0x80 0x26)."""
    data = base58.b58decode(multibase[1:])
    assert multibase[0] == "z" and data[:2] == b"\x80\x26" and len(data) == 34
    return ed25519.Ed25519PrivateKey.from_private_bytes(data[2:])


PRIVATE = secret_key(SECRET_MULTIBASE)
PUBLIC = PRIVATE.public_key()
OTHER = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def signed(document: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    options.setdefault("verification_method", ALICE_KEY)
    options.setdefault("private_key", PRIVATE)
    options.setdefault("created", CREATED)
    return sign(FEP_ACTIVITY if document is None else document, **options)


def rejected(result: Verified | Rejected) -> str:
    assert isinstance(result, Rejected), result
    return result.reason


# --------------------------------------------------------------------------------------------
# Known-good values


def test_sign_gives_the_fep_8b32_vector() -> None:
    document = signed()
    assert document["proof"] == {
        "@context": [AS, DATA_INTEGRITY_CONTEXT],
        "type": "DataIntegrityProof",
        "cryptosuite": "eddsa-jcs-2022",
        "verificationMethod": ALICE_KEY,
        "proofPurpose": "assertionMethod",
        "proofValue": FEP_PROOF_VALUE,
        "created": "2023-02-24T23:36:38Z",
    }
    assert {k: v for k, v in document.items() if k != "proof"} == FEP_ACTIVITY


def test_sign_gives_the_w3c_vector() -> None:
    document = sign(
        W3C_CREDENTIAL, verification_method=W3C_KEY, private_key=PRIVATE, created=CREATED
    )
    assert document["proof"]["proofValue"] == W3C_PROOF_VALUE
    # Verifiable Credentials 2.0 already defines `proof`: no context is added.
    assert document["@context"] == W3C_CREDENTIAL["@context"] == document["proof"]["@context"]


def test_round_trip() -> None:
    result = verify(signed(), PUBLIC, now=NOW)
    assert result == Verified(verification_method_uri=ALICE_KEY, owner_uri=ALICE, created=CREATED)


def test_round_trip_with_a_fresh_key_and_unicode() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    note = {
        "@context": AS,
        "type": "Note",
        "attributedTo": ALICE,
        "content": "Asamblea: ¡mañana a las 18 h! 😂 \u0000 </script>",
        "contentMap": {"es": "¡mañana!", "fr": "demain"},
        "votes": [1, 2.5, -0.0, 1e21, 1e-7, True, None],
    }
    document = signed(note, private_key=key)
    assert document["@context"] == [AS, DATA_INTEGRITY_CONTEXT]
    assert isinstance(verify(document, key.public_key(), now=NOW), Verified)


def test_sign_leaves_its_input_alone_and_formats_times() -> None:
    original = copy.deepcopy(FEP_ACTIVITY)
    document = signed(
        created=datetime(2026, 1, 2, 3, 4, 5, 678_000),  # naive: UTC
        expires=datetime(2026, 1, 2, 6, 4, 5, tzinfo=timezone(timedelta(hours=1))),
    )
    assert FEP_ACTIVITY == original
    assert document["proof"]["created"] == "2026-01-02T03:04:05Z"
    assert document["proof"]["expires"] == "2026-01-02T05:04:05Z"
    document["object"]["content"] = "changed in the copy"
    assert FEP_ACTIVITY["object"]["content"] == "Hello world"


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, [AS, DATA_INTEGRITY_CONTEXT]),
        (AS, [AS, DATA_INTEGRITY_CONTEXT]),
        (
            [AS, {"toot": "http://joinmastodon.org/ns#"}],
            [AS, {"toot": "http://joinmastodon.org/ns#"}, DATA_INTEGRITY_CONTEXT],
        ),
        (
            [AS, "https://w3id.org/security/data-integrity/v1"],
            [AS, "https://w3id.org/security/data-integrity/v1"],
        ),
    ],
)
def test_sign_adds_the_data_integrity_context_once(context: Any, expected: list[Any]) -> None:
    document = {"type": "Note", "attributedTo": ALICE, "content": "hi"}
    if context is not None:
        document["@context"] = context
    result = signed(document)
    assert result["@context"] == expected == result["proof"]["@context"]
    assert isinstance(verify(result, PUBLIC, now=NOW), Verified)


def test_verification_method_of() -> None:
    assert verification_method_of(signed()) == ALICE_KEY
    assert verification_method_of(FEP_ACTIVITY) is None
    assert verification_method_of({"proof": [signed()["proof"]] * 2}) is None
    assert verification_method_of({"proof": {"verificationMethod": ""}}) is None
    assert verification_method_of("not a document") is None


# --------------------------------------------------------------------------------------------
# Refusals


def _with_proof(**changes: Any) -> dict[str, Any]:
    document = signed()
    document["proof"].update(changes)
    return document


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (FEP_ACTIVITY, "document has no proof"),
        ({**FEP_ACTIVITY, "proof": []}, "document has no proof"),
        ({**FEP_ACTIVITY, "proof": None}, "document has no proof"),
        ({**FEP_ACTIVITY, "proof": "z42ff"}, "malformed proof"),
        (_with_proof(type="Ed25519Signature2020"), "proof is not a DataIntegrityProof"),
        (_with_proof(cryptosuite="eddsa-rdfc-2022"), "unsupported cryptosuite"),
        (_with_proof(cryptosuite=None), "unsupported cryptosuite"),
        (_with_proof(proofPurpose="authentication"), "proof purpose is not assertionMethod"),
        (_with_proof(verificationMethod=None), "proof names no verification method"),
        (_with_proof(verificationMethod={"id": ALICE_KEY}), "proof names no verification method"),
        (_with_proof(proofValue=FEP_PROOF_VALUE[1:]), "malformed proofValue"),  # no "z"
        (_with_proof(proofValue="u" + FEP_PROOF_VALUE[1:]), "malformed proofValue"),
        (_with_proof(proofValue=FEP_PROOF_VALUE + " "), "malformed proofValue"),
        (
            _with_proof(proofValue=FEP_PROOF_VALUE[:40] + "0" + FEP_PROOF_VALUE[41:]),
            "malformed proofValue",
        ),
        (_with_proof(proofValue=FEP_PROOF_VALUE[:-3]), "malformed proofValue"),  # 62 bytes
        (_with_proof(proofValue=FEP_PROOF_VALUE + "zz"), "malformed proofValue"),
        (_with_proof(proofValue="z"), "malformed proofValue"),
        (_with_proof(proofValue="zé"), "malformed proofValue"),
        (_with_proof(proofValue=64), "malformed proofValue"),
        (_with_proof(created="24 Feb 2023"), "malformed created"),
        (_with_proof(created="2023-02-24"), "malformed created"),
        (_with_proof(created="2023-13-24T23:36:38Z"), "malformed created"),
        (_with_proof(created=1677281798), "malformed created"),
        (_with_proof(expires="soon"), "malformed expires"),
        ("a string", "document is not a JSON object"),
        ([FEP_ACTIVITY], "document is not a JSON object"),
    ],
)
def test_refused_before_any_signature_check(document: Any, reason: str) -> None:
    assert rejected(verify(document, PUBLIC, now=NOW)) == reason


def test_more_than_one_proof_is_refused_but_a_list_of_one_is_read() -> None:
    document = signed()
    proof = document["proof"]
    assert isinstance(verify({**document, "proof": [proof]}, PUBLIC, now=NOW), Verified)
    assert rejected(verify({**document, "proof": [proof, proof]}, PUBLIC, now=NOW)) == (
        "document has more than one proof"
    )


def test_purpose_is_the_callers() -> None:
    document = signed(purpose="authentication")
    assert rejected(verify(document, PUBLIC, now=NOW)) == "proof purpose is not assertionMethod"
    assert isinstance(verify(document, PUBLIC, now=NOW, purpose="authentication"), Verified)


NO_MATCH = "proof does not match the document and key"


def test_changed_content_is_refused() -> None:
    document = signed()
    document["object"]["content"] = "Hello wor1d"
    assert rejected(verify(document, PUBLIC, now=NOW)) == NO_MATCH


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(id="https://server.example/activities/2"),
        lambda d: d.update(type="Update"),
        lambda d: d.update(to=["https://www.w3.org/ns/activitystreams#Public"]),
        lambda d: d.pop("id"),
        lambda d: d["object"]["location"].update(latitude=25.273963),
        lambda d: d["object"].update(attributedTo="https://server.example/users/bob"),
    ],
)
def test_any_change_to_the_document_is_refused(change: Any) -> None:
    document = signed()
    change(document)
    reason = rejected(verify(document, PUBLIC, now=NOW))
    assert reason == NO_MATCH


def test_changed_actor_is_refused() -> None:
    document = signed()
    document["actor"] = "https://server.example/users/bob"  # same server: the hash breaks
    assert rejected(verify(document, PUBLIC, now=NOW)) == NO_MATCH
    # A key of one server cannot speak for an actor on another, however it signed.
    elsewhere = signed({**FEP_ACTIVITY, "actor": "https://other.example/users/alice"})
    assert rejected(verify(elsewhere, PUBLIC, now=NOW)) == (
        "verification method is not on the origin of the document's owner"
    )


@pytest.mark.parametrize(
    ("owner", "method", "ok"),
    [
        ({"actor": ALICE}, ALICE_KEY, True),
        ({"actor": {"id": ALICE, "type": "Person"}}, ALICE_KEY, True),
        ({"actor": [ALICE]}, ALICE_KEY, True),
        ({"attributedTo": ALICE}, "https://SERVER.example:443/keys/1", True),
        ({"attributedTo": ALICE}, "http://server.example/keys/1", False),  # another scheme
        ({"attributedTo": ALICE}, "https://server.example:8443/keys/1", False),
        ({"attributedTo": ALICE}, "https://evil.server.example/keys/1", False),
        ({"actor": ALICE}, W3C_KEY, False),  # DID methods are not followed to an actor
        ({}, W3C_KEY, True),  # no owner named: whoever the key is
    ],
)
def test_the_key_is_on_the_owners_origin(owner: dict[str, Any], method: str, ok: bool) -> None:
    document = signed(
        {"@context": AS, "type": "Note", "content": "hi", **owner}, verification_method=method
    )
    result = verify(document, PUBLIC, now=NOW)
    assert isinstance(result, Verified) is ok, result


@pytest.mark.parametrize(
    "actor", [[ALICE, "https://server.example/users/bob"], [], 7, {"type": "Person"}]
)
def test_a_document_without_one_owner_is_refused(actor: Any) -> None:
    document = signed({**FEP_ACTIVITY, "actor": actor})
    assert rejected(verify(document, PUBLIC, now=NOW)) == "document's actor is not one actor"


def test_other_key_is_refused() -> None:
    assert rejected(verify(signed(), OTHER.public_key(), now=NOW)) == NO_MATCH
    assert rejected(verify(signed(private_key=OTHER), PUBLIC, now=NOW)) == NO_MATCH


def test_rsa_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    assert rejected(verify(signed(), key, now=NOW)) == "key is not an Ed25519 key"


@pytest.mark.parametrize(
    "changes",
    [
        {"created": "2023-02-24T23:36:39Z"},
        {"verificationMethod": ALICE + "#other-key"},
        {"expires": "2099-01-01T00:00:00Z"},  # added after signing
        {"nonce": "1234"},
        {"@context": [AS, DATA_INTEGRITY_CONTEXT]},  # unchanged: still fine (control)
    ],
)
def test_changed_proof_options_are_refused(changes: dict[str, Any]) -> None:
    result = verify(_with_proof(**changes), PUBLIC, now=NOW)
    if "@context" in changes:
        assert isinstance(result, Verified)
    else:
        assert rejected(result) == NO_MATCH


def test_proof_over_another_document_is_refused() -> None:
    other = signed({**FEP_ACTIVITY, "id": "https://server.example/activities/2"})
    moved = {**FEP_ACTIVITY, "proof": other["proof"]}
    assert rejected(verify(moved, PUBLIC, now=NOW)) == NO_MATCH


@pytest.mark.parametrize(
    "proof_context",
    [
        [AS, "https://w3id.org/security/data-integrity/v1"],
        [DATA_INTEGRITY_CONTEXT, AS],
        [AS, DATA_INTEGRITY_CONTEXT, "https://w3id.org/security/multikey/v1"],
    ],
)
def test_proof_made_for_another_context_is_refused(proof_context: Any) -> None:
    assert rejected(verify(_with_proof(**{"@context": proof_context}), PUBLIC, now=NOW)) == (
        "proof @context does not match the document's"
    )
    # A shorter one begins the document's, but the document was not signed with it.
    assert rejected(verify(_with_proof(**{"@context": AS}), PUBLIC, now=NOW)) == NO_MATCH


def test_document_context_may_grow_after_the_proof_contexts() -> None:
    # eddsa-jcs-2022 Verify Proof step 4: the document is hashed with the proof's @context,
    # which must begin the document's (room for contexts a later proof in a chain adds).
    document = signed()
    document["@context"] = [*document["@context"], "https://w3id.org/security/multikey/v1"]
    assert isinstance(verify(document, PUBLIC, now=NOW), Verified)


def test_a_proof_without_context_is_hashed_as_it_stands() -> None:
    # FEP-8b32 before 2024-06 put no @context in the proof (its vector is in the reference leg).
    document = signed()
    del document["proof"]["@context"]
    assert rejected(verify(document, PUBLIC, now=NOW)) == NO_MATCH


def test_expiry() -> None:
    document = signed(expires=NOW + timedelta(minutes=5))
    assert isinstance(verify(document, PUBLIC, now=NOW), Verified)
    assert isinstance(
        verify(document, PUBLIC, now=(NOW + timedelta(minutes=4)).replace(tzinfo=None)), Verified
    )
    assert rejected(verify(document, PUBLIC, now=NOW + timedelta(minutes=5))) == "proof has expired"
    assert rejected(verify(document, PUBLIC, now=NOW + timedelta(days=1))) == "proof has expired"


def test_linked_data_signature_is_set_aside() -> None:
    # FEP-8b32: the LD signature is made after the proof and removed before verifying it.
    document = signed()
    document["signature"] = {
        "type": "RsaSignature2017",
        "creator": ALICE + "#main-key",
        "created": "2023-02-24T23:36:40Z",
        "signatureValue": "c2lnbmF0dXJl",
    }
    assert isinstance(verify(document, PUBLIC, now=NOW), Verified)
    with pytest.raises(ValueError, match="before the Linked Data Signature"):
        signed({k: v for k, v in document.items() if k != "proof"})
    # Anything else called "signature" is content like any other.
    other = signed({**FEP_ACTIVITY, "signature": "Alice"})
    assert isinstance(verify(other, PUBLIC, now=NOW), Verified)
    other["signature"] = "Mallory"
    assert rejected(verify(other, PUBLIC, now=NOW)) == NO_MATCH


def test_sign_refuses_a_second_proof() -> None:
    with pytest.raises(ValueError, match="already has a proof"):
        signed(signed())


@pytest.mark.parametrize(
    "value", [2**53, -(2**53), float("nan"), float("inf"), "\ud800", {1: "x"}, b"x"]
)
def test_what_jcs_cannot_represent(value: Any) -> None:
    with pytest.raises(ValueError):
        signed({**FEP_ACTIVITY, "extra": value})
    document = signed()
    document["extra"] = value
    assert (
        rejected(verify(document, PUBLIC, now=NOW)) == "document cannot be canonicalised (RFC 8785)"
    )


def test_deep_nesting_is_refused_not_raised() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    document = signed()
    document["object"]["content"] = deep
    assert (
        rejected(verify(document, PUBLIC, now=NOW)) == "document cannot be canonicalised (RFC 8785)"
    )


HOSTILE: list[Any] = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "z",
    [],
    {},
    [None],
    {"a": {}},
    "\x00",
    "x" * 10_000,
]


@pytest.mark.parametrize(
    "field",
    [
        "type",
        "cryptosuite",
        "proofPurpose",
        "verificationMethod",
        "proofValue",
        "created",
        "expires",
        "@context",
    ],
)
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_proof_fields_never_raise(field: str, value: Any) -> None:
    assert isinstance(verify(_with_proof(**{field: value}), PUBLIC, now=NOW), Rejected)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_documents_never_raise(value: Any) -> None:
    assert isinstance(verify(value, PUBLIC, now=NOW), Rejected)
    assert isinstance(verify({"proof": value}, PUBLIC, now=NOW), Rejected)
    assert isinstance(verify({**signed(), "@context": value}, PUBLIC, now=NOW), Rejected)


# --------------------------------------------------------------------------------------------
# Multikey (FEP-521a)


def test_multikey_of_the_w3c_test_key() -> None:
    assert multikey_public(PUBLIC) == PUBLIC_MULTIBASE
    parsed = parse_multikey(PUBLIC_MULTIBASE)
    assert parsed is not None and multikey_public(parsed) == PUBLIC_MULTIBASE


def test_multikey_round_trip() -> None:
    for _ in range(20):
        key = ed25519.Ed25519PrivateKey.generate().public_key()
        value = multikey_public(key)
        assert value.startswith("z6Mk")
        parsed = parse_multikey(value)
        assert parsed is not None and parsed == key


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        "z",
        PUBLIC_MULTIBASE[1:],
        "u" + PUBLIC_MULTIBASE[1:],
        PUBLIC_MULTIBASE + "1",  # 35 bytes
        PUBLIC_MULTIBASE[:-1],
        PUBLIC_MULTIBASE + "\n",
        SECRET_MULTIBASE,  # ed25519-priv, not ed25519-pub
        "z" + base58.b58encode(b"\xe7\x01" + bytes(32)).decode(),  # secp256k1-pub header
        "z" + base58.b58encode(b"\xed\x01" + bytes(33)).decode(),
    ],
)
def test_parse_multikey_refuses(value: Any) -> None:
    assert parse_multikey(value) is None


ACTOR: dict[str, Any] = {
    "@context": [AS, DATA_INTEGRITY_CONTEXT, "https://w3id.org/security/multikey/v1"],
    "type": "Person",
    "id": ALICE,
    "inbox": ALICE + "/inbox",
    "assertionMethod": [
        build_multikey(ALICE_KEY, ALICE, PUBLIC),
        ALICE + "#referenced-only",
        {"id": ALICE + "#rsa", "type": "JsonWebKey", "controller": ALICE},
        build_multikey("https://elsewhere.example/keys/1", ALICE, OTHER.public_key()),
        {**build_multikey(ALICE + "#bad", ALICE, PUBLIC), "publicKeyMultibase": "z6Mk"},
        {
            "id": ALICE + "#no-controller",
            "type": "Multikey",
            "publicKeyMultibase": PUBLIC_MULTIBASE,
        },
    ],
}


def test_build_multikey() -> None:
    assert build_multikey(ALICE_KEY, ALICE, PUBLIC) == {
        "id": ALICE_KEY,
        "type": "Multikey",
        "controller": ALICE,
        "publicKeyMultibase": PUBLIC_MULTIBASE,
    }


def test_assertion_keys_of_reads_the_ed25519_multikeys_on_the_controllers_origin() -> None:
    keys = assertion_keys_of(ACTOR)
    assert [(key_id, controller) for key_id, controller, _ in keys] == [(ALICE_KEY, ALICE)]
    assert keys[0][2] == PUBLIC
    assert assertion_keys_of({"assertionMethod": build_multikey(ALICE_KEY, ALICE, PUBLIC)})
    assert assertion_keys_of({}) == []
    assert assertion_keys_of({"assertionMethod": "nonsense"}) == []


def test_verify_with_the_key_the_actor_publishes() -> None:
    document = signed()
    method = verification_method_of(document)
    key = next(k for key_id, _, k in assertion_keys_of(ACTOR) if key_id == method)
    result = verify(document, key, now=NOW)
    assert isinstance(result, Verified) and result.owner_uri == ACTOR["id"]


# --------------------------------------------------------------------------------------------
# JCS (RFC 8785), as the proofs depend on it


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, None, False]}, b'{"a":[true,null,false],"b":1}'),
        # UTF-16 code unit order: U+20AC sorts before the surrogate pair of U+1F602 and
        # after U+00F6 ("ö"), and U+FB33 after both.
        (
            {"\U0001f602": 1, "\u20ac": 2, "\u00f6": 3, "\ufb33": 4},
            '{"\u00f6":3,"\u20ac":2,"\U0001f602":1,"\ufb33":4}'.encode(),
        ),
        ({"s": '\u000f\n"\\/\u007f'}, b'{"s":"\\u000f\\n\\"\\\\/\x7f"}'),
        # ECMAScript Number::toString.
        (
            [1.0, 56.0, 4.50, 2e-3, 1e-27, 1e30, 333333333.33333329],
            b"[1,56,4.5,0.002,1e-27,1e+30,333333333.3333333]",
        ),
        (
            [1e21, 1e20, 1e-7, 0.000001, -0.0, 9007199254740991, 5e-324],
            b"[1e+21,100000000000000000000,1e-7,0.000001,0,9007199254740991,5e-324]",
        ),
        (
            [1.7976931348623157e308, -1.5e-9, 123456789012345680000.0],
            b"[1.7976931348623157e+308,-1.5e-9,123456789012345680000]",
        ),
    ],
)
def test_canonical_json(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_constants() -> None:
    assert (PROOF_TYPE, CRYPTOSUITE) == ("DataIntegrityProof", "eddsa-jcs-2022")
