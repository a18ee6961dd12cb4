"""ActivityStreams constants and pure document builders (no I/O, no database)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from server.activitypub import integrity
from server.content import plain_to_html
from server.models import Assembly
from server.urls import Urls

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
AS2_MEDIA_TYPE = "application/activity+json"
LD_MEDIA_TYPE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'

# Mastodon's extension terms, declared inline as Mastodon itself does, so that consumers
# that do full JSON-LD processing read the same fields as the ones that read plain JSON.
EXTENSION_CONTEXT: dict[str, Any] = {
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "sensitive": "as:sensitive",
    "Hashtag": "as:Hashtag",
    # ActivityStreams' context defines alsoKnownAs, not movedTo (Mastodon's spelling).
    "movedTo": {"@id": "as:movedTo", "@type": "@id"},
    "toot": "http://joinmastodon.org/ns#",
    "featured": {"@id": "toot:featured", "@type": "@id"},
    "discoverable": "toot:discoverable",
    "indexable": "toot:indexable",
}
CONTEXT: list[Any] = [AS_CONTEXT, SECURITY_CONTEXT, EXTENSION_CONTEXT]
# An actor with an Ed25519 key (FEP-521a): the Multikey context, and assertionMethod (which no
# context among these defines at the top level; did/v1 does, as sec:assertionMethod).
ASSERTION_METHOD_TERM: dict[str, Any] = {
    "assertionMethod": {
        "@id": "https://w3id.org/security#assertionMethod",
        "@type": "@id",
        "@container": "@set",
    }
}
ACTOR_CONTEXT: list[Any] = [
    AS_CONTEXT,
    SECURITY_CONTEXT,
    integrity.MULTIKEY_CONTEXT,
    {**EXTENSION_CONTEXT, **ASSERTION_METHOD_TERM},
]

Doc = dict[str, Any]


def iso(moment: datetime) -> str:
    """xsd:dateTime in UTC with a Z, second precision (what Mastodon emits and parses)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_actor(
    *,
    actor_id: str,
    handle: str,
    name: str,
    summary_html: str,
    inbox: str,
    outbox: str,
    followers: str,
    following: str,
    featured: str,
    shared_inbox: str,
    key_id: str,
    public_key_pem: str,
    manually_approves_followers: bool,
    discoverable: bool,
    published: datetime,
    icon_url: str | None = None,
    actor_type: str = "Group",
) -> Doc:
    doc: Doc = {
        "@context": CONTEXT,
        "id": actor_id,
        "type": actor_type,
        "preferredUsername": handle,
        "name": name,
        "summary": summary_html,
        "url": actor_id,
        "inbox": inbox,
        "outbox": outbox,
        "followers": followers,
        "following": following,
        "featured": featured,
        "endpoints": {"sharedInbox": shared_inbox},
        "publicKey": {"id": key_id, "owner": actor_id, "publicKeyPem": public_key_pem},
        "manuallyApprovesFollowers": manually_approves_followers,
        "discoverable": discoverable,
        "indexable": discoverable,
        "published": iso(published),
    }
    if icon_url:
        doc["icon"] = {"type": "Image", "url": icon_url}
    return doc


# What anyone may read of an actor under authorized fetch, as Mastodon restricts it for
# unsigned requests: who it is, where to write to it, and the key that verifies it.
KEY_ONLY_ACTOR_FIELDS = (
    "id",
    "type",
    "preferredUsername",
    "inbox",
    "publicKey",
    "assertionMethod",
)


def build_assembly_actor(urls: Urls, assembly: Assembly) -> Doc:
    """An assembly's Group actor: what its actor URL serves, and how we read our own."""
    h = assembly.handle
    document = build_actor(
        actor_id=urls.actor(h),
        handle=h,
        name=assembly.name,
        summary_html=plain_to_html(assembly.summary),
        inbox=urls.inbox(h),
        outbox=urls.outbox(h),
        followers=urls.followers(h),
        following=urls.following(h),
        featured=urls.featured(h),
        shared_inbox=urls.shared_inbox(),
        key_id=urls.key_id(h),
        public_key_pem=assembly.public_key_pem,
        manually_approves_followers=assembly.manually_approves_followers,
        discoverable=assembly.discoverable,
        published=assembly.approved_at or assembly.created_at,
        icon_url=assembly.icon_url,
    )
    if assembly.header_url:
        # Mastodon shows an actor's `image` as its profile header.
        document["image"] = {"type": "Image", "url": assembly.header_url}
    if assembly.also_known_as:
        # The assembly's other identities: a Move to one of them is believed only if it
        # names this one back (server/moving.py).
        document["alsoKnownAs"] = list(assembly.also_known_as)
    if assembly.moved_to:
        document["movedTo"] = assembly.moved_to
    if assembly.ed25519_private_key_pem:
        # The key of the assembly's integrity proofs (server/activitypub/proofs.py).
        document["@context"] = ACTOR_CONTEXT
        document["assertionMethod"] = [
            integrity.build_multikey(
                urls.assertion_key_id(h),
                urls.actor(h),
                integrity.ed25519_public_of(assembly.ed25519_private_key_pem),
            )
        ]
    return document


def build_key_only_actor(actor: Doc) -> Doc:
    """The public part of an actor document (``KEY_ONLY_ACTOR_FIELDS``): enough for a server
    to verify the actor's signatures, nothing of its profile or its collections."""
    doc: Doc = {"@context": [AS_CONTEXT, SECURITY_CONTEXT]}
    if "assertionMethod" in actor:
        doc["@context"] = [
            AS_CONTEXT,
            SECURITY_CONTEXT,
            integrity.MULTIKEY_CONTEXT,
            ASSERTION_METHOD_TERM,
        ]
    doc.update({name: actor[name] for name in KEY_ONLY_ACTOR_FIELDS if name in actor})
    return doc


def build_note(
    *,
    note_id: str,
    actor_id: str,
    followers: str,
    content_html: str,
    language: str,
    published: datetime,
    updated: datetime | None,
    hashtags: list[tuple[str, str]],
    summary: str | None = None,
    attachments: Sequence[Doc] = (),
) -> Doc:
    """A public communiqué. ``hashtags`` is a list of (name without '#', href).

    ``summary`` is the content warning: Mastodon shows it in place of the content, behind
    a button, and marks the attachments sensitive only when ``sensitive`` is true — set
    together, as Mastodon's own composer does. ``attachments`` come from
    :func:`build_attachment`, in order.
    """
    note: Doc = {
        "id": note_id,
        "type": "Note",
        "attributedTo": actor_id,
        "content": content_html,
        # Mastodon reads only the first language of contentMap: we publish exactly one.
        "contentMap": {language: content_html},
        "published": iso(published),
        "url": note_id,
        "to": [PUBLIC],
        "cc": [followers],
        "sensitive": bool(summary),
        "summary": summary or None,
        "inReplyTo": None,
        "attachment": list(attachments),
        "tag": [{"type": "Hashtag", "href": href, "name": f"#{name}"} for name, href in hashtags],
    }
    if updated is not None:
        note["updated"] = iso(updated)
    return note


def build_attachment(
    *,
    url: str,
    media_type: str,
    name: str = "",
    width: int | None = None,
    height: int | None = None,
) -> Doc:
    """A file attached to a Note, shaped as Mastodon's MediaAttachmentSerializer emits it:
    ``Document`` for images too, alt text as ``name``. Mastodon computes its own blurhash
    and thumbnail from the file, so we send neither."""
    doc: Doc = {"type": "Document", "mediaType": media_type, "url": url}
    if name:
        doc["name"] = name
    if width and height:
        doc["width"] = width
        doc["height"] = height
    return doc


def build_tombstone(*, object_id: str, deleted: datetime) -> Doc:
    # No formerType: ActivityStreams types it as an IRI, so "Note" would be a relative one,
    # which JSON-LD processors drop (ours, when signing) or refuse (Fedify's, when verifying).
    return {"id": object_id, "type": "Tombstone", "deleted": iso(deleted)}


def build_activity(
    *,
    activity_id: str,
    activity_type: str,
    actor_id: str,
    obj: Doc | str,
    to: list[str],
    cc: list[str] | None = None,
    published: datetime | None = None,
    context: list[Any] | None = None,
    target: str | None = None,
) -> Doc:
    doc: Doc = {
        "@context": context or CONTEXT,
        "id": activity_id,
        "type": activity_type,
        "actor": actor_id,
        "to": to,
    }
    if cc:
        doc["cc"] = cc
    if published is not None:
        doc["published"] = iso(published)
    doc["object"] = obj
    if target is not None:
        doc["target"] = target
    return doc


def build_collection(
    *, collection_id: str, total: int, first: str | None, ordered: bool = True
) -> Doc:
    doc: Doc = {
        "@context": CONTEXT,
        "id": collection_id,
        "type": "OrderedCollection" if ordered else "Collection",
        "totalItems": total,
    }
    if first is not None:
        doc["first"] = first
    return doc


def build_collection_page(
    *,
    page_id: str,
    part_of: str,
    items: list[Any],
    next_page: str | None,
    prev_page: str | None = None,
) -> Doc:
    doc: Doc = {
        "@context": CONTEXT,
        "id": page_id,
        "type": "OrderedCollectionPage",
        "partOf": part_of,
        "orderedItems": items,
    }
    if next_page:
        doc["next"] = next_page
    if prev_page:
        doc["prev"] = prev_page
    return doc
