"""RsaSignature2017 Linked Data signatures (Mastodon's): round trips, an independent verifier and
signer written here from the algorithm alone, tampering, offline contexts and bounded work.

The algorithm (Mastodon's ``LinkedDataSignature``)::

    options       = {"@context": "https://w3id.org/identity/v1", "creator": …, "created": …}
    to_be_signed  = sha256_hex(URDNA2015(options)) + sha256_hex(URDNA2015(doc - signature))
    signatureValue = base64(RSASSA-PKCS1-v1_5-SHA256(to_be_signed))

The independent half (tests/support/ldsig_spec.py) uses pyld and ``cryptography`` directly, with
only the contexts pyld ships itself, and writes the options' canonical N-Quads out by hand.
"""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyld.jsonld
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from server.activitypub import bounds, ldsig
from server.activitypub.jsonld import normalise
from server.activitypub.signatures import (
    PublicKey,
    Rejected,
    generate_private_key_pem,
    load_private_key,
    load_public_key,
)
from server.activitypub.vocab import CONTEXT, PUBLIC, build_activity, build_note
from tests.support import ldsig_spec
from tests.support.nonet import forbid_network

ACTOR = "https://interocc.example/actors/libertyplaza"
KEY_ID = ACTOR + "#main-key"
NOTE = "https://interocc.example/communiques/7"
CREATED = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CREATED_TEXT = "2026-11-28T12:00:00Z"


@dataclass(frozen=True)
class Keys:
    private: rsa.RSAPrivateKey
    public: rsa.RSAPublicKey
    public_pem: str
    other: rsa.RSAPrivateKey
    other_public_pem: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    private_pem, public_pem = generate_private_key_pem()
    other_private_pem, other_public_pem = generate_private_key_pem()
    private, other = load_private_key(private_pem), load_private_key(other_private_pem)
    public = load_public_key(public_pem)
    assert isinstance(private, rsa.RSAPrivateKey) and isinstance(other, rsa.RSAPrivateKey)
    assert isinstance(public, rsa.RSAPublicKey)
    return Keys(private, public, public_pem, other, other_public_pem)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    forbid_network(monkeypatch)
    # pyld's own default loader fetches with requests: nothing may fall back on it.
    monkeypatch.setattr(pyld.jsonld, "_default_document_loader", refuse)


def create(content: str = "<p>Assembly tonight at eight.</p>") -> dict[str, Any]:
    """An InterOcc communiqué as the outbox sends it."""
    note = build_note(
        note_id=NOTE,
        actor_id=ACTOR,
        followers=ACTOR + "/followers",
        content_html=content,
        language="en",
        published=CREATED,
        updated=None,
        hashtags=[("assembly", "https://interocc.example/tags/assembly")],
        summary=None,
    )
    return build_activity(
        activity_id=NOTE + "/activity",
        activity_type="Create",
        actor_id=ACTOR,
        obj=note,
        to=[PUBLIC],
        cc=[ACTOR + "/followers"],
        published=CREATED,
    )


def signed(keys: Keys, document: dict[str, Any] | None = None) -> dict[str, Any]:
    return ldsig.sign(
        create() if document is None else document,
        creator=KEY_ID,
        private_key=keys.private,
        created=CREATED,
    )


def assert_rejected(result: ldsig.Verified | Rejected, fragment: str) -> None:
    assert isinstance(result, Rejected), result
    assert fragment.lower() in result.reason.lower(), result.reason


# ---- the independent implementation (tests/support/ldsig_spec.py) ----------------------------


def independent_verify(document: dict[str, Any], public_key: PublicKey) -> bool:
    """RsaSignature2017 verification written from the algorithm, sharing no code with ldsig."""
    return ldsig_spec.verify(document, public_key)


def independent_sign(document: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return ldsig_spec.sign(document, key, creator=KEY_ID, created=CREATED_TEXT)


# ---- round trips -------------------------------------------------------------------------------


def test_sign_adds_a_mastodon_shaped_signature_and_verify_names_its_key(keys: Keys) -> None:
    document = create()
    before = copy.deepcopy(document)
    result = signed(keys, document)

    assert document == before  # a copy is signed
    assert {k: v for k, v in result.items() if k != "signature"} == document
    signature = result["signature"]
    assert set(signature) == {"type", "creator", "created", "signatureValue"}
    assert signature["type"] == "RsaSignature2017"
    assert signature["creator"] == KEY_ID
    assert signature["created"] == CREATED_TEXT
    assert len(base64.b64decode(signature["signatureValue"], validate=True)) == 256  # RSA-2048

    assert ldsig.verify(result, keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)
    assert ldsig.verify(result, keys.public) == ldsig.Verified(KEY_ID, CREATED)
    assert ldsig.creator_of(result) == KEY_ID


def test_an_independent_verifier_accepts_our_signature(keys: Keys) -> None:
    result = signed(keys)
    assert independent_verify(result, keys.public)
    tampered = copy.deepcopy(result)
    tampered["object"]["content"] = "<p>Assembly cancelled.</p>"
    assert not independent_verify(tampered, keys.public)


def test_we_accept_a_signature_made_by_an_independent_signer(keys: Keys) -> None:
    result = independent_sign(create(), keys.private)
    assert ldsig.verify(result, keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)


def test_signing_again_replaces_the_signature(keys: Keys) -> None:
    later = ldsig.sign(
        signed(keys), creator=KEY_ID, private_key=keys.private, created=CREATED + timedelta(hours=1)
    )
    assert later["signature"]["created"] == "2026-11-28T13:00:00Z"
    assert ldsig.verify(later, keys.public_pem) == ldsig.Verified(
        KEY_ID, CREATED + timedelta(hours=1)
    )


def test_created_is_written_in_utc_whole_seconds(keys: Keys) -> None:
    moment = datetime(2026, 11, 28, 13, 0, 0, 123456, tzinfo=UTC).astimezone(
        datetime.now(UTC).astimezone().tzinfo
    )
    result = ldsig.sign(create(), creator=KEY_ID, private_key=keys.private, created=moment)
    assert result["signature"]["created"] == "2026-11-28T13:00:00Z"


def test_the_signature_covers_meaning_not_spelling(keys: Keys) -> None:
    """Canonicalisation is over RDF: key order, a single value for a one-element array and a
    prefixed name for a full IRI do not change what was signed."""
    result = signed(keys)
    respelled = dict(reversed(list(copy.deepcopy(result).items())))
    respelled["to"] = PUBLIC
    respelled["object"]["to"] = "as:Public"
    assert ldsig.verify(respelled, keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)


def test_properties_no_context_defines_are_neither_signed_nor_read(keys: Keys) -> None:
    """The limit of RsaSignature2017: what no context defines drops out of the canonical form,
    so it can be changed freely; normalise (how a verified document is read) drops it too."""
    result = signed(keys)
    result["object"]["undefinedTerm"] = "added after signing"
    assert ldsig.verify(result, keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)
    assert "undefinedTerm" not in normalise(result)["object"]


async def test_off_loop_wrappers(keys: Keys) -> None:
    result = await ldsig.sign_off_loop(
        create(), creator=KEY_ID, private_key=keys.private, created=CREATED
    )
    assert result == signed(keys)  # PKCS#1 v1.5 signatures are deterministic
    assert await ldsig.verify_off_loop(result, keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)
    assert_rejected(await ldsig.verify_off_loop(create(), keys.public_pem), "no signature")


# ---- refusals: the signature itself --------------------------------------------------------


def with_signature(keys: Keys, **changes: Any) -> dict[str, Any]:
    result = signed(keys)
    for name, value in changes.items():
        if value is None:
            del result["signature"][name]
        else:
            result["signature"][name] = value
    return result


def test_a_document_without_signature_is_refused(keys: Keys) -> None:
    assert_rejected(ldsig.verify(create(), keys.public_pem), "no signature")
    assert ldsig.creator_of(create()) is None


@pytest.mark.parametrize(
    "signature",
    ["RsaSignature2017", ["RsaSignature2017"], 7],
)
def test_a_signature_that_is_not_an_object_is_refused(keys: Keys, signature: object) -> None:
    document = {**create(), "signature": signature}
    assert_rejected(ldsig.verify(document, keys.public_pem), "not an object")


@pytest.mark.parametrize(
    "signature_type", ["Ed25519Signature2018", "RsaSignature2018", ["RsaSignature2017"], None]
)
def test_other_signature_types_are_refused(keys: Keys, signature_type: object) -> None:
    result = with_signature(keys, type=signature_type)
    assert_rejected(ldsig.verify(result, keys.public_pem), "type is not RsaSignature2017")
    assert ldsig.creator_of(result) is None


@pytest.mark.parametrize("field", ["nonce", "domain", "id", "proofPurpose"])
def test_unknown_fields_are_refused(keys: Keys, field: str) -> None:
    result = with_signature(keys, **{field: "https://interocc.example/x"})
    assert_rejected(ldsig.verify(result, keys.public_pem), "fields other than")


@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        ("creator", "creator is missing"),
        ("created", "created is missing"),
        ("signatureValue", "signatureValue is missing"),
    ],
)
def test_missing_fields_are_refused(keys: Keys, field: str, fragment: str) -> None:
    result = with_signature(keys, **{field: None})
    assert_rejected(ldsig.verify(result, keys.public_pem), fragment)


@pytest.mark.parametrize(
    "creator", ["#main-key", "main-key", "acct:alice@remote.example", "https:///nohost", 42]
)
def test_a_creator_that_is_not_an_http_url_is_refused(keys: Keys, creator: object) -> None:
    # A relative IRI would drop out of the canonical options, leaving the creator unsigned.
    result = with_signature(keys, creator=creator)
    assert_rejected(ldsig.verify(result, keys.public_pem), "creator")


@pytest.mark.parametrize("created", ["yesterday", "2026-11-28", "2026-13-28T12:00:00Z", 0])
def test_a_malformed_created_is_refused(keys: Keys, created: object) -> None:
    result = with_signature(keys, created=created)
    assert_rejected(ldsig.verify(result, keys.public_pem), "created")


@pytest.mark.parametrize("value", ["not base64!", "AAAA=AAA", "QUJD\nREVG", "", "A" * 4000, 12345])
def test_a_signature_value_that_is_not_base64_is_refused(keys: Keys, value: object) -> None:
    result = with_signature(keys, signatureValue=value)
    assert_rejected(ldsig.verify(result, keys.public_pem), "signatureValue")


# ---- refusals: a signature that does not hold ----------------------------------------------


def test_changed_content_is_refused(keys: Keys) -> None:
    result = signed(keys)
    result["object"]["content"] = "<p>Assembly cancelled.</p>"
    assert_rejected(ldsig.verify(result, keys.public_pem), "does not match")


def test_a_changed_actor_is_refused(keys: Keys) -> None:
    result = signed(keys)
    result["actor"] = "https://elsewhere.example/actors/mallory"
    assert_rejected(ldsig.verify(result, keys.public_pem), "does not match")


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["cc"].append("https://elsewhere.example/actors/mallory"),
        lambda d: d.__setitem__("type", "Update"),
        lambda d: d["object"].__setitem__("sensitive", True),
        lambda d: d["object"]["tag"].clear(),
        lambda d: d.pop("published"),
        # Without the extension terms, "sensitive" no longer means as:sensitive.
        lambda d: d.__setitem__("@context", CONTEXT[:2]),
    ],
    ids=["cc", "type", "sensitive", "tag", "published", "context"],
)
def test_any_signed_change_is_refused(keys: Keys, change: Any) -> None:
    result = signed(keys)
    change(result)
    assert_rejected(ldsig.verify(result, keys.public_pem), "does not match")


def test_another_key_is_refused(keys: Keys) -> None:
    result = signed(keys)
    assert_rejected(ldsig.verify(result, keys.other_public_pem), "does not match")
    forged = ldsig.sign(create(), creator=KEY_ID, private_key=keys.other, created=CREATED)
    assert_rejected(ldsig.verify(forged, keys.public_pem), "does not match")


@pytest.mark.parametrize(
    "changes",
    [
        {"created": "2026-11-29T12:00:00Z"},
        {"creator": "https://interocc.example/actors/other#main-key"},
    ],
)
def test_a_signature_over_other_options_is_refused(keys: Keys, changes: dict[str, str]) -> None:
    result = with_signature(keys, **changes)
    assert_rejected(ldsig.verify(result, keys.public_pem), "does not match")


def test_a_signature_moved_to_another_document_is_refused(keys: Keys) -> None:
    other = create("<p>Another communiqué.</p>")
    other["signature"] = signed(keys)["signature"]
    assert_rejected(ldsig.verify(other, keys.public_pem), "does not match")


def test_keys_that_are_not_rsa_are_refused(keys: Keys) -> None:
    result = signed(keys)
    assert_rejected(ldsig.verify(result, ed25519.Ed25519PrivateKey.generate().public_key()), "RSA")
    assert_rejected(ldsig.verify(result, "not a PEM"), "RSA")
    with pytest.raises(ValueError, match="RSA"):
        ldsig.sign(
            create(),
            creator=KEY_ID,
            private_key=ed25519.Ed25519PrivateKey.generate(),
            created=CREATED,
        )


@pytest.mark.parametrize("document", [None, "https://interocc.example/x", [], 3])
def test_what_is_not_a_json_object_is_refused(keys: Keys, document: object) -> None:
    assert_rejected(ldsig.verify(document, keys.public_pem), "not a JSON object")
    assert ldsig.creator_of(document) is None


def test_a_document_without_context_is_refused(keys: Keys) -> None:
    # Without @context only keywords survive canonicalisation: the signature would cover nothing.
    bare = {k: v for k, v in signed(keys).items() if k != "@context"}
    assert_rejected(ldsig.verify(bare, keys.public_pem), "no @context")
    with pytest.raises(ValueError, match="no @context"):
        signed(keys, {k: v for k, v in create().items() if k != "@context"})


def test_sign_refuses_a_creator_that_is_not_an_http_url(keys: Keys) -> None:
    with pytest.raises(ValueError, match="creator"):
        ldsig.sign(create(), creator="#main-key", private_key=keys.private, created=CREATED)


# ---- contexts: offline only ------------------------------------------------------------------


@pytest.mark.parametrize(
    "context",
    [
        [CONTEXT[0], "https://unknown.example/ns/v1"],
        [*CONTEXT, "http://schema.example/context.jsonld"],
        # JSON-LD 1.1 lets an inline context import, or scope, another by URL.
        [CONTEXT[0], {"@import": "https://unknown.example/ns/v1"}],
        [CONTEXT[0], {"Note": {"@id": "as:Note", "@context": "https://unknown.example/ns/v1"}}],
    ],
    ids=["top-level", "appended", "import", "type-scoped"],
)
def test_a_context_not_available_offline_is_refused_without_a_fetch(
    keys: Keys, context: list[Any]
) -> None:
    document = {**create(), "@context": context}
    with pytest.raises(ValueError, match="not available offline"):
        signed(keys, document)
    # A signature made by someone holding that context is refused, not checked half-blind.
    result = {**document, "signature": signed(keys)["signature"]}
    assert_rejected(ldsig.verify(result, keys.public_pem), "not available offline")


def test_contexts_are_read_from_our_offline_tables(keys: Keys) -> None:
    """identity/v1 (the options' context) and the http:// spelling of a known context resolve."""
    document = {**create(), "@context": ["http://www.w3.org/ns/activitystreams", *CONTEXT[1:]]}
    assert ldsig.verify(signed(keys, document), keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)


# ---- bounded work ------------------------------------------------------------------------------


def test_documents_outside_the_bounds_are_refused(keys: Keys) -> None:
    document = create()
    document["object"]["tag"] = [{"type": "Hashtag", "name": "#x"}] * (bounds.MAX_VALUES // 3)
    with pytest.raises(ValueError, match="values"):
        signed(keys, document)
    document["signature"] = signed(keys)["signature"]
    assert_rejected(ldsig.verify(document, keys.public_pem), "values")


def test_a_graph_that_is_costly_to_canonicalise_is_refused_quickly(keys: Keys) -> None:
    """Eight blank nodes all linked to each other make URDNA2015 try 8! orders per node (pyld
    alone takes tens of seconds); a small document, well inside the bounds."""
    nodes = [
        {"@id": f"_:n{i}", "tag": [{"@id": f"_:n{j}"} for j in range(8) if j != i]}
        for i in range(8)
    ]
    document = {"@context": CONTEXT, "@graph": nodes}
    started = time.perf_counter()
    with pytest.raises(ValueError, match="blank nodes"):
        signed(keys, document)
    document["signature"] = signed(keys)["signature"]
    assert_rejected(ldsig.verify(document, keys.public_pem), "blank nodes")
    assert time.perf_counter() - started < 2


def test_look_alike_blank_nodes_within_the_budget_still_verify(keys: Keys) -> None:
    """Anonymous attachments that differ only by position are what real documents contain."""
    document = create()
    document["object"]["attachment"] = [
        {"type": "Document", "mediaType": "image/png", "replies": {"type": "Collection"}}
        for _ in range(50)
    ]
    result = signed(keys, document)
    assert ldsig.verify(result, keys.public_pem) == ldsig.Verified(KEY_ID, CREATED)
    assert independent_verify(result, keys.public)
