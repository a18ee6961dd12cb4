"""Remote actors: fetched through the guarded client, checked, normalised and cached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urldefrag, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub.jsonld import JsonLdError, as_list, id_of, normalise, normalise_off_loop
from server.activitypub.vocab import build_assembly_actor
from server.content import safe_link
from server.context import Context
from server.errors import BadRequest, Gone, NotFound, RemoteError
from server.models import Assembly, AssemblyStatus, Follower, RemoteActor, RemoteKey

ACTOR_TYPES = {"Person", "Group", "Organization", "Service", "Application"}
ACTOR_TTL = timedelta(days=1)


def host_of(uri: str) -> str:
    return (urlsplit(uri).hostname or "").lower()


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def authority_of(uri: str) -> str:
    """host[:port], lower-cased, without a default port: what makes two URLs one server."""
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        return ""
    if host and ":" in host:
        host = f"[{host}]"
    if port is None or (parts.scheme, port) in {("https", 443), ("http", 80)}:
        return host
    return f"{host}:{port}"


def same_origin(a: str, b: str) -> bool:
    """Both URLs name the same server (host and port; http and https alike)."""
    return bool(a) and bool(b) and authority_of(a) == authority_of(b) and host_of(a) != ""


def _http_url(value: object) -> str | None:
    """An absolute http(s) URL that fits our columns (``content.safe_link``), or None."""
    return safe_link(id_of(value))


def parse_actor(doc: dict[str, Any]) -> dict[str, Any]:
    """The fields we keep from a normalised actor document; BadRequest if it is not one."""
    actor_id = _http_url(doc.get("id"))
    types = set(as_list(doc.get("type")))
    if actor_id is None or not types & ACTOR_TYPES:
        raise BadRequest("not an actor document")
    inbox = _http_url(doc.get("inbox"))
    if inbox is None:
        raise BadRequest("actor has no inbox")
    endpoints = doc.get("endpoints")
    shared = _http_url(endpoints.get("sharedInbox")) if isinstance(endpoints, dict) else None
    # Every address an actor gives us is on its own host: otherwise anyone could have us
    # deliver (signed) wherever they like, in someone else's name.
    for field, url in (
        ("inbox", inbox),
        ("sharedInbox", shared),
        ("outbox", id_of(doc.get("outbox"))),
        ("followers", id_of(doc.get("followers"))),
        ("following", id_of(doc.get("following"))),
    ):
        if url is not None and not same_origin(url, actor_id):
            raise BadRequest(f"the actor's {field} is on another host")
    name = doc.get("name")
    username = doc.get("preferredUsername")
    return {
        "uri": actor_id,
        "domain": host_of(actor_id),
        "type": sorted(types & ACTOR_TYPES)[0],
        "preferred_username": username[:255] if isinstance(username, str) else None,
        "name": name[:500] if isinstance(name, str) else None,
        "inbox_uri": inbox,
        "shared_inbox_uri": shared,
        "url": _http_url(doc.get("url")),
    }


def public_keys_of(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key id, owner, PEM) for each publicKey entry of an actor or key document."""
    keys: list[tuple[str, str, str]] = []
    candidates: list[Any] = as_list(doc.get("publicKey"))
    if "publicKeyPem" in doc:
        candidates.append(doc)
    for entry in candidates:
        if not isinstance(entry, dict):
            continue
        key_id, owner, pem = (
            id_of(entry.get("id")),
            id_of(entry.get("owner")),
            entry.get("publicKeyPem"),
        )
        # A key is on its owner's host, like every other address an actor gives us.
        if key_id and owner and isinstance(pem, str) and same_origin(key_id, owner):
            keys.append((key_id, owner, pem))
    return keys


async def fetch_document(ctx: Context, uri: str) -> dict[str, Any]:
    """GET and normalise a remote object whose id must be the URL it was fetched from."""
    fetched = await ctx.client.fetch_json(uri, auth=ctx.instance_auth())
    try:
        doc = await normalise_off_loop(fetched.document)
    except JsonLdError as exc:
        raise RemoteError("remote document is not valid JSON-LD", detail=uri) from exc
    doc_id = id_of(doc.get("id"))
    # A document is only trusted for the id it claims when it was served at that id
    # (Mastodon requires the same); a redirect is fine if it lands on the claimed id.
    if doc_id not in {uri, fetched.url}:
        raise RemoteError("remote document id does not match its URL", detail=uri)
    return doc


async def store_actor(session: AsyncSession, ctx: Context, doc: dict[str, Any]) -> RemoteActor:
    fields = parse_actor(doc)
    actor = (
        await session.scalars(select(RemoteActor).where(RemoteActor.uri == fields["uri"]))
    ).first()
    if actor is None:
        actor = RemoteActor(**fields)
        session.add(actor)
    else:
        for name, value in fields.items():
            setattr(actor, name, value)
    actor.document = doc
    actor.fetched_at = ctx.clock()
    for key_id, owner, pem in public_keys_of(doc):
        if owner == actor.uri:
            await store_key(session, ctx, key_id=key_id, owner_uri=owner, pem=pem)
    await session.flush()
    return actor


async def store_key(
    session: AsyncSession, ctx: Context, *, key_id: str, owner_uri: str, pem: str
) -> RemoteKey:
    key = (await session.scalars(select(RemoteKey).where(RemoteKey.key_id == key_id))).first()
    if key is None:
        key = RemoteKey(key_id=key_id, owner_uri=owner_uri, public_key_pem=pem)
        session.add(key)
    else:
        key.owner_uri, key.public_key_pem = owner_uri, pem
    key.fetched_at = ctx.clock()
    await session.flush()
    return key


async def fetch_actor(
    session: AsyncSession, ctx: Context, uri: str, *, refresh: bool = False
) -> RemoteActor:
    """The cached actor, or a fresh copy fetched from its origin (read locally for one of
    our own assemblies: no request to ourselves, which on SQLite would wait for the write
    transaction the caller may hold)."""
    actor = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == uri))).first()
    if actor is not None and not refresh and ctx.clock() - actor.fetched_at < ACTOR_TTL:
        return actor
    if ctx.urls.is_local(uri):
        return await local_actor(session, ctx, uri)
    doc = await fetch_document(ctx, uri)
    try:
        return await store_actor(session, ctx, doc)
    except BadRequest as exc:
        raise RemoteError(exc.message, detail=uri) from exc


async def local_actor(session: AsyncSession, ctx: Context, uri: str) -> RemoteActor:
    """One of our assemblies as a RemoteActor row (how followers and follows refer to
    actors), from the same actor document the world fetches."""
    handle = uri.removeprefix(ctx.urls.actor(""))
    query = select(Assembly).where(Assembly.handle == handle)
    assembly = (await session.scalars(query)).first() if "/" not in handle else None
    if assembly is None or assembly.status in {AssemblyStatus.PENDING, AssemblyStatus.REJECTED}:
        raise NotFound("no such assembly on this instance", detail=uri)
    if assembly.status == AssemblyStatus.SUSPENDED:
        raise Gone("this assembly is suspended")
    return await store_actor(session, ctx, normalise(build_assembly_actor(ctx.urls, assembly)))


@dataclass(frozen=True)
class ResolvedKey:
    """A key fetched from its origin, with its owner's actor document, not yet stored."""

    key_id: str
    owner_uri: str
    pem: str
    actor_doc: dict[str, Any]


def _actor_fields(doc: dict[str, Any], uri: str) -> None:
    try:
        parse_actor(doc)
    except BadRequest as exc:
        raise RemoteError(exc.message, detail=uri) from exc


async def resolve_key(ctx: Context, key_id: str) -> ResolvedKey:
    """Fetch a signature's key over the network only, bound to its owner.

    A key belongs to an actor only if that actor's own document — fetched at its id, served
    as ActivityStreams, its ``id`` equal to the URL — lists the key, same id and same PEM,
    on the actor's own host. A key document elsewhere (an uploaded file on the victim's
    host claiming ``owner``) proves nothing by itself. No database work happens here, so the
    caller can fetch before it opens a transaction and store the result
    (``store_resolved``) inside it.
    """
    url = urldefrag(key_id).url
    doc = await fetch_document(ctx, url)
    if set(as_list(doc.get("type"))) & ACTOR_TYPES:
        actor_doc, owner, claimed = doc, id_of(doc.get("id")) or "", None
    else:
        # A separate key document (GoToSocial's /main-key): it names the owner to ask.
        named = [(o, p) for k, o, p in public_keys_of(doc) if k == key_id]
        if not named:
            raise RemoteError("no such key in the key document", detail=key_id)
        owner, claimed = named[0]
        actor_doc = await fetch_document(ctx, owner)
    _actor_fields(actor_doc, owner)
    listed = [p for k, o, p in public_keys_of(actor_doc) if k == key_id and o == owner]
    if not listed:
        raise RemoteError("the key's owner does not list that key", detail=key_id)
    if claimed is not None and claimed.strip() != listed[0].strip():
        raise RemoteError("the key document and its owner disagree on the key", detail=key_id)
    return ResolvedKey(key_id, owner, listed[0], actor_doc)


async def store_resolved(session: AsyncSession, ctx: Context, resolved: ResolvedKey) -> RemoteKey:
    await store_actor(session, ctx, resolved.actor_doc)
    return await store_key(
        session, ctx, key_id=resolved.key_id, owner_uri=resolved.owner_uri, pem=resolved.pem
    )


async def forget_actor(session: AsyncSession, actor_uri: str) -> bool:
    """Remove a deleted remote actor everywhere: followers, keys, cached profile."""
    actor = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == actor_uri))).first()
    await session.execute(delete(RemoteKey).where(RemoteKey.owner_uri == actor_uri))
    if actor is None:
        return False
    await session.execute(delete(Follower).where(Follower.actor_id == actor.id))
    await session.delete(actor)
    await session.flush()
    return True
