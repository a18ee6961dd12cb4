"""Incoming activities: verify, tie to the signer, dedupe, handle, store.

Order (see STYLE.md and docs/security.md): size limit → parse within bounds → domain blocks →
Date, Digest and signed Host → verify (cached key, else one bounded key fetch) → rate limits →
the key's owner is the actor → normalise (in a worker thread) → dedupe by id → handler → store
→ 202. A request that fails any step changes nothing in the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assemblies, following, relays
from server.activitypub import delivery, proofs
from server.activitypub.actors import (
    ResolvedKey,
    fetch_actor,
    fetch_document,
    host_of,
    same_origin,
    store_resolved,
)
from server.activitypub.bounds import TooComplex, check_document
from server.activitypub.jsonld import (
    JsonLdError,
    as_list,
    id_of,
    normalise,
    normalise_off_loop,
)
from server.activitypub.proofs import Provenance, Scheme
from server.activitypub.signatures import (
    Rejected,
    parse_signature,
)
from server.activitypub.verification import (
    KeptKey,
    KeyUnavailable,
    stored_key_of,
    verify_signer,
)
from server.content import MAX_LINK
from server.context import Context
from server.errors import (
    BadRequest,
    Forbidden,
    RemoteError,
    TooManyRequests,
    Unauthorized,
)
from server.federation.cache import Memo
from server.federation.handlers import (
    HANDLERS,
    Incoming,
    check_move,
    check_undo,
    checked_note,
)
from server.models import InboxActivity

log = logging.getLogger(__name__)

Doc = dict[str, Any]


@dataclass(frozen=True)
class Received:
    activity_id: str
    actor_uri: str
    type: str
    duplicate: bool = False
    ignored: bool = False


@dataclass(frozen=True)
class Signed:
    """A request whose signature holds: the parsed body and who signed it."""

    raw: Doc
    actor_uri: str
    owner_uri: str | None  # None: a Delete of an actor we never knew, nothing to verify
    fetched_key: ResolvedKey | None  # a key fetched for this request, stored on success
    activity: Doc | None = None  # ``raw`` normalised (off the event loop), once verified
    # How the actor's authorship was shown (its HTTP signature, a proof, its origin).
    provenance: Provenance | None = None
    also_fetched: ResolvedKey | None = None  # a second fetched key (a forwarded activity's)

    @property
    def fetched_keys(self) -> list[ResolvedKey]:
        return [key for key in (self.fetched_key, self.also_fetched) if key is not None]


def parse_body(body: bytes) -> Doc:
    """The request body as a JSON object within the document bounds; BadRequest otherwise."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("body is not JSON") from None
    if not isinstance(raw, dict):
        raise BadRequest("body is not a JSON object")
    try:
        check_document(raw)
    except TooComplex as exc:
        raise BadRequest(exc.reason) from None
    return raw


async def authenticate(
    ctx: Context,
    *,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    inbox_handle: str | None,
    memo: Memo[Any],
) -> Signed:
    """Parse the body and verify its signature, fetching the key if need be.

    ``memo`` (the web app's) keeps the domain blocks and the keys we store between requests,
    so that a POST whose key we know reads nothing from the database here.

    Cheap checks first, so that a request that fails them costs nothing more: document
    bounds, signature syntax, domain blocks, then Date, Digest and the signed Host (no key
    needed), then the cached key, then at most one key fetch (refused for a while after it
    failed, and bounded per host), then the per-actor and per-host rate limits. Runs before
    any write transaction is opened: a slow remote key server must not hold the database's
    write lock (SQLite has only one). Nothing is written here.
    """
    if inbox_handle is not None:
        async with ctx.sessions() as session:
            await assemblies.get_public(session, inbox_handle)
    raw = parse_body(body)
    actor_uri = id_of(raw.get("actor"))
    if not actor_uri:
        raise BadRequest("activity has no actor")
    for name in ("id", "actor", "object"):
        # Our columns hold URIs of up to MAX_LINK characters; longer ones are no one's.
        uri = id_of(raw.get(name))
        if uri is not None and len(uri) > MAX_LINK:
            raise BadRequest(f"the activity's {name} is longer than {MAX_LINK} characters")
    info = parse_signature(headers)
    if isinstance(info, Rejected):
        raise Unauthorized(info.reason)
    # Refused before any key is fetched: a blocked domain gets no request from us at all.
    if await _blocked(ctx, memo, actor_uri, info.key_id):
        raise Forbidden("this instance does not accept activities from your domain")

    async def stored_key(ctx: Context, key_id: str) -> KeptKey | None:
        kept: KeptKey | None = await memo.get(("key", key_id), lambda: stored_key_of(ctx, key_id))
        return kept

    try:
        signer = await verify_signer(
            ctx,
            method=method,
            target=target,
            headers=headers,
            body=body,
            key_id=info.key_id,
            stored_key=stored_key,
        )
    except KeyUnavailable:
        # An actor deleting itself is gone (410) by the time we could fetch its key; if we
        # never knew it there is nothing to remove, so answer politely and store nothing.
        if raw.get("type") == "Delete" and id_of(raw.get("object")) == actor_uri:
            return Signed(raw, actor_uri, None, None)
        raise
    provenance = Provenance(Scheme.HTTP_SIGNATURE, signer.key_id)
    return await _admitted(
        ctx, Signed(raw, actor_uri, signer.owner_uri, signer.fetched, provenance=provenance)
    )


async def _blocked(ctx: Context, memo: Memo[Any], *uris: str) -> bool:
    """True if a blocked domain covers the host of any of ``uris``."""

    async def load() -> frozenset[str]:
        async with ctx.sessions() as session:
            return await delivery.blocked_domains(session)

    blocked: frozenset[str] = await memo.get(("domain blocks",), load)
    return any(delivery.is_blocked_host(delivery.host_of_uri(uri), blocked) for uri in uris)


async def _admitted(ctx: Context, signed: Signed) -> Signed:
    """The rate limits of the verified signer and its host, then the forwarding rule, then
    the checks that need nothing but the document."""
    if signed.owner_uri is not None:
        for limiter, key in (
            (ctx.guards.per_actor, signed.owner_uri),
            (ctx.guards.per_host, host_of(signed.owner_uri)),
        ):
            wait = limiter.take(key)
            if wait is not None:
                raise TooManyRequests("too many activities; slow down", retry_after=wait)
    signed = await _forwarded(ctx, signed)
    if signed.owner_uri is not None:
        check_structure(signed.raw, signed.actor_uri)
    return signed


def check_structure(activity: Doc, actor_uri: str) -> None:
    """What a remote server should hear about at once, read from the document alone: an id
    and a type, and the id on the actor's origin. The worker checks all of it again on the
    normalised activity (``receive``), which is what counts."""
    activity_id = activity.get("id")
    types = as_list(activity.get("type"))
    if not isinstance(activity_id, str) or not activity_id or not types:
        raise BadRequest("activity needs an id and a type")
    if not same_origin(activity_id, actor_uri):
        raise Forbidden("activity id is not on the actor's origin")
    if types[0] in ("Create", "Update"):
        checked_note(activity, actor_uri)
    elif types[0] == "Undo":
        check_undo(activity, actor_uri)
    elif types[0] == "Move":
        check_move(activity, actor_uri)


async def _forwarded(ctx: Context, signed: Signed) -> Signed:
    """A request signed by someone other than the activity's actor is a forwarded activity
    (ActivityPub §7.1.2: a co-signature passed on to an author's followers, a reply passed on
    to a thread's audience). The forwarder's signature says nothing about the actor, so the
    activity must prove itself: a FEP-8b32 proof or a Linked Data signature by its actor's
    key (checked on the JSON as it arrived), refused outright if one is there and fails. With
    neither (or one we cannot check), it is taken only as its origin serves it at its id, and
    what the forwarder sent is dropped; without that confirmation it is refused as before."""
    if signed.owner_uri in (None, signed.actor_uri):
        return signed
    refused = "the signing key does not belong to the activity's actor"
    activity_id = id_of(signed.raw.get("id"))
    if not activity_id or not same_origin(activity_id, signed.actor_uri):
        raise Unauthorized(refused)
    try:
        checked = await proofs.check_document(ctx, signed.raw, owner_uri=signed.actor_uri)
    except proofs.ProofInvalid as exc:
        raise Unauthorized(f"{refused}, and its proof does not hold: {exc.reason}") from None
    if checked is not None:
        return Signed(
            signed.raw,
            signed.actor_uri,
            signed.actor_uri,
            checked.fetched,
            provenance=checked.provenance,
            also_fetched=signed.fetched_key,
        )
    try:
        fetched = await ctx.client.fetch_json(activity_id, auth=ctx.instance_auth())
    except RemoteError as exc:
        raise Unauthorized(f"{refused}, and its origin does not serve it") from exc
    original = fetched.document
    if (
        fetched.url != activity_id
        or id_of(original.get("id")) != activity_id
        or id_of(original.get("actor")) != signed.actor_uri
    ):
        raise Unauthorized(f"{refused}, and its origin serves something else")
    return Signed(
        original,
        signed.actor_uri,
        signed.actor_uri,
        signed.fetched_key,
        provenance=Provenance(Scheme.ORIGIN, activity_id),
    )


async def prefetch(ctx: Context, signed: Signed) -> Doc | None:
    """Network lookups a handler needs, done before the write transaction opens: a
    follower's stale actor document (refreshed in the cache), and an Announce's object,
    fetched from its origin when an assembly of ours follows the announcer or it is a relay
    (the embedded copy, if any, is never trusted). Returns the Announce's object."""
    raw = signed.raw
    if raw.get("type") == "Follow" and signed.owner_uri == signed.actor_uri:
        # The follower's actor document, refreshed now if stale: handle_follow reads it.
        await following.prefetch(ctx, signed.actor_uri)
    if (
        raw.get("type") == "Update"
        and signed.owner_uri == signed.actor_uri
        and id_of(raw.get("object")) == signed.actor_uri
    ):
        # An actor's profile (and keys) are taken only as its origin serves them now: the
        # copy embedded in the Update is never stored.
        try:
            return await fetch_document(ctx, signed.actor_uri)
        except RemoteError as exc:
            log.info("updated actor %s not fetched: %s", signed.actor_uri[:200], exc.message)
            return None
    if raw.get("type") == "Move" and signed.owner_uri == signed.actor_uri:
        # The target as its origin serves it now: its aliases decide whether the Move holds.
        target = id_of(raw.get("target"))
        if not target or ctx.urls.is_local(target) or id_of(raw.get("object")) != signed.actor_uri:
            return None
        try:
            return await fetch_document(ctx, target)
        except RemoteError as exc:
            log.info("Move target %s not fetched: %s", target[:200], exc.message)
            return None
    if raw.get("type") != "Announce" or signed.owner_uri != signed.actor_uri:
        return None
    object_id = id_of(raw.get("object"))
    if not object_id or ctx.urls.is_local(object_id):
        return None
    async with ctx.sessions() as session:
        followed = await following.assemblies_following(session, signed.actor_uri)
        if not followed and not await relays.is_relay(session, signed.actor_uri):
            return None
        if await delivery.blocking_domain(session, object_id) is not None:
            return None
    try:
        return await fetch_document(ctx, object_id)
    except RemoteError as exc:
        log.info("announced object %s not fetched: %s", object_id[:200], exc.message)
        return await _proven_copy(ctx, raw.get("object"), object_id)


async def _proven_copy(ctx: Context, embedded: object, object_id: str) -> Doc | None:
    """The Announce's embedded copy of ``object_id``, when its origin cannot be reached and
    the copy carries a proof that holds with its author's key as we already keep it (the
    origin being down, its key cannot be fetched now). None otherwise."""
    if not isinstance(embedded, dict) or id_of(embedded.get("id")) != object_id:
        return None
    owner = id_of(embedded.get("attributedTo"))
    if "proof" not in embedded or not owner or not same_origin(object_id, owner):
        return None
    try:
        checked = await proofs.check_document(ctx, embedded, owner_uri=owner, fetch=False)
    except proofs.ProofInvalid as exc:
        log.info("announced copy of %s refused: %s", object_id[:200], exc.reason)
        return None
    if checked is None:
        return None
    try:
        return await normalise_off_loop(embedded)
    except JsonLdError:
        return None


async def receive(
    ctx: Context,
    session: AsyncSession,
    signed: Signed,
    *,
    inbox_handle: str | None,
    prefetched: Doc | None = None,
) -> Received:
    """Handle an authenticated activity inside the caller's transaction (no network I/O
    unless a handler needs an actor we have not cached); the caller commits on success."""
    raw, actor_uri = signed.raw, signed.actor_uri
    if signed.owner_uri is None:
        return Received(str(raw.get("id")), actor_uri, "Delete", ignored=True)
    if signed.owner_uri != actor_uri:
        raise Unauthorized("the signing key does not belong to the activity's actor")
    inbox_assembly = None
    if inbox_handle is not None:
        inbox_assembly = await assemblies.get_public(session, inbox_handle)
    activity = signed.activity
    if activity is None:
        try:
            activity = normalise(raw)
        except JsonLdError as exc:
            raise BadRequest(f"invalid JSON-LD: {exc}") from exc
    activity_id = id_of(activity.get("id"))
    types = as_list(activity.get("type"))
    activity_type = types[0] if types and isinstance(types[0], str) else ""
    if not activity_id or not activity_type:
        raise BadRequest("activity needs an id and a type")
    if id_of(activity.get("actor")) != actor_uri:
        raise BadRequest("activity actor changed under normalisation")
    if not same_origin(activity_id, actor_uri):
        raise Forbidden("activity id is not on the actor's origin")
    if types[0] in ("Create", "Update"):
        checked_note(activity, actor_uri)
    elif types[0] == "Undo":
        check_undo(activity, actor_uri)
    for key in signed.fetched_keys:
        await store_resolved(session, ctx, key)
    if not signed.fetched_keys and ctx.urls.is_local(actor_uri):
        # One of our assemblies writing to another (server/federation/local.py): its key was
        # read from the database, so its actor row is made here, as a fetched key makes one.
        await fetch_actor(session, ctx, actor_uri)
    seen = await session.scalar(select(InboxActivity.id).where(InboxActivity.uri == activity_id))
    if seen is not None:
        return Received(activity_id, actor_uri, activity_type, duplicate=True)
    handler = HANDLERS.get(activity_type)
    handled = False
    if handler is not None:
        handled = await handler(
            Incoming(
                ctx,
                session,
                activity,
                actor_uri,
                inbox_assembly,
                raw,
                prefetched,
                provenance=signed.provenance,
            )
        )
    session.add(
        InboxActivity(
            uri=activity_id,
            actor_uri=actor_uri,
            type=activity_type[:40],
            document=activity,
            received_at=ctx.clock(),
        )
    )
    await session.flush()
    return Received(activity_id, actor_uri, activity_type, ignored=not handled)
