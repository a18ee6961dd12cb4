"""JSON-LD normalisation of incoming documents, with realistic payloads and no network."""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import uuid
from typing import Any

import pytest

from server.activitypub import jsonld
from server.activitypub.jsonld import AS_PUBLIC, JsonLdError, as_list, id_of, normalise
from tests.support.nonet import forbid_network


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection or resolve a name fails the test."""
    forbid_network(monkeypatch)


# Mastodon 4.x, as it delivers a public post (context array copied from its serializer output).
MASTODON_CREATE: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        {
            "ostatus": "http://ostatus.org#",
            "atomUri": "ostatus:atomUri",
            "inReplyToAtomUri": "ostatus:inReplyToAtomUri",
            "conversation": "ostatus:conversation",
            "sensitive": "as:sensitive",
            "toot": "http://joinmastodon.org/ns#",
            "votersCount": "toot:votersCount",
            "blurhash": "toot:blurhash",
            "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
            "Hashtag": "as:Hashtag",
            "Emoji": "toot:Emoji",
        },
    ],
    "id": "https://mastodon.example/users/alice/statuses/112233/activity",
    "type": "Create",
    "actor": "https://mastodon.example/users/alice",
    "published": "2024-05-01T12:00:00Z",
    "to": ["https://www.w3.org/ns/activitystreams#Public"],
    "cc": [
        "https://mastodon.example/users/alice/followers",
        "https://assembly.example/ga/plaza",
    ],
    "object": {
        "id": "https://mastodon.example/users/alice/statuses/112233",
        "type": "Note",
        "summary": None,
        "inReplyTo": "https://assembly.example/ga/plaza/communiques/7",
        "published": "2024-05-01T12:00:00Z",
        "url": "https://mastodon.example/@alice/112233",
        "attributedTo": "https://mastodon.example/users/alice",
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "cc": [
            "https://mastodon.example/users/alice/followers",
            "https://assembly.example/ga/plaza",
        ],
        "sensitive": False,
        "atomUri": "https://mastodon.example/users/alice/statuses/112233",
        "inReplyToAtomUri": "https://assembly.example/ga/plaza/communiques/7",
        "conversation": "tag:mastodon.example,2024-05-01:objectId=42:objectType=Conversation",
        "content": '<p>See you at the <a href="https://mastodon.example/tags/assembly">#assembly</a>'
        " :blobcat:</p>",
        "contentMap": {
            "en": '<p>See you at the <a href="https://mastodon.example/tags/assembly">#assembly'
            "</a> :blobcat:</p>"
        },
        "attachment": [
            {
                "type": "Document",
                "mediaType": "image/jpeg",
                "url": "https://files.mastodon.example/media/1.jpg",
                "name": "A square full of tents",
                "blurhash": "UBL_:rOpGG-;~qRjWBay",
                "focalPoint": [0.0, 0.0],
                "width": 1200,
                "height": 800,
            }
        ],
        "tag": [
            {
                "type": "Mention",
                "href": "https://assembly.example/ga/plaza",
                "name": "@plaza@assembly.example",
            },
            {
                "type": "Hashtag",
                "href": "https://mastodon.example/tags/assembly",
                "name": "#assembly",
            },
            {
                "id": "https://mastodon.example/emojis/5",
                "type": "Emoji",
                "name": ":blobcat:",
                "updated": "2023-01-01T00:00:00Z",
                "icon": {
                    "type": "Image",
                    "mediaType": "image/png",
                    "url": "https://files.mastodon.example/emoji/blobcat.png",
                },
            },
        ],
        "replies": {
            "id": "https://mastodon.example/users/alice/statuses/112233/replies",
            "type": "Collection",
            "first": {
                "type": "CollectionPage",
                "next": "https://mastodon.example/users/alice/statuses/112233/replies?page=true",
                "partOf": "https://mastodon.example/users/alice/statuses/112233/replies",
                "items": [],
            },
        },
    },
}

MASTODON_ACTOR: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        {
            "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
            "toot": "http://joinmastodon.org/ns#",
            "featured": {"@id": "toot:featured", "@type": "@id"},
            "featuredTags": {"@id": "toot:featuredTags", "@type": "@id"},
            "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
            "movedTo": {"@id": "as:movedTo", "@type": "@id"},
            "schema": "http://schema.org#",
            "PropertyValue": "schema:PropertyValue",
            "value": "schema:value",
            "discoverable": "toot:discoverable",
            "suspended": "toot:suspended",
            "memorial": "toot:memorial",
            "indexable": "toot:indexable",
            "attributionDomains": {"@id": "toot:attributionDomains", "@type": "@id"},
            "Emoji": "toot:Emoji",
            "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
        },
    ],
    "id": "https://mastodon.example/users/alice",
    "type": "Person",
    "following": "https://mastodon.example/users/alice/following",
    "followers": "https://mastodon.example/users/alice/followers",
    "inbox": "https://mastodon.example/users/alice/inbox",
    "outbox": "https://mastodon.example/users/alice/outbox",
    "featured": "https://mastodon.example/users/alice/collections/featured",
    "featuredTags": "https://mastodon.example/users/alice/collections/tags",
    "preferredUsername": "alice",
    "name": "Alice",
    "summary": "<p>Occupying since 2011.</p>",
    "url": "https://mastodon.example/@alice",
    "manuallyApprovesFollowers": False,
    "discoverable": True,
    "indexable": False,
    "published": "2022-11-05T00:00:00Z",
    "memorial": False,
    "alsoKnownAs": ["https://old.example/users/alice"],
    "publicKey": {
        "id": "https://mastodon.example/users/alice#main-key",
        "owner": "https://mastodon.example/users/alice",
        "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n"
        "-----END PUBLIC KEY-----\n",
    },
    "tag": [],
    "attachment": [
        {
            "type": "PropertyValue",
            "name": "Website",
            "value": '<a href="https://alice.example">alice.example</a>',
        }
    ],
    "endpoints": {"sharedInbox": "https://mastodon.example/inbox"},
    "icon": {
        "type": "Image",
        "mediaType": "image/png",
        "url": "https://files.mastodon.example/accounts/avatars/alice.png",
    },
}

# Fedify 1.x: data-integrity and multikey contexts, an Object Integrity Proof, and the Follow
# being accepted embedded as the object.
FEDIFY_ACCEPT: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/data-integrity/v1",
        "https://w3id.org/security/multikey/v1",
    ],
    "id": "https://fedify.example/users/bob#accepts/https%3A%2F%2Fassembly.example%2Ff%2F1",
    "type": "Accept",
    "actor": "https://fedify.example/users/bob",
    "to": "https://assembly.example/ga/plaza",
    "object": {
        "id": "https://assembly.example/ga/plaza/follows/1",
        "type": "Follow",
        "actor": "https://assembly.example/ga/plaza",
        "object": "https://fedify.example/users/bob",
    },
    "proof": {
        "type": "DataIntegrityProof",
        "cryptosuite": "eddsa-jcs-2022",
        "verificationMethod": "https://fedify.example/users/bob#key-2",
        "proofPurpose": "assertionMethod",
        "proofValue": "z3sXaxjKs4M3BRicwWA9peyNPJvJqxtGsDmpt1jjoHCjgeUf71TRFz56osPSfDErszyLp",
        "created": "2024-05-01T12:00:00Z",
    },
}

FEDIFY_ACTOR: dict[str, Any] = {
    "@context": [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        "https://w3id.org/security/data-integrity/v1",
        "https://www.w3.org/ns/did/v1",
        "https://w3id.org/security/multikey/v1",
        {
            "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
            "toot": "http://joinmastodon.org/ns#",
            "discoverable": "toot:discoverable",
            "indexable": "toot:indexable",
        },
    ],
    "id": "https://fedify.example/users/bob",
    "type": "Person",
    "preferredUsername": "bob",
    "inbox": "https://fedify.example/users/bob/inbox",
    "endpoints": {"type": "as:Endpoints", "sharedInbox": "https://fedify.example/inbox"},
    "manuallyApprovesFollowers": True,
    "discoverable": True,
    "publicKey": {
        "id": "https://fedify.example/users/bob#main-key",
        "type": "CryptographicKey",
        "owner": "https://fedify.example/users/bob",
        "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
    },
    "assertionMethod": [
        {
            "id": "https://fedify.example/users/bob#key-2",
            "type": "Multikey",
            "controller": "https://fedify.example/users/bob",
            "publicKeyMultibase": "z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2",
        }
    ],
}


def test_mastodon_create_note() -> None:
    doc = normalise(copy.deepcopy(MASTODON_CREATE))
    assert "@context" not in doc
    assert doc["id"] == "https://mastodon.example/users/alice/statuses/112233/activity"
    assert doc["type"] == "Create"
    assert doc["actor"] == "https://mastodon.example/users/alice"
    assert as_list(doc["to"]) == [AS_PUBLIC]
    assert as_list(doc["cc"]) == [
        "https://mastodon.example/users/alice/followers",
        "https://assembly.example/ga/plaza",
    ]
    note = doc["object"]
    assert note["type"] == "Note"
    assert note["inReplyTo"] == "https://assembly.example/ga/plaza/communiques/7"
    assert note["attributedTo"] == "https://mastodon.example/users/alice"
    assert as_list(note["to"]) == [AS_PUBLIC]
    assert note["sensitive"] is False
    assert note["published"] == "2024-05-01T12:00:00Z"
    assert note["content"].startswith("<p>See you at the")
    assert set(note["contentMap"]) == {"en"}
    assert "summary" not in note  # null means absent
    tags = {t["type"]: t for t in as_list(note["tag"])}
    assert set(tags) == {"Mention", "Hashtag", "Emoji"}
    assert tags["Hashtag"]["name"] == "#assembly"
    assert id_of(tags["Mention"]) == "https://assembly.example/ga/plaza"
    assert tags["Emoji"]["icon"]["url"] == "https://files.mastodon.example/emoji/blobcat.png"
    (attachment,) = as_list(note["attachment"])
    assert attachment["url"] == "https://files.mastodon.example/media/1.jpg"
    assert attachment["width"] == 1200
    assert note["replies"]["first"]["items"] == []
    # Mastodon's ostatus terms are not ours; they stay readable under their prefix.
    assert note["ostatus:conversation"].startswith("tag:mastodon.example")


def test_mastodon_actor() -> None:
    doc = normalise(copy.deepcopy(MASTODON_ACTOR))
    assert doc["type"] == "Person"
    assert doc["inbox"] == "https://mastodon.example/users/alice/inbox"
    assert doc["endpoints"]["sharedInbox"] == "https://mastodon.example/inbox"
    key = doc["publicKey"]
    assert key["id"] == "https://mastodon.example/users/alice#main-key"
    assert key["owner"] == "https://mastodon.example/users/alice"
    assert key["publicKeyPem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert doc["manuallyApprovesFollowers"] is False
    assert doc["discoverable"] is True
    assert doc["indexable"] is False
    assert doc["featured"] == "https://mastodon.example/users/alice/collections/featured"
    assert doc["featuredTags"] == "https://mastodon.example/users/alice/collections/tags"
    assert as_list(doc["alsoKnownAs"]) == ["https://old.example/users/alice"]
    (field,) = as_list(doc["attachment"])
    assert field == {
        "type": "PropertyValue",
        "name": "Website",
        "value": '<a href="https://alice.example">alice.example</a>',
    }
    assert doc["icon"]["url"].endswith("alice.png")


def test_fedify_accept_with_embedded_follow() -> None:
    doc = normalise(copy.deepcopy(FEDIFY_ACCEPT))
    assert doc["type"] == "Accept"
    assert doc["actor"] == "https://fedify.example/users/bob"
    follow = doc["object"]
    assert follow == {
        "id": "https://assembly.example/ga/plaza/follows/1",
        "type": "Follow",
        "actor": "https://assembly.example/ga/plaza",
        "object": "https://fedify.example/users/bob",
    }
    assert id_of(doc["object"]) == "https://assembly.example/ga/plaza/follows/1"


def test_fedify_actor_keys() -> None:
    doc = normalise(copy.deepcopy(FEDIFY_ACTOR))
    assert doc["type"] == "Person"
    assert doc["endpoints"]["sharedInbox"] == "https://fedify.example/inbox"
    assert doc["publicKey"]["owner"] == "https://fedify.example/users/bob"
    assert doc["manuallyApprovesFollowers"] is True
    (method,) = as_list(doc["assertionMethod"])
    assert method["type"] == "Multikey"
    assert method["controller"] == "https://fedify.example/users/bob"
    assert method["publicKeyMultibase"].startswith("z6Mk")


@pytest.mark.parametrize("spelling", ["Public", "as:Public", AS_PUBLIC])
def test_public_spellings(spelling: str) -> None:
    doc = normalise(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": "https://a.example/notes/1",
            "type": "Note",
            "to": [spelling, "https://a.example/users/x/followers"],
            "cc": spelling,
            "audience": spelling,
            "object": {"type": "Note", "bcc": [spelling], "bto": spelling},
        }
    )
    assert as_list(doc["to"]) == [AS_PUBLIC, "https://a.example/users/x/followers"]
    assert doc["cc"] == AS_PUBLIC
    assert doc["audience"] == AS_PUBLIC
    assert as_list(doc["object"]["bcc"]) == [AS_PUBLIC]
    assert doc["object"]["bto"] == AS_PUBLIC


def test_public_only_rewritten_in_addressing() -> None:
    doc = normalise(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "type": "Note",
            "name": "Public",
            "content": "as:Public",
        }
    )
    assert doc["name"] == "Public"
    assert doc["content"] == "as:Public"


def test_unknown_context_is_empty_and_never_fetched(caplog: pytest.LogCaptureFixture) -> None:
    url = f"https://unknown-{uuid.uuid4().hex}.example/ns"
    doc = {
        "@context": ["https://www.w3.org/ns/activitystreams", url],
        "id": "https://b.example/notes/1",
        "type": "Note",
        "content": "still here",
        "onlyInUnknownContext": "dropped",
    }
    with caplog.at_level(logging.WARNING, logger="server.activitypub.jsonld"):
        first = normalise(copy.deepcopy(doc))
        normalise(copy.deepcopy(doc))
    assert first == {"id": "https://b.example/notes/1", "type": "Note", "content": "still here"}
    warnings = [r for r in caplog.records if url in r.getMessage()]
    assert len(warnings) == 1  # once per URL, not per document

    loaded = jsonld.document_loader(url)
    assert loaded == {"contextUrl": None, "documentUrl": url, "document": {"@context": {}}}


def test_unknown_scoped_and_imported_contexts_are_not_fetched() -> None:
    doc = normalise(
        {
            "@context": [
                "https://www.w3.org/ns/activitystreams",
                {
                    "@version": 1.1,
                    "ext": {"@id": "https://c.example/ns#ext", "@context": "http://127.0.0.1/x"},
                },
                {"@import": "http://169.254.169.254/latest/meta-data"},
            ],
            "type": "Note",
            "ext": {"name": "inner"},
        }
    )
    assert doc["type"] == "Note"


def test_mastodon_namespace_url_is_not_a_document() -> None:
    # http://joinmastodon.org/ns has never served a context; some servers list it anyway.
    doc = normalise(
        {
            "@context": ["https://www.w3.org/ns/activitystreams", "http://joinmastodon.org/ns"],
            "type": "Person",
            "id": "https://d.example/u/1",
            "discoverable": True,
        }
    )
    assert doc == {"id": "https://d.example/u/1", "type": "Person"}


@pytest.mark.parametrize(
    "bad",
    [
        {"@context": 5},
        {"@context": "https://www.w3.org/ns/activitystreams", "id": 5},
        {"@context": {"@version": 2}},
        {"@context": [{"term": {"@id": 3}}]},
        {"@context": {"@vocab": 7}},
    ],
)
def test_invalid_json_ld_raises(bad: dict[str, Any]) -> None:
    with pytest.raises(JsonLdError) as info:
        normalise(bad)
    assert len(str(info.value)) < 80


def test_non_object_is_refused_not_fetched() -> None:
    with pytest.raises(JsonLdError):
        normalise("https://e.example/doc")  # type: ignore[arg-type]


def test_language_maps_preserved() -> None:
    doc = normalise(
        {
            "@context": "https://www.w3.org/ns/activitystreams",
            "type": "Note",
            "content": "<p>Asamblea</p>",
            "contentMap": {"es": "<p>Asamblea</p>", "en": "<p>Assembly</p>"},
            "nameMap": {"es": "Plaza", "ca": "Plaça"},
            "summaryMap": {"en": "CW"},
        }
    )
    assert doc["content"] == "<p>Asamblea</p>"
    assert doc["contentMap"] == {"es": "<p>Asamblea</p>", "en": "<p>Assembly</p>"}
    assert doc["nameMap"] == {"es": "Plaza", "ca": "Plaça"}
    assert doc["summaryMap"] == {"en": "CW"}


def test_pleroma_default_language() -> None:
    # Pleroma/Akkoma: their per-instance litepub context plus a default language.
    doc = normalise(
        {
            "@context": [
                "https://www.w3.org/ns/activitystreams",
                "https://pleroma.example/schemas/litepub-0.1.jsonld",
                {"@language": "und"},
            ],
            "id": "https://pleroma.example/objects/1",
            "type": "Note",
            "content": "hi",
            "summary": "cw",
            "mediaType": "text/html",
            "sensitive": True,
            "tag": [{"type": "Hashtag", "name": "#x", "href": "https://pleroma.example/tags/x"}],
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
        }
    )
    assert doc["content"] == "hi"
    assert doc["summary"] == "cw"
    assert doc["mediaType"] == "text/html"
    assert doc["sensitive"] is True
    assert doc["tag"] == {"type": "Hashtag", "name": "#x", "href": "https://pleroma.example/tags/x"}
    assert "contentMap" not in doc

    fr = normalise(
        {
            "@context": ["https://www.w3.org/ns/activitystreams", {"@language": "fr"}],
            "type": "Person",
            "preferredUsername": "camille",
            "content": "bonjour",
        }
    )
    assert fr["preferredUsername"] == "camille"
    assert fr["content"] == "bonjour"
    assert fr["contentMap"] == {"fr": "bonjour"}


def test_values_typed_differently_by_the_sender() -> None:
    # miscellany types sensitive as xsd:boolean; Lemmy maps "expires" to untyped as:endTime.
    misc = normalise(
        {
            "@context": [
                "https://www.w3.org/ns/activitystreams",
                "https://purl.archive.org/miscellany",
            ],
            "type": "Note",
            "sensitive": True,
            "manuallyApprovesFollowers": False,
        }
    )
    assert misc == {"type": "Note", "sensitive": True, "manuallyApprovesFollowers": False}
    lemmy = normalise(
        {
            "@context": [
                "https://join-lemmy.org/context.json",
                "https://www.w3.org/ns/activitystreams",
            ],
            "type": "Page",
            "id": "https://lemmy.example/post/1",
            "attributedTo": "https://lemmy.example/u/bob",
            "audience": "https://lemmy.example/c/assemblies",
            "sensitive": False,
            "expires": "2025-01-01T00:00:00Z",
        }
    )
    assert lemmy["endTime"] == "2025-01-01T00:00:00Z"
    assert lemmy["sensitive"] is False
    assert lemmy["audience"] == "https://lemmy.example/c/assemblies"
    untyped = normalise(
        {
            "@context": [
                "https://www.w3.org/ns/activitystreams",
                {"url": "as:url", "totalItems": "as:totalItems"},
            ],
            "type": "Collection",
            "url": "https://f.example/c",
            "totalItems": 3,
        }
    )
    assert untyped == {"type": "Collection", "url": "https://f.example/c", "totalItems": 3}


def test_gotosocial_context_is_bundled() -> None:
    doc = normalise(
        {
            "@context": [
                "https://gotosocial.org/ns",
                "https://www.w3.org/ns/activitystreams",
                {"sensitive": "as:sensitive", "Hashtag": "as:Hashtag"},
            ],
            "id": "https://gts.example/users/x/statuses/1",
            "type": "Note",
            "interactionPolicy": {
                "canLike": {"always": ["https://www.w3.org/ns/activitystreams#Public"]}
            },
            "to": "https://www.w3.org/ns/activitystreams#Public",
        }
    )
    assert doc["to"] == AS_PUBLIC
    assert "https://gotosocial.org/ns#interactionPolicy" in doc


@pytest.mark.parametrize(
    "url",
    [
        "https://www.w3.org/ns/activitystreams",
        "http://www.w3.org/ns/activitystreams",
        "https://www.w3.org/ns/activitystreams.jsonld",
        "https://www.w3.org/ns/activitystreams#",
        "https://www.w3.org/ns/activitystreams/",
        "HTTPS://WWW.W3.ORG/ns/activitystreams",
    ],
)
def test_loader_url_spellings(url: str) -> None:
    loaded = jsonld.document_loader(url, {})
    assert loaded["document"]["@context"]["as"] == "https://www.w3.org/ns/activitystreams#"
    assert loaded["documentUrl"] == url


def test_loader_serves_bundled_contexts_as_copies() -> None:
    for url in [
        "http://w3id.org/security/v1",
        "https://w3id.org/security/data-integrity/v2",
        "https://akkoma.example/schemas/litepub-0.1.jsonld",
        "https://litepub.social/litepub/context.jsonld",
    ]:
        assert jsonld.document_loader(url)["document"]["@context"], url
    first = jsonld.document_loader("https://w3id.org/security/v1")
    first["document"]["@context"].clear()
    assert jsonld.document_loader("https://w3id.org/security/v1")["document"]["@context"]


def test_w3c_contexts_come_from_the_installed_pyld() -> None:
    """ActivityStreams, security v1/v2 and DID v1 are pyld's own shipped files, not our copies."""
    from pyld.documentloader.frozen import BUNDLED_CONTEXTS

    for url in [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
        "https://w3id.org/security/v2",
        "https://www.w3.org/ns/did/v1",
    ]:
        shipped = json.loads(BUNDLED_CONTEXTS[url].read_text(encoding="utf-8"))
        assert jsonld.document_loader(url)["document"] == shipped, url


def test_tables_answer_their_urls() -> None:
    from server.activitypub.context_tables import tables

    for url, document in tables().items():
        assert jsonld.document_loader(url)["document"] == document, url
        assert set(document) == {"@context"}, url


def test_normalise_does_not_mutate_input() -> None:
    original = copy.deepcopy(MASTODON_CREATE)
    normalise(original)
    assert original == MASTODON_CREATE


def test_as_list() -> None:
    assert as_list(None) == []
    assert as_list([1, 2]) == [1, 2]
    assert as_list("x") == ["x"]
    assert as_list({"id": "x"}) == [{"id": "x"}]


def test_id_of() -> None:
    assert id_of("https://x.example/1") == "https://x.example/1"
    assert id_of({"id": "https://x.example/1", "type": "Note"}) == "https://x.example/1"
    assert id_of({"type": "Link", "href": "https://x.example/2"}) == "https://x.example/2"
    assert id_of({"type": "Note"}) is None
    assert id_of({"id": 5}) is None
    assert id_of(["https://x.example/1"]) is None
    assert id_of(None) is None


def test_the_network_guard_watches_this_thread_only() -> None:
    """The guard above is real: this thread may not look up or connect; another thread (the
    session's PostgreSQL pool) may."""
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.getaddrinfo("127.0.0.1", 5432)
    found: list[object] = []
    other = threading.Thread(target=lambda: found.append(socket.getaddrinfo("127.0.0.1", 5432)))
    other.start()
    other.join()
    assert found and found[0]
