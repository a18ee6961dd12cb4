"""JSON-LD trick cases: documents written for this project that exercise every context we read.

Each case names the context URLs a remote server may put in ``@context`` and uses the terms those
contexts define, in the shapes that change what ``normalise()`` returns: typed values
(``xsd:boolean``, ``@id``), language maps, scoped contexts, ``@graph`` containers, prefixes, terms
redefined by the sender. ``tests/jsonld_expected.json`` holds what ``normalise()`` returned for
each case when the contexts were still bundled as the publishers' own files; the context tables
that replaced them must give the same answers (``tests/test_jsonld_equivalence.py``). One
answer was changed on purpose since: ``no-context``, a document without ``@context``, is now
read as ActivityStreams (AS2-core §2.1.3) where it used to come out empty.

Run ``python -m tests.jsonld_cases`` to print the current answers as JSON (only to record a
deliberate change of behaviour).
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

from tests.test_jsonld import FEDIFY_ACCEPT, FEDIFY_ACTOR, MASTODON_ACTOR, MASTODON_CREATE

AS = "https://www.w3.org/ns/activitystreams"
SEC = "https://w3id.org/security/v1"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"

CASES: dict[str, dict[str, Any]] = {
    "mastodon-create": MASTODON_CREATE,
    "mastodon-actor": MASTODON_ACTOR,
    "fedify-accept": FEDIFY_ACCEPT,
    "fedify-actor": FEDIFY_ACTOR,
    "no-context": {
        "id": "https://a.example/notes/1",
        "type": "Note",
        "content": "read as AS2",
        "to": "Public",
    },
    "as2-http-and-jsonld-spellings": {
        "@context": [
            "http://www.w3.org/ns/activitystreams",
            "https://www.w3.org/ns/activitystreams.jsonld",
        ],
        "id": "https://a.example/notes/2",
        "type": "Note",
        "attributedTo": "https://a.example/u/a",
        "to": "as:Public",
    },
    "security-v1-key": {
        "@context": [AS, SEC],
        "id": "https://a.example/u/a",
        "type": "Person",
        "inbox": "https://a.example/u/a/inbox",
        "publicKey": {
            "id": "https://a.example/u/a#main-key",
            "owner": "https://a.example/u/a",
            "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        },
    },
    "security-v1-ld-signature": {
        "@context": [AS, SEC],
        "id": "https://a.example/u/a/statuses/1/activity",
        "type": "Create",
        "actor": "https://a.example/u/a",
        "object": "https://a.example/u/a/statuses/1",
        "signature": {
            "type": "RsaSignature2017",
            "creator": "https://a.example/u/a#main-key",
            "created": "2024-05-01T12:00:00Z",
            "signatureValue": "c2lnbmF0dXJl",
        },
    },
    "security-v2-and-did": {
        "@context": [AS, "https://w3id.org/security/v2", "https://www.w3.org/ns/did/v1"],
        "id": "https://a.example/u/b",
        "type": "Person",
        "assertionMethod": [
            {
                "id": "https://a.example/u/b#ed25519-key",
                "type": "Multikey",
                "controller": "https://a.example/u/b",
                "publicKeyMultibase": "z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2",
            }
        ],
    },
    "identity-v1-signature-options": {
        "@context": ["https://w3id.org/identity/v1"],
        "type": "RsaSignature2017",
        "creator": "https://a.example/u/a#main-key",
        "created": "2024-05-01T12:00:00Z",
        "nonce": "abc",
        "domain": "a.example",
    },
    "identity-v1-key": {
        "@context": [AS, "https://w3id.org/identity/v1"],
        "id": "https://a.example/u/c",
        "type": "Person",
        "publicKey": {
            "id": "https://a.example/u/c#main-key",
            "type": "CryptographicKey",
            "owner": "https://a.example/u/c",
            "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----\n",
        },
    },
    "data-integrity-v1-proof": {
        "@context": [AS, "https://w3id.org/security/data-integrity/v1"],
        "id": "https://a.example/notes/3",
        "type": "Note",
        "attributedTo": "https://a.example/u/b",
        "content": "signed",
        "proof": {
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-jcs-2022",
            "verificationMethod": "https://a.example/u/b#ed25519-key",
            "proofPurpose": "assertionMethod",
            "proofValue": "z3sXaxjKs4M3BRicwWA9peyNPJvJqxtGsDmpt1jjoHCjgeUf71TRFz56osPSfDEr"
            "szyLp5Ks1EhYSgpDaNM977Rg2",
            "created": "2024-05-01T12:00:00Z",
        },
    },
    "data-integrity-v2-proof": {
        "@context": [AS, "https://w3id.org/security/data-integrity/v2"],
        "id": "https://a.example/u/b/follows/1",
        "type": "Follow",
        "actor": "https://a.example/u/b",
        "object": "https://c.example/u/d",
        "proof": {
            "id": "https://a.example/u/b/follows/1#proof",
            "type": "DataIntegrityProof",
            "cryptosuite": "eddsa-jcs-2022",
            "verificationMethod": "https://a.example/u/b#ed25519-key",
            "proofPurpose": "assertionMethod",
            "proofValue": "zabc",
            "created": "2024-05-01T12:00:00Z",
            "expires": "2025-05-01T12:00:00Z",
            "previousProof": "https://a.example/proofs/0",
            "nonce": "n",
            "domain": "c.example",
            "challenge": "ch",
        },
    },
    "multikey-v1": {
        "@context": [AS, SEC, "https://w3id.org/security/multikey/v1"],
        "id": "https://a.example/u/e",
        "type": "Person",
        "assertionMethod": {
            "id": "https://a.example/u/e#key-2",
            "type": "Multikey",
            "controller": "https://a.example/u/e",
            "publicKeyMultibase": "z6MkrJVnaZkeFzdQyMZu1cgjg7k1pZZ6pvBQ7XJPt4swbTQ2",
            "revoked": "2025-01-01T00:00:00Z",
            "expires": "2026-01-01T00:00:00Z",
        },
    },
    "webfinger": {
        "@context": [AS, "https://purl.archive.org/socialweb/webfinger"],
        "id": "https://a.example/u/f",
        "type": "Person",
        "webfinger": "f@a.example",
    },
    "miscellany-typed-booleans": {
        "@context": [AS, "https://purl.archive.org/miscellany/1.0.0"],
        "id": "https://a.example/u/g",
        "type": "Person",
        "manuallyApprovesFollowers": True,
        "movedTo": "https://b.example/u/g",
        "tag": {"type": "Hashtag", "name": "#plaza", "href": "https://a.example/tags/plaza"},
        "sensitive": False,
    },
    "miscellany-versions": {
        "@context": [
            AS,
            "https://purl.archive.org/miscellany/1",
            "https://purl.archive.org/miscellany/1.0",
            "https://purl.archive.org/miscellany",
        ],
        "type": "Note",
        "sensitive": True,
    },
    "gotosocial-interaction-policy": {
        "@context": [
            "https://gotosocial.org/ns",
            AS,
            {"sensitive": "as:sensitive", "Hashtag": "as:Hashtag"},
        ],
        "id": "https://gts.example/users/x/statuses/1",
        "type": "Note",
        "attributedTo": "https://gts.example/users/x",
        "interactionPolicy": {
            "canLike": {"automaticApproval": PUBLIC, "always": [PUBLIC]},
            "canReply": {
                "always": ["https://gts.example/users/x/followers"],
                "approvalRequired": PUBLIC,
                "manualApproval": [PUBLIC],
            },
            "canAnnounce": {"always": "https://gts.example/users/x"},
            "canQuote": {"automaticApproval": "https://gts.example/users/x/following"},
        },
        "approvedBy": "https://gts.example/users/x/approvals/1",
        "likeAuthorization": "https://gts.example/users/x/approvals/2",
        "hidesToPublicFromUnauthedWeb": True,
        "to": PUBLIC,
        "sensitive": False,
    },
    "gotosocial-approval-types": {
        "@context": ["https://gotosocial.org/ns", AS],
        "id": "https://gts.example/users/x/authorizations/1",
        "type": ["LikeAuthorization", "ReplyAuthorization"],
        "actor": "https://gts.example/users/x",
        "interactingObject": "https://b.example/notes/9",
        "interactionTarget": "https://gts.example/users/x/statuses/1",
        "replyAuthorization": "https://gts.example/users/x/approvals/3",
        "announceAuthorization": "https://gts.example/users/x/approvals/4",
    },
    "litepub-context": {
        "@context": ["https://litepub.social/litepub/context.jsonld"],
        "id": "https://pl.example/objects/1",
        "type": "Note",
        "content": "litepub",
        "conversation": "https://pl.example/contexts/1",
        "atomUri": "https://pl.example/objects/1",
        "sensitive": False,
        "tag": [{"type": "Emoji", "name": ":x:", "icon": {"url": "https://pl.example/x.png"}}],
        "attachment": {"type": "PropertyValue", "name": "site", "value": "https://pl.example"},
    },
    "pleroma-litepub-0.1": {
        "@context": [
            AS,
            "https://pl.example/schemas/litepub-0.1.jsonld",
            {"@language": "und"},
        ],
        "id": "https://pl.example/users/h",
        "type": "Person",
        "discoverable": True,
        "manuallyApprovesFollowers": False,
        "capabilities": {"acceptsChatMessages": True},
        "invisible": False,
        "alsoKnownAs": ["https://old.example/users/h"],
        "webfinger": "h@pl.example",
        "publicKey": {
            "id": "https://pl.example/users/h#main-key",
            "owner": "https://pl.example/users/h",
            "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nCCCC\n-----END PUBLIC KEY-----\n",
        },
        "isCat": False,
        "vcard:bday": "2000-01-01",
    },
    "pleroma-chat-and-react": {
        "@context": [AS, "https://pl.example/schemas/litepub-0.1.jsonld"],
        "id": "https://pl.example/activities/2",
        "type": "EmojiReact",
        "actor": "https://pl.example/users/h",
        "object": {
            "type": "ChatMessage",
            "content": "hi",
            "directMessage": True,
            "listMessage": "https://pl.example/lists/1",
            "quoteUrl": "https://a.example/notes/1",
            "quoteUri": "https://a.example/notes/1",
            "formerRepresentations": {"type": "OrderedCollection", "totalItems": 0},
        },
        "content": "🔥",
    },
    "lemmy-context": {
        "@context": ["https://join-lemmy.org/context.json", AS],
        "type": "Group",
        "id": "https://lemmy.example/c/assemblies",
        "preferredUsername": "assemblies",
        "inbox": "https://lemmy.example/c/assemblies/inbox",
        "moderators": "https://lemmy.example/c/assemblies/moderators",
        "featured": "https://lemmy.example/c/assemblies/featured",
        "postingRestrictedToMods": False,
        "sensitive": False,
        "language": [{"identifier": "es", "name": "Español"}],
        "matrixUserId": "@x:matrix.example",
    },
    "lemmy-page": {
        "@context": ["https://join-lemmy.org/context.json", AS],
        "type": "Page",
        "id": "https://lemmy.example/post/1",
        "attributedTo": "https://lemmy.example/u/bob",
        "audience": "https://lemmy.example/c/assemblies",
        "name": "Assembly tonight",
        "stickied": True,
        "commentsEnabled": True,
        "distinguished": False,
        "removeData": False,
        "expires": "2025-01-01T00:00:00Z",
        "to": ["https://lemmy.example/c/assemblies", PUBLIC],
    },
    "lemmy-chat-message": {
        "@context": ["https://join-lemmy.org/context.json", AS],
        "type": "ChatMessage",
        "id": "https://lemmy.example/private_message/1",
        "attributedTo": "https://lemmy.example/u/bob",
        "to": ["https://a.example/u/a"],
        "content": "private",
    },
    "funkwhale": {
        "@context": [AS, SEC, "https://funkwhale.audio/ns"],
        "id": "https://fw.example/federation/music/uploads/1",
        "type": "Audio",
        "name": "Song",
        "library": "https://fw.example/federation/music/libraries/1",
        "bitrate": 192000,
        "size": 1024,
        "track": {
            "type": "Track",
            "id": "https://fw.example/federation/music/tracks/1",
            "name": "Song",
            "position": 1,
            "disc": 1,
            "musicbrainzId": "0000",
            "license": "http://creativecommons.org/licenses/by/4.0/",
            "copyright": "CC",
            "album": {
                "type": "Album",
                "id": "https://fw.example/federation/music/albums/1",
                "released": "2011-11-22",
                "cover": {"type": "Link", "href": "https://fw.example/c.jpg"},
            },
            "artist_credit": [
                {
                    "type": "ArtistCredit",
                    "credit": "A",
                    "joinphrase": "",
                    "index": 0,
                    "artist": {"type": "Artist", "id": "https://fw.example/a/1"},
                }
            ],
        },
        "language": "en",
        "category": "music",
    },
    "sender-redefines-terms": {
        "@context": [
            AS,
            "https://gotosocial.org/ns",
            {"content": "gts:always", "inbox": {"@id": "as:outbox", "@type": "@id"}},
        ],
        "type": "Person",
        "content": "not content",
        "inbox": "https://a.example/u/h/outbox",
    },
    "unknown-context": {
        "@context": [AS, "https://unknown.example/ns"],
        "id": "https://b.example/notes/1",
        "type": "Note",
        "content": "still here",
        "onlyInUnknownContext": "dropped",
    },
    "mastodon-namespace-not-a-document": {
        "@context": [AS, "http://joinmastodon.org/ns"],
        "type": "Person",
        "id": "https://d.example/u/1",
        "discoverable": True,
    },
    "interocc-context": {
        "@context": [AS, "https://other.example/ns/interocc/v1"],
        "id": "https://other.example/communiques/1",
        "type": "Note",
        "content": "ratified",
    },
}


def answers() -> dict[str, Any]:
    from server.activitypub.jsonld import JsonLdError, normalise

    out: dict[str, Any] = {}
    for name, doc in CASES.items():
        try:
            out[name] = normalise(copy.deepcopy(doc))
        except JsonLdError as exc:
            out[name] = {"error": str(exc)}
    return out


if __name__ == "__main__":
    json.dump(answers(), sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")
