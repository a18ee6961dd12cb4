"""ActivityPub endpoints: actors, inboxes, collections and objects, with content negotiation.

Routes are thin: parse, call one domain function, render. Every id in a document is the
URL it is served at (built by server.urls, whose templates these routes are declared with).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import assemblies, communiques, cosign, following, urls
from server.activitypub import authorized_fetch
from server.activitypub.negotiation import is_activity_json, wants_activity_json
from server.activitypub.vocab import (
    AS2_MEDIA_TYPE,
    CONTEXT,
    build_assembly_actor,
    build_collection,
    build_collection_page,
    build_key_only_actor,
    build_tombstone,
)
from server.context import Context
from server.errors import (
    BadRequest,
    Gone,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from server.federation import inbox
from server.federation.cache import cache_of, respond
from server.models import (
    Activity,
    Assembly,
    Communique,
    Follower,
    FollowerStatus,
    RemoteActor,
)
from server.web import public

PAGE_SIZE = 20


class ActivityResponse(JSONResponse):
    media_type = f"{AS2_MEDIA_TYPE}; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def as2(
    document: dict[str, Any],
    media: str | None = None,
    status: int = 200,
    *,
    signed: bool = False,
) -> Response:
    """An ActivityStreams answer. ``signed``: under authorized fetch the answer depends on
    the request's signature too, so no shared cache may hand it to another requester."""
    vary = "Accept, Signature" if signed else "Accept"
    headers = {"Vary": vary, "Access-Control-Allow-Origin": "*"}
    response = ActivityResponse(document, status_code=status, headers=headers)
    if media and media.startswith("application/ld+json"):
        response.headers["content-type"] = media
    return response


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _target(request: Request) -> str:
    """The request target as signed: path and ``?query``."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


async def _require_signature(request: Request) -> bool:
    """Under authorized fetch (INTEROCC_AUTHORIZED_FETCH), an actor-scoped ActivityStreams
    document is read only by a verified signer whose domain is not blocked: 401 or 403
    otherwise. Returns whether the setting is on (the answer then varies with the
    signature). Checked before the database is asked anything, so an unsigned request
    learns not even whether the document exists."""
    ctx = _ctx(request)
    if not ctx.settings.authorized_fetch:
        return False
    await authorized_fetch.verify_signed_get(
        ctx, method=request.method, target=_target(request), headers=request.headers
    )
    return True


def actor_document(ctx: Context, assembly: Assembly) -> dict[str, Any]:
    return build_assembly_actor(ctx.urls, assembly)


async def actor(request: Request) -> Response:
    ctx = _ctx(request)
    handle = request.path_params["handle"]
    media = wants_activity_json(request.headers.get("accept"))
    if not media:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
        return await public.assembly_page(request, assembly)
    signed = ctx.settings.authorized_fetch

    async def render(key_only: bool) -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
        document = actor_document(ctx, assembly)
        return as2(build_key_only_actor(document) if key_only else document, media, signed=signed)

    cache = cache_of(request)
    key = (request.url.path, media, signed)
    # The assembly must exist (404, 410) before the signature is looked at, as it always
    # was: a kept answer says it did, since every change to it drops the answer.
    answer = await cache.answer((*key, "whole"), lambda: render(False))
    if signed:
        try:
            await _require_signature(request)
        except (Unauthorized, TooManyRequests):
            # The key stays public, as Mastodon keeps it: a server must be able to verify
            # our signatures, even one we cannot verify in turn right now (its key server is
            # down, or it signs this fetch with a key we cannot get). A signer on a blocked
            # domain is refused (403), not served.
            answer = await cache.answer((*key, "key only"), lambda: render(True))
    return respond(request, answer)


async def instance_actor(request: Request) -> Response:
    ctx = _ctx(request)
    u = ctx.urls
    media = wants_activity_json(request.headers.get("accept"))

    async def render() -> Response:
        document = {
            "@context": CONTEXT,
            "id": u.instance_actor(),
            "type": "Application",
            "preferredUsername": u.host,
            "name": ctx.settings.instance_name,
            "inbox": u.shared_inbox(),
            "outbox": u.instance_actor() + "/outbox",
            "endpoints": {"sharedInbox": u.shared_inbox()},
            "publicKey": {
                "id": u.instance_key_id(),
                "owner": u.instance_actor(),
                "publicKeyPem": ctx.instance_public_key_pem,
            },
            "manuallyApprovesFollowers": True,
            "discoverable": False,
            "url": u.base + "/",
        }
        return as2(document, media)

    return respond(request, await cache_of(request).answer((request.url.path, media), render))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def post_inbox(request: Request) -> Response:
    ctx = _ctx(request)
    if not is_activity_json(request.headers.get("content-type")):
        raise UnsupportedMediaType("an inbox takes application/activity+json")
    body = await _read_body(request, ctx.settings.max_body_bytes)
    target = _target(request)
    handle = request.path_params.get("handle")
    signed = await inbox.authenticate(
        ctx,
        method=request.method,
        target=target,
        headers=request.headers,
        body=body,
        inbox_handle=handle,
        memo=request.app.state.inbox_memo,
    )
    if signed.owner_uri is None:
        # A Delete of an actor we never knew: nothing to remove, nothing to queue.
        return JSONResponse({"status": "ignored"}, status_code=202)
    queued = await request.app.state.inbox_enqueuer.enqueue(signed, inbox_handle=handle)
    return JSONResponse({"status": queued.value}, status_code=202)


def _page_number(request: Request) -> int | None:
    raw = request.query_params.get("page")
    if raw is None:
        return None
    if raw == "true":
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise BadRequest("page must be a positive number")
    return int(raw)


def _paged(
    collection_id: str,
    total: int,
    page: int | None,
    items: list[Any],
    request: Request,
    *,
    signed: bool,
    listed: bool = True,
) -> Response:
    """The collection (its total and, if ``listed``, its first page) or one of its pages."""
    media = wants_activity_json(request.headers.get("accept")) or None
    if page is None:
        first = f"{collection_id}?page=1" if listed else None
        document = build_collection(collection_id=collection_id, total=total, first=first)
        return as2(document, media, signed=signed)
    has_next = page * PAGE_SIZE < total
    doc = build_collection_page(
        page_id=f"{collection_id}?page={page}",
        part_of=collection_id,
        items=items,
        next_page=f"{collection_id}?page={page + 1}" if has_next else None,
        prev_page=f"{collection_id}?page={page - 1}" if page > 1 else None,
    )
    doc["totalItems"] = total
    return as2(doc, media, signed=signed)


def _require_listed(assembly: Assembly) -> None:
    # As Mastodon answers the pages of hidden collections: they do not exist.
    if not assembly.publish_social_graph:
        raise NotFound("this assembly does not publish this list")


def _as2_media(request: Request) -> str | None:
    """The AS2 media type a collection or object is answered with (part of its cache key)."""
    return wants_activity_json(request.headers.get("accept")) or None


async def outbox(request: Request) -> Response:
    ctx = _ctx(request)
    signed = await _require_signature(request)
    page = _page_number(request)
    handle = request.path_params["handle"]

    async def render() -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            total = await assemblies.communique_count(session, assembly.id)
            items: list[Any] = []
            if page is not None:
                rows = (
                    await session.execute(
                        select(Activity, Communique)
                        .join(Communique, Communique.id == Activity.communique_id)
                        .where(
                            Communique.assembly_id == assembly.id,
                            Communique.deleted_at.is_(None),
                            Activity.type == "Create",
                        )
                        .order_by(Communique.published_at.desc(), Communique.id.desc())
                        .offset((page - 1) * PAGE_SIZE)
                        .limit(PAGE_SIZE)
                    )
                ).all()
                files = await communiques.attachments_of(session, [c.id for _, c in rows])
                for activity, communique in rows:
                    items.append(
                        communiques.outbox_item(
                            ctx.urls,
                            assembly,
                            activity.document,
                            communique,
                            files.get(communique.id, []),
                        )
                    )
        collection_id = ctx.urls.outbox(assembly.handle)
        return _paged(collection_id, total, page, items, request, signed=signed)

    key = (request.url.path, page, _as2_media(request), signed)
    return respond(request, await cache_of(request).answer(key, render))


async def _require_published_list(ctx: Context, handle: str) -> None:
    """The pages of a followers or following list exist only while the assembly publishes
    it: read from the database on every request, kept answer or not, so that hiding a list
    takes effect at once in every process (no cache lifetime applies to it)."""
    async with ctx.sessions() as session:
        _require_listed(await assemblies.get_public(session, handle))


async def followers(request: Request) -> Response:
    """Who follows an assembly: only how many, unless it publishes the list."""
    ctx = _ctx(request)
    signed = await _require_signature(request)
    page = _page_number(request)
    handle = request.path_params["handle"]
    if page is not None:
        await _require_published_list(ctx, handle)

    async def render() -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            total = await assemblies.follower_count(session, assembly.id)
            items: list[Any] = []
            if page is not None:
                _require_listed(assembly)
                items = list(
                    (
                        await session.scalars(
                            select(RemoteActor.uri)
                            .join(Follower, Follower.actor_id == RemoteActor.id)
                            .where(
                                Follower.assembly_id == assembly.id,
                                Follower.status == FollowerStatus.ACCEPTED,
                            )
                            .order_by(Follower.id.desc())
                            .offset((page - 1) * PAGE_SIZE)
                            .limit(PAGE_SIZE)
                        )
                    ).all()
                )
        collection_id = ctx.urls.followers(assembly.handle)
        listed = assembly.publish_social_graph
        return _paged(collection_id, total, page, items, request, signed=signed, listed=listed)

    key = (request.url.path, page, _as2_media(request), signed)
    return respond(request, await cache_of(request).answer(key, render))


async def following_collection(request: Request) -> Response:
    """The actors an assembly follows (accepted follows only): only how many, unless it
    publishes the list."""
    ctx = _ctx(request)
    signed = await _require_signature(request)
    page = _page_number(request)
    handle = request.path_params["handle"]
    if page is not None:
        await _require_published_list(ctx, handle)

    async def render() -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            if page is not None:
                _require_listed(assembly)
            targets = await following.accepted_targets(session, assembly.id)
        items = targets[(page - 1) * PAGE_SIZE : page * PAGE_SIZE] if page is not None else []
        collection_id = ctx.urls.following(assembly.handle)
        listed = assembly.publish_social_graph
        total = len(targets)
        return _paged(collection_id, total, page, items, request, signed=signed, listed=listed)

    key = (request.url.path, page, _as2_media(request), signed)
    return respond(request, await cache_of(request).answer(key, render))


async def shares_collection(request: Request) -> Response:
    """The Announces of a communiqué (co-signatures among them), as Mastodon lists shares."""
    ctx = _ctx(request)
    signed = await _require_signature(request)
    handle, public_id = request.path_params["handle"], request.path_params["public_id"]
    page = _page_number(request)

    async def render() -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            assembly, item = await communiques.get(session, assembly.handle, public_id)
            if item.deleted_at is not None:
                raise Gone("this communiqué was deleted")
            shares = [share.announce_uri for share in await cosign.shares_of(session, item.id)]
        items = shares[(page - 1) * PAGE_SIZE : page * PAGE_SIZE] if page is not None else []
        collection_id = ctx.urls.shares(assembly.handle, item.public_id)
        return _paged(collection_id, len(shares), page, items, request, signed=signed)

    key = (request.url.path, page, _as2_media(request), signed)
    return respond(request, await cache_of(request).answer(key, render))


async def featured(request: Request) -> Response:
    """Pinned communiqués, newest pin first, as whole Notes (what Mastodon reads)."""
    ctx = _ctx(request)
    signed = await _require_signature(request)
    handle = request.path_params["handle"]
    media = wants_activity_json(request.headers.get("accept"))

    async def render() -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            pinned = (
                await session.scalars(
                    select(Communique)
                    .where(
                        Communique.assembly_id == assembly.id,
                        Communique.pinned_at.is_not(None),
                        Communique.deleted_at.is_(None),
                    )
                    .order_by(Communique.pinned_at.desc())
                    .limit(20)
                )
            ).all()
            files = await communiques.attachments_of(session, [c.id for c in pinned])
        items = [
            communiques.proven_note(ctx.urls, assembly, c, files.get(c.id, [])) for c in pinned
        ]
        doc = build_collection(
            collection_id=ctx.urls.featured(assembly.handle), total=len(items), first=None
        )
        doc["orderedItems"] = items
        return as2(doc, media, signed=signed)

    key = (request.url.path, media, signed)
    return respond(request, await cache_of(request).answer(key, render))


async def communique(request: Request) -> Response:
    ctx = _ctx(request)
    handle, public_id = request.path_params["handle"], request.path_params["public_id"]
    media = wants_activity_json(request.headers.get("accept"))
    if not media:
        # The HTML page stays public, and is never kept: it varies with the visitor.
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            assembly, item = await communiques.get(session, assembly.handle, public_id)
        if item.deleted_at is not None:
            raise Gone("this communiqué was deleted")
        return await public.communique_page(request, assembly, item)
    # Only the ActivityStreams face is guarded.
    signed = await _require_signature(request)

    async def render() -> Response:
        async with ctx.sessions() as session:
            assembly = await assemblies.get_public(session, handle)
            assembly, item = await communiques.get(session, assembly.handle, public_id)
            files = await communiques.attachments_of(session, [item.id])
        if item.deleted_at is not None:
            note_url = ctx.urls.communique(assembly.handle, item.public_id)
            tomb = build_tombstone(object_id=note_url, deleted=item.deleted_at)
            return as2({"@context": CONTEXT, **tomb}, media, status=410, signed=signed)
        # The communiqué proves its origin wherever it is copied (FEP-8b32).
        document = communiques.proven_note(ctx.urls, assembly, item, files.get(item.id, []))
        return as2(document, media, signed=signed)

    key = (request.url.path, media, signed)
    return respond(request, await cache_of(request).answer(key, render))


async def activity(request: Request) -> Response:
    """An activity of an assembly's (a Create carries its communiqué): guarded like it."""
    ctx = _ctx(request)
    signed = await _require_signature(request)
    public_id = request.path_params["public_id"]
    media = wants_activity_json(request.headers.get("accept"))

    async def render() -> Response:
        async with ctx.sessions() as session:
            row = (
                await session.execute(
                    select(Activity, Communique)
                    .outerjoin(Communique, Communique.id == Activity.communique_id)
                    .where(Activity.public_id == public_id)
                )
            ).first()
        # Only public activities can be read by anyone; an Accept is the follower's business.
        if row is None or not row[0].public:
            raise NotFound()
        found, item = row
        if found.type == "Create" and item is not None and item.deleted_at is not None:
            raise Gone("this communiqué was deleted")
        return as2(found.document, media, signed=signed)

    key = (request.url.path, media, signed)
    return respond(request, await cache_of(request).answer(key, render))


routes = [
    Route(urls.INSTANCE_ACTOR, instance_actor),
    Route(urls.SHARED_INBOX, post_inbox, methods=["POST"]),
    Route(urls.ACTOR, actor),
    Route(urls.ACTOR_INBOX, post_inbox, methods=["POST"]),
    Route(urls.ACTOR_OUTBOX, outbox),
    Route(urls.ACTOR_FOLLOWERS, followers),
    Route(urls.ACTOR_FOLLOWING, following_collection),
    Route(urls.ACTOR_FEATURED, featured),
    Route(urls.COMMUNIQUE, communique),
    Route(urls.COMMUNIQUE_SHARES, shares_collection),
    Route(urls.ACTIVITY, activity),
]
