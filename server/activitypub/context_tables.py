"""InterOcc's own tables of the JSON-LD contexts that fediverse servers name and pyld does not ship.

``jsonld.document_loader`` answers the W3C contexts that the installed pyld package bundles
(ActivityStreams, security v1/v2, DID v1) from pyld itself. Every other context URL a remote
document may name is answered from a table here: the terms we rely on when reading such
documents, each mapped to the IRI (and value type or container) that the vocabulary's
specification gives it. A term left out of a table is unknown to us and dropped on reading, which
is exactly what happens to terms of a context we have no table for.

Each table says which specification its mappings follow. The tables are plain data: building
them touches no file and no network.
"""

from __future__ import annotations

from typing import Any

AS = "https://www.w3.org/ns/activitystreams#"
SEC = "https://w3id.org/security#"
XSD = "http://www.w3.org/2001/XMLSchema#"
DC = "http://purl.org/dc/terms/"

AS_URL = "https://www.w3.org/ns/activitystreams"
SECURITY_V1_URL = "https://w3id.org/security/v1"
WEBFINGER_URL = "https://purl.archive.org/socialweb/webfinger"


def _ref(iri: str, **extra: Any) -> dict[str, Any]:
    """A term whose values are IRIs (``"@type": "@id"``)."""
    return {"@id": iri, "@type": "@id", **extra}


def _typed(iri: str, datatype: str) -> dict[str, str]:
    return {"@id": iri, "@type": datatype}


def _methods() -> dict[str, Any]:
    """Verification relationships, as the W3C Controlled Identifiers / DID specifications name them.

    Data Integrity scopes these inside ``proofPurpose`` so that ``"assertionMethod"`` is read as
    the IRI ``sec:assertionMethod``.
    """
    return {
        "@protected": True,
        "id": "@id",
        "type": "@type",
        "assertionMethod": _ref(SEC + "assertionMethod", **{"@container": "@set"}),
        "authentication": _ref(SEC + "authenticationMethod", **{"@container": "@set"}),
        "capabilityInvocation": _ref(SEC + "capabilityInvocationMethod", **{"@container": "@set"}),
        "capabilityDelegation": _ref(SEC + "capabilityDelegationMethod", **{"@container": "@set"}),
        "keyAgreement": _ref(SEC + "keyAgreementMethod", **{"@container": "@set"}),
    }


def _data_integrity(version: int) -> dict[str, Any]:
    """W3C Verifiable Credential Data Integrity 1.0, §2.1 (proofs) and its v1/v2 contexts.

    FEP-8b32 object integrity proofs use this vocabulary. v2 adds ``previousProof`` (proof
    chains) and types ``cryptosuite`` as ``sec:cryptosuiteString``.
    """
    proof_terms: dict[str, Any] = {
        "@protected": True,
        "id": "@id",
        "type": "@type",
        "challenge": SEC + "challenge",
        "created": _typed(DC + "created", XSD + "dateTime"),
        "domain": SEC + "domain",
        "expires": _typed(SEC + "expiration", XSD + "dateTime"),
        "nonce": SEC + "nonce",
        "proofPurpose": {"@id": SEC + "proofPurpose", "@type": "@vocab", "@context": _methods()},
        "cryptosuite": SEC + "cryptosuite",
        "proofValue": _typed(SEC + "proofValue", SEC + "multibase"),
        "verificationMethod": _ref(SEC + "verificationMethod"),
    }
    if version >= 2:
        proof_terms["previousProof"] = _ref(SEC + "previousProof")
        proof_terms["cryptosuite"] = _typed(SEC + "cryptosuite", SEC + "cryptosuiteString")
    return {
        "@context": {
            "id": "@id",
            "type": "@type",
            "@protected": True,
            # A proof is a graph of its own, so that its triples never mix with the document's.
            "proof": _ref(SEC + "proof", **{"@container": "@graph"}),
            "DataIntegrityProof": {"@id": SEC + "DataIntegrityProof", "@context": proof_terms},
        }
    }


def _multikey() -> dict[str, Any]:
    """W3C Controlled Identifiers 1.0, §2.2.2 Multikey (the key type FEP-521a publishes)."""
    return {
        "@context": {
            "id": "@id",
            "type": "@type",
            "@protected": True,
            "Multikey": {
                "@id": SEC + "Multikey",
                "@context": {
                    "@protected": True,
                    "id": "@id",
                    "type": "@type",
                    "controller": _ref(SEC + "controller"),
                    "revoked": _typed(SEC + "revoked", XSD + "dateTime"),
                    "expires": _typed(SEC + "expiration", XSD + "dateTime"),
                    "publicKeyMultibase": _typed(SEC + "publicKeyMultibase", SEC + "multibase"),
                    "secretKeyMultibase": _typed(SEC + "secretKeyMultibase", SEC + "multibase"),
                },
            },
        }
    }


def _identity_v1() -> dict[str, Any]:
    """The Web Payments identity v1 context (w3id.org/identity/v1).

    Mastodon puts it on the options of its RsaSignature2017 Linked Data signatures (``creator``,
    ``created``, ``nonce``, ``domain``), and older servers on actors with keys. It also maps
    common names onto schema.org and Dublin Core (``Person`` is ``schema:Person``, ``name`` is
    ``schema:name``), which changes how an ActivityStreams document that names it after
    ActivityStreams reads; so every term it defines is here, grouped by vocabulary.
    """
    cred = "https://w3id.org/credentials#"
    identity = "https://w3id.org/identity#"
    perm = "https://w3id.org/permissions#"
    ps = "https://w3id.org/payswarm#"
    rdfs = "http://www.w3.org/2000/01/rdf-schema#"
    schema = "http://schema.org/"
    terms: dict[str, Any] = {
        "id": "@id",
        "type": "@type",
        "cred": cred,
        "dc": DC,
        "identity": identity,
        "perm": perm,
        "ps": ps,
        "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
        "rdfs": rdfs,
        "sec": SEC,
        "schema": schema,
        "xsd": XSD,
        "Group": AS + "Group",
        # Credentials
        "claim": _ref(cred + "claim"),
        "credential": _ref(cred + "credential"),
        "issued": _typed(cred + "issued", XSD + "dateTime"),
        "issuer": _ref(cred + "issuer"),
        "recipient": _ref(cred + "recipient"),
        "Credential": cred + "Credential",
        "CryptographicKeyCredential": cred + "CryptographicKeyCredential",
        # schema.org, RDF Schema and Dublin Core
        "about": _ref(schema + "about"),
        "address": _ref(schema + "address"),
        "comment": rdfs + "comment",
        "created": _typed(DC + "created", XSD + "dateTime"),
        "creator": _ref(DC + "creator"),
        "image": _ref(schema + "image"),
        "label": rdfs + "label",
        "title": DC + "title",
        "url": _ref(schema + "url"),
        "member": _ref(schema + "member"),
        "memberOf": _ref(schema + "memberOf"),
        # Identity and payments
        "identityService": _ref(identity + "identityService"),
        "idp": _ref(identity + "idp"),
        "Identity": identity + "Identity",
        "paymentProcessor": ps + "processor",
        "preferences": {"@id": ps + "preferences", "@type": "@vocab"},
        # Security: keys, signatures, encryption
        "domain": SEC + "domain",
        "expires": _typed(SEC + "expiration", XSD + "dateTime"),
        "nonce": SEC + "nonce",
        "owner": _ref(SEC + "owner"),
        "privateKey": _ref(SEC + "privateKey"),
        "publicKey": _ref(SEC + "publicKey"),
        "publicKeyService": _ref(SEC + "publicKeyService"),
        "revoked": _typed(SEC + "revoked", XSD + "dateTime"),
        "CryptographicKey": SEC + "Key",
        # Permissions
        "accessControl": _ref(perm + "accessControl"),
        "writePermission": _ref(perm + "writePermission"),
    }
    for name in (
        "addressCountry",
        "addressLocality",
        "addressRegion",
        "description",
        "email",
        "familyName",
        "givenName",
        "name",
        "postalCode",
        "streetAddress",
        "Person",
        "PostalAddress",
        "Organization",
    ):
        terms[name] = schema + name
    for name in (
        "cipherAlgorithm",
        "cipherData",
        "cipherKey",
        "digestAlgorithm",
        "digestValue",
        "initializationVector",
        "normalizationAlgorithm",
        "password",
        "privateKeyPem",
        "publicKeyPem",
        "signature",
        "signatureAlgorithm",
        "signatureValue",
        "EncryptedMessage",
        "GraphSignature2012",
        "LinkedDataSignature2015",
    ):
        terms[name] = SEC + name
    return {"@context": terms}


def _webfinger() -> dict[str, Any]:
    """FEP-2c59: an actor's ``webfinger`` address, typed as a string."""
    return {
        "@context": {
            "wf": WEBFINGER_URL + "#",
            "xsd": XSD,
            "webfinger": _typed(WEBFINGER_URL + "#webfinger", XSD + "string"),
        }
    }


def _miscellany() -> dict[str, Any]:
    """SWICG miscellany: AS2 extension terms in common use, with their value types."""
    return {
        "@context": {
            "as": AS,
            "xsd": XSD,
            "Hashtag": AS + "Hashtag",
            "manuallyApprovesFollowers": _typed(AS + "manuallyApprovesFollowers", XSD + "boolean"),
            "movedTo": _ref(AS + "movedTo"),
            "sensitive": _typed(AS + "sensitive", XSD + "boolean"),
        }
    }


def _gotosocial() -> dict[str, Any]:
    """GoToSocial's interaction policies and approvals, as its federation documentation names them.

    GoToSocial maps the type ``LikeAuthorization`` to the IRI ``gts:LikeApproval`` (its older
    name), and the other authorizations to IRIs of their own names.
    """
    gts = "https://gotosocial.org/ns#"
    terms: dict[str, Any] = {"xsd": XSD, "gts": gts}
    for name in ("LikeRequest", "ReplyRequest", "AnnounceRequest", "QuoteRequest"):
        terms[name] = gts + name
    terms["LikeAuthorization"] = gts + "LikeApproval"
    for name in ("ReplyAuthorization", "AnnounceAuthorization", "QuoteAuthorization"):
        terms[name] = gts + name
    for name in (
        "likeAuthorization",
        "replyAuthorization",
        "announceAuthorization",
        "quoteAuthorization",
        "interactingObject",
        "interactionTarget",
        "interactionPolicy",
        "canLike",
        "canReply",
        "canAnnounce",
        "canQuote",
        "automaticApproval",
        "manualApproval",
    ):
        terms[name] = _ref(gts + name)
    for name in ("hidesToPublicFromUnauthedWeb", "hidesCcPublicFromUnauthedWeb"):
        terms[name] = _typed(gts + name, XSD + "boolean")
    for name in ("always", "approvalRequired", "approvedBy"):
        terms[name] = _ref(gts + name)
    return {"@context": terms}


# Mastodon's extension terms as the LitePub vocabulary adopted them.
_LITEPUB_COMMON: dict[str, Any] = {
    "Emoji": "toot:Emoji",
    "Hashtag": "as:Hashtag",
    "PropertyValue": "schema:PropertyValue",
    "atomUri": "ostatus:atomUri",
    "conversation": {"@id": "ostatus:conversation", "@type": "@id"},
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "ostatus": "http://ostatus.org#",
    "toot": "http://joinmastodon.org/ns#",
    "value": "schema:value",
    "sensitive": "as:sensitive",
}


def _litepub() -> dict[str, Any]:
    """The LitePub profile context (litepub.social): AS2, security v1 and Mastodon's terms.

    It maps ``schema`` to ``http://schema.org`` with no separator, as published.
    """
    return {
        "@context": [
            AS_URL,
            SECURITY_V1_URL,
            {**_LITEPUB_COMMON, "schema": "http://schema.org", "totalItems": "as:totalItems"},
        ]
    }


def _pleroma_litepub() -> dict[str, Any]:
    """What Pleroma and Akkoma serve at ``/schemas/litepub-0.1.jsonld`` on every instance.

    LitePub's terms plus Pleroma's own (chat messages, emoji reactions, quotes, capabilities) and
    the cat flags of Misskey and Firefish that it passes through.
    """
    litepub = "http://litepub.social/ns#"
    terms: dict[str, Any] = {
        **_LITEPUB_COMMON,
        "schema": "http://schema.org#",
        "discoverable": "toot:discoverable",
        "capabilities": "litepub:capabilities",
        "fedibird": "http://fedibird.com/ns#",
        "litepub": litepub,
        "invisible": "litepub:invisible",
        "directMessage": "litepub:directMessage",
        "listMessage": {"@id": "litepub:listMessage", "@type": "@id"},
        "quoteUrl": "as:quoteUrl",
        "quoteUri": "fedibird:quoteUri",
        "oauthRegistrationEndpoint": {"@id": "litepub:oauthRegistrationEndpoint", "@type": "@id"},
        "EmojiReact": "litepub:EmojiReact",
        "ChatMessage": "litepub:ChatMessage",
        "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
        "vcard": "http://www.w3.org/2006/vcard/ns#",
        "formerRepresentations": "litepub:formerRepresentations",
        "sm": "http://smithereen.software/ns#",
        "nonAnonymous": "sm:nonAnonymous",
        "misskey": "https://misskey-hub.net/ns#",
        "isCat": "misskey:isCat",
        "firefish": "https://joinfirefish.org/ns#",
        "speakAsCat": "firefish:speakAsCat",
    }
    return {"@context": [AS_URL, SECURITY_V1_URL, WEBFINGER_URL, terms]}


def _lemmy() -> dict[str, Any]:
    """Lemmy's federation context (join-lemmy.org/context.json), per Lemmy's federation docs.

    Lemmy names it before ActivityStreams, so its ``Hashtag`` and ``sensitive`` come first and
    ActivityStreams' definitions win where both define a term.
    """
    return {
        "@context": [
            SECURITY_V1_URL,
            {
                "as": AS,
                "lemmy": "https://join-lemmy.org/ns#",
                "litepub": "http://litepub.social/ns#",
                "pt": "https://joinpeertube.org/ns#",
                "sc": "http://schema.org/",
                "mastodon": "http://joinmastodon.org/ns#",
                "ChatMessage": "litepub:ChatMessage",
                "commentsEnabled": "pt:commentsEnabled",
                "sensitive": "as:sensitive",
                "matrixUserId": "lemmy:matrixUserId",
                "postingRestrictedToMods": "lemmy:postingRestrictedToMods",
                "removeData": "lemmy:removeData",
                "stickied": "lemmy:stickied",
                "moderators": {"@type": "@id", "@id": "lemmy:moderators"},
                # A post's or a ban's expiry: Lemmy maps it onto ActivityStreams' endTime.
                "expires": "as:endTime",
                "distinguished": "lemmy:distinguished",
                "language": "sc:inLanguage",
                "identifier": "sc:identifier",
                "Hashtag": "as:Hashtag",
                "featured": {"@type": "@id", "@id": "mastodon:featured"},
            },
        ]
    }


def _funkwhale() -> dict[str, Any]:
    """Funkwhale's music vocabulary (its federation documentation's ``fw:`` terms)."""
    fw = "https://funkwhale.audio/ns#"
    count = XSD + "nonNegativeInteger"
    return {
        "@context": {
            "id": "@id",
            "type": "@type",
            "as": AS,
            "fw": fw,
            "schema": "http://schema.org#",
            "xsd": XSD,
            "Album": fw + "Album",
            "Track": fw + "Track",
            "Artist": fw + "Artist",
            "Library": fw + "Library",
            "bitrate": _typed(fw + "bitrate", count),
            "size": _typed(fw + "size", count),
            "position": _typed(fw + "position", count),
            "disc": _typed(fw + "disc", count),
            "library": _ref(fw + "library"),
            "track": _ref(fw + "track"),
            "cover": _typed(fw + "cover", AS + "Link"),
            "album": _ref(fw + "album"),
            "artists": _ref(fw + "artists", **{"@container": "@list"}),
            "artist_credit": _ref(fw + "artist_credit", **{"@container": "@list"}),
            "joinphrase": _typed(fw + "joinphrase", XSD + "string"),
            "credit": _typed(fw + "credit", XSD + "string"),
            "index": _typed(fw + "index", count),
            "released": _typed(fw + "released", XSD + "date"),
            "musicbrainzId": fw + "musicbrainzId",
            "license": _ref(fw + "license"),
            "copyright": fw + "copyright",
            "category": "schema:category",
            "language": "schema:inLanguage",
        }
    }


def tables() -> dict[str, dict[str, Any]]:
    """Context URL → context document, for every context we answer from our own tables.

    URLs are in their canonical spelling (https, no trailing slash); the loader folds other
    spellings onto these.
    """
    miscellany = _miscellany()
    litepub = _litepub()
    return {
        "https://w3id.org/security/data-integrity/v1": _data_integrity(1),
        "https://w3id.org/security/data-integrity/v2": _data_integrity(2),
        "https://w3id.org/security/multikey/v1": _multikey(),
        "https://w3id.org/identity/v1": _identity_v1(),
        WEBFINGER_URL: _webfinger(),
        # The miscellany vocabulary is published under its bare URL and each version's.
        "https://purl.archive.org/miscellany": miscellany,
        "https://purl.archive.org/miscellany/1.0.0": miscellany,
        "https://purl.archive.org/miscellany/1.0": miscellany,
        "https://purl.archive.org/miscellany/1": miscellany,
        "https://gotosocial.org/ns": _gotosocial(),
        "https://litepub.social/litepub/context.jsonld": litepub,
        "https://litepub.github.io/litepub/context.jsonld": litepub,
        "https://funkwhale.audio/ns": _funkwhale(),
        "https://join-lemmy.org/context.json": _lemmy(),
    }


def pleroma_litepub() -> dict[str, Any]:
    """The context of every ``https://<host>/schemas/litepub-0.1.jsonld`` (matched by path)."""
    return _pleroma_litepub()
