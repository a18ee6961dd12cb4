"""The JSON-LD fast path: the same answer as pyld whenever it answers, and it answers often.

``fast_normalise`` returns None for anything its rules do not cover; those documents take the
full path (``normalise_full``). So each test here checks one direction: an answer from the fast
path equals pyld's. The trick cases, thousands of generated variants of common activities and
the real documents of the reference leg (tests/reference/test_fast_path.py) are the evidence.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from server.activitypub import jsonld
from server.activitypub.jsonld import JsonLdError, fast_normalise, normalise, normalise_full
from tests.jsonld_cases import CASES
from tests.test_jsonld import FEDIFY_ACCEPT, MASTODON_CREATE

AS = "https://www.w3.org/ns/activitystreams"
SEC = "https://w3id.org/security/v1"
PUBLIC = AS + "#Public"


def _full(doc: Any) -> Any:
    try:
        return normalise_full(copy.deepcopy(doc))
    except JsonLdError as exc:
        return ("refused", str(exc))


def _agrees(doc: Any) -> bool:
    """True if the fast path answered (and then its answer must be pyld's)."""
    fast = fast_normalise(copy.deepcopy(doc))
    if fast is None:
        return False
    assert fast == _full(doc), json.dumps(doc, indent=1)
    return True


REPLY: dict[str, Any] = {
    "@context": AS,
    "id": "https://peer.example/users/dana/statuses/1/activity",
    "type": "Create",
    "actor": "https://peer.example/users/dana",
    "to": [PUBLIC],
    "object": {
        "id": "https://peer.example/users/dana/statuses/1",
        "type": "Note",
        "attributedTo": "https://peer.example/users/dana",
        "inReplyTo": "https://assembly.example/ga/communiques/1",
        "content": "<p>Solidarity</p>",
        "published": "2026-11-28T12:00:00Z",
        "to": [PUBLIC],
    },
}
FOLLOW = {
    "@context": [AS, SEC],
    "id": "https://peer.example/follows/1",
    "type": "Follow",
    "actor": "https://peer.example/users/dana",
    "object": "https://assembly.example/ga",
}
UNDO = {
    "@context": AS,
    "id": "https://peer.example/users/dana#undo/1",
    "type": "Undo",
    "actor": "https://peer.example/users/dana",
    "object": {k: v for k, v in FOLLOW.items() if k != "@context"},
}
DELETE = {
    "@context": AS,
    "id": "https://peer.example/users/dana/statuses/1#delete",
    "type": "Delete",
    "actor": "https://peer.example/users/dana",
    "to": [PUBLIC],
    "object": {"id": "https://peer.example/users/dana/statuses/1", "type": "Tombstone"},
}
COMMON = {
    "reply": REPLY,
    "follow": FOLLOW,
    "undo": UNDO,
    "delete": DELETE,
    "mastodon-create": MASTODON_CREATE,
}


# Fedify's documents name the data-integrity and multikey contexts, which the fast path does not
# cover: they take the full path (FEDIFY_ACCEPT is among the generated bases below).
@pytest.mark.parametrize("name", sorted(COMMON))
def test_common_activities_take_the_fast_path(name: str) -> None:
    assert _agrees(COMMON[name])


def test_normalise_answers_from_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pyld(doc: Any) -> Any:
        raise AssertionError("the full path ran")

    expected = _full(REPLY)
    monkeypatch.setattr(jsonld, "normalise_full", no_pyld)
    assert normalise(copy.deepcopy(REPLY)) == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_trick_case(name: str) -> None:
    _agrees(CASES[name])


@pytest.mark.parametrize(
    "context",
    [
        # A canonical term redefined, even one the document does not use.
        [AS, {"content": "https://evil.example/ns#content"}],
        [AS, {"inbox": {"@id": "https://evil.example/ns#inbox", "@type": "@id"}}],
        [AS, {"to": {"@id": "as:to"}}],  # same IRI, not a reference any more
        [AS, {"@vocab": "https://evil.example/ns#"}],
        [AS, {"@base": "https://evil.example/"}],
        [AS, {"@language": "en"}],
        [AS, {"id": "@type"}],
        [AS, {"Note": "https://evil.example/ns#Note"}],
        [AS, {"as": "https://evil.example/ns#"}],
        [AS, {"object": {"@id": "as:object", "@type": "@id", "@context": {"x": "as:content"}}}],
        ["https://unknown.example/ns", AS],
        [AS, "https://unknown.example/ns"],
        [AS, {"content": None}],
        {"@version": 1.1},
    ],
)
def test_contexts_that_change_meaning_take_the_full_path(context: Any) -> None:
    doc = copy.deepcopy(REPLY)
    doc["@context"] = context
    assert fast_normalise(doc) is None


# -- generated variants ---------------------------------------------------------------------

# Values a property may take in a remote document, good and bad.
VALUES: list[Any] = [
    "https://peer.example/x",
    "https://peer.example/x#frag",
    "http://peer.example/y",
    "as:Public",
    "Public",
    PUBLIC,
    "https://www.w3.org/ns/activitystreams#Note",
    "https://w3id.org/security#publicKey",
    "relative/path",
    "_:b0",
    "mailto:a@b.example",
    "plain text",
    "",
    "<p>html</p>",
    "2026-11-28T12:00:00Z",
    0,
    1,
    -3,
    2.5,
    True,
    False,
    None,
    [],
    [None],
    [[]],
    ["https://peer.example/a", "https://peer.example/b"],
    ["one"],
    [1, "two"],
    {},
    {"id": "https://peer.example/n"},
    {"type": "Link", "href": "https://peer.example/l"},
    {"type": "Note", "content": "nested"},
    {"@id": "https://peer.example/n"},
    {"@value": "v"},
    {"@value": "v", "@language": "es"},
    {"@list": ["https://peer.example/a"]},
    {"@set": ["x"]},
    {"en": "hello", "es": "hola"},
    {"EN": "hello", "es-AR": ["hola", "che"]},
    {"und": "x"},
    {"id": "https://peer.example/n", "type": ["Note", "Article"]},
    {"type": "Mention", "href": "https://peer.example/m", "name": "@m"},
    {"type": "Hashtag", "name": "#t", "href": "https://peer.example/t"},
    {"type": "Image", "url": "https://peer.example/i.png", "mediaType": "image/png"},
    {"type": "Unknown", "foo": "bar"},
    {"type": "Emoji", "icon": {"type": "Image", "url": "https://peer.example/e.png"}},
]
KEYS = [
    "id",
    "type",
    "actor",
    "object",
    "target",
    "to",
    "cc",
    "bto",
    "audience",
    "content",
    "contentMap",
    "name",
    "nameMap",
    "summary",
    "summaryMap",
    "url",
    "href",
    "inReplyTo",
    "attributedTo",
    "published",
    "updated",
    "tag",
    "attachment",
    "mediaType",
    "sensitive",
    "endpoints",
    "sharedInbox",
    "publicKey",
    "publicKeyPem",
    "owner",
    "orderedItems",
    "items",
    "totalItems",
    "first",
    "next",
    "icon",
    "image",
    "manuallyApprovesFollowers",
    "atomUri",
    "conversation",
    "focalPoint",
    "blurhash",
    "unknownTerm",
    "as:content",
    "ostatus:atomUri",
    "toot:blurhash",
    "https://peer.example/ns#prop",
    "@type",
    "@id",
    "@value",
    "expiration",
    "votersCount",
    "quoteUrl",
]
TYPES: list[Any] = [
    "Note",
    "Create",
    "Question",
    "Emoji",
    "Hashtag",
    "PropertyValue",
    "Unknown",
    "as:Note",
    "toot:Emoji",
    ["Note", "Article"],
    [],
    "https://peer.example/ns#Type",
    3,
]


def _mutate(rng: random.Random, doc: dict[str, Any]) -> None:
    """One random change somewhere in ``doc`` (the top or a nested object)."""
    nodes = [doc] + [v for v in doc.values() if isinstance(v, dict) and v and "@list" not in v]
    node = rng.choice(nodes)
    what = rng.random()
    if what < 0.55:
        node[rng.choice(KEYS)] = copy.deepcopy(rng.choice(VALUES))
    elif what < 0.7:
        node["type"] = copy.deepcopy(rng.choice(TYPES))
    elif what < 0.85 and node:
        del node[rng.choice(sorted(node, key=str))]
    else:
        key = rng.choice(KEYS)
        node[key] = [copy.deepcopy(rng.choice(VALUES)) for _ in range(rng.randint(1, 3))]


BASES = [REPLY, FOLLOW, UNDO, DELETE, MASTODON_CREATE, FEDIFY_ACCEPT]


@pytest.mark.parametrize("seed", range(8))
def test_generated_variants_agree(seed: int) -> None:
    rng = random.Random(seed)
    answered = 0
    tried = 250
    for _ in range(tried):
        doc = copy.deepcopy(rng.choice(BASES))
        for _ in range(rng.randint(1, 4)):
            _mutate(rng, doc)
        if _agrees(doc):
            answered += 1
    # The comparisons above mean something only if the fast path answers a good share.
    assert answered >= tried // 8, answered


@pytest.mark.parametrize("key", KEYS)
def test_every_value_under_every_key(key: str) -> None:
    """Each property with each kind of value, in a reply's Note: the fast path answers for the
    shapes it knows and agrees with pyld on each of them."""
    answered = 0
    for value in VALUES:
        doc = copy.deepcopy(REPLY)
        doc["object"][key] = copy.deepcopy(value)
        answered += _agrees(doc)
    if ":" not in key and not key.startswith("@"):  # compact IRIs and keywords: pyld's
        assert answered, "the fast path declined every value"


def _signed_create() -> dict[str, Any]:
    """A Create{Note} as InterOcc sends it: proofs on both, a Linked Data signature over all."""
    from datetime import UTC, datetime

    from server.activitypub import proofs, vocab
    from server.activitypub.signatures import generate_private_key_pem

    actor = "https://a.example/actors/plaza"
    private_pem, _public = generate_private_key_pem()
    keys = proofs.SigningKeys(
        actor,
        actor + "#main-key",
        private_pem,
        actor + "#ed25519-key",
        proofs.new_ed25519_private_key_pem(),
    )
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    note = vocab.build_note(
        note_id="https://a.example/c/1",
        actor_id=actor,
        followers=actor + "/followers",
        content_html="<p>Asamblea general.</p>",
        language="es",
        published=now,
        updated=None,
        hashtags=[("asamblea", "https://a.example/tags/asamblea")],
    )
    create = vocab.build_activity(
        activity_id="https://a.example/a/1",
        activity_type="Create",
        actor_id=actor,
        obj=note,
        to=[vocab.PUBLIC],
        cc=[actor + "/followers"],
        published=now,
    )
    return proofs.secure_activity(create, keys, now)


def test_a_signed_activity_takes_the_fast_path_without_its_proofs() -> None:
    """FEP-8b32 proofs need the data-integrity context, which the fast path does not take:
    normalise reads a signed activity without them, and gets what pyld gets, proofs aside."""
    signed = _signed_create()
    assert "proof" in signed and "proof" in signed["object"]
    assert jsonld.fast_normalise(signed) is None  # as sent, it would need pyld
    unproven = jsonld._without_proofs(signed)
    assert unproven is not None and jsonld.fast_normalise(unproven) is not None
    full = jsonld.normalise_full(signed)
    assert full.pop("sec:proof") and full["object"].pop("sec:proof")
    assert jsonld.normalise(signed) == full


def test_data_integrity_terms_used_elsewhere_keep_the_full_path() -> None:
    signed = _signed_create()
    signed["object"]["tag"].append({"type": "DataIntegrityProof", "name": "odd"})
    assert jsonld._without_proofs(signed) is None
    nested = _signed_create()
    nested["object"]["attachment"] = [{"type": "Note", "proof": {"type": "x"}}]
    assert jsonld._without_proofs(nested) is None
    other_context = _signed_create()
    other_context["object"]["@context"] = ["https://www.w3.org/ns/activitystreams", {"x": "y:"}]
    assert jsonld._without_proofs(other_context) is None
