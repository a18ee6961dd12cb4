"""Assemblies following other actors: Follow out, Accept/Reject in, Undo out.

A target is named by handle (``@name@host``, ``name@host``, ``acct:name@host``) or by actor
URL, and may be an assembly of this instance, of another InterOcc, or any fediverse actor. A
local target goes through the same protocol (its inbox gets our signed Follow), so one code
path serves every case; only the actor document is read locally instead of over HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assemblies
from server.activitypub import delivery, outbox
from server.activitypub.actors import (
    ACTOR_TTL,
    fetch_actor,
    fetch_document,
    local_actor,
    store_actor,
)
from server.activitypub.mentions import _webfinger
from server.context import Context
from server.errors import BadRequest, Conflict, Gone, NotFound, RemoteError
from server.models import Assembly, Following, FollowStatus, RemoteActor

HANDLE_RE = re.compile(r"^@?([A-Za-z0-9_][A-Za-z0-9_.-]*)@([A-Za-z0-9.-]+(?::\d{1,5})?)$")


async def resolve_actor(session: AsyncSession, ctx: Context, target: str) -> RemoteActor:
    """The actor a handle or URL names, stored as a RemoteActor; BadRequest if not found."""
    target = target.strip().removeprefix("acct:")
    if not target or len(target) > 2048:
        raise BadRequest("give a handle such as @assembly@example.org or an actor URL")
    if target.startswith(("https://", "http://")):
        uri = target
        local = ctx.urls.local_path(uri)
        if local is not None:
            prefix = ctx.urls.actor("")
            return await _local_actor(session, ctx, uri.removeprefix(prefix))
    else:
        match = HANDLE_RE.match(target)
        if match is None:
            raise BadRequest(f"{target[:100]!r} is neither a handle (@name@host) nor a URL")
        user, host = match.group(1), match.group(2).lower()
        if host == ctx.urls.host:
            return await _local_actor(session, ctx, user.lower())
        if await delivery.blocking_domain(session, f"https://{host}/") is not None:
            raise BadRequest(f"{host} is blocked on this instance")
        cached = await _cached_handle(session, ctx, user, host)
        if cached is not None:
            return cached
        try:
            uri = await _webfinger(ctx, user, host)
        except RemoteError as exc:
            raise BadRequest(f"cannot find @{user}@{host}: {exc.message}") from exc
    if await delivery.blocking_domain(session, uri) is not None:
        raise BadRequest("that actor's domain is blocked on this instance")
    try:
        return await fetch_actor(session, ctx, uri)
    except RemoteError as exc:
        raise BadRequest(f"cannot fetch {uri[:200]}: {exc.message}") from exc


async def _cached_handle(
    session: AsyncSession, ctx: Context, user: str, host: str
) -> RemoteActor | None:
    """A fresh cached actor for @user@host (host with its port, as in the actor's URL)."""
    candidates = (
        await session.scalars(
            select(RemoteActor).where(RemoteActor.preferred_username == user).limit(50)
        )
    ).all()
    for cached in candidates:
        fresh = ctx.clock() - cached.fetched_at < ACTOR_TTL
        if fresh and urlsplit(cached.uri).netloc.lower() == host:
            return cached
    return None


async def prefetch(ctx: Context, target: str) -> None:
    """Resolve a remote target's actor over the network outside any transaction (SQLite
    holds its write lock for a whole transaction), storing it so that a following
    :func:`resolve_actor` in the caller's transaction finds it cached."""
    target = target.strip().removeprefix("acct:")
    if target.startswith(("https://", "http://")):
        if ctx.urls.is_local(target):
            return
        uri = target
    else:
        match = HANDLE_RE.match(target)
        if match is None or match.group(2).lower() == ctx.urls.host:
            return
        async with ctx.sessions() as session:
            if await _cached_handle(session, ctx, match.group(1), match.group(2).lower()):
                return
        try:
            uri = await _webfinger(ctx, match.group(1), match.group(2).lower())
        except RemoteError:
            return  # resolve_actor reports it
    async with ctx.sessions() as session:
        if await delivery.blocking_domain(session, uri) is not None:
            return
        cached = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == uri))).first()
        if cached is not None and ctx.clock() - cached.fetched_at < ACTOR_TTL:
            return  # fresh enough: resolve_actor will use it
    try:
        doc = await fetch_document(ctx, uri)
    except RemoteError:
        return
    async with ctx.sessions() as session, session.begin():
        try:
            await store_actor(session, ctx, doc)
        except BadRequest:
            return


async def _local_actor(session: AsyncSession, ctx: Context, handle: str) -> RemoteActor:
    try:
        return await local_actor(session, ctx, ctx.urls.actor(handle))
    except (RemoteError, NotFound, Gone):
        raise BadRequest(f"there is no assembly @{handle} on this instance") from None


async def follow(
    session: AsyncSession, ctx: Context, *, handle: str, target: str, now: datetime
) -> Following:
    """``handle`` follows ``target``: a Follow is queued; the row waits for Accept."""
    assembly = await assemblies.require_active(session, handle)
    actor = await resolve_actor(session, ctx, target)
    if actor.uri == ctx.urls.actor(assembly.handle):
        raise BadRequest("an assembly cannot follow itself")
    existing = await find(session, assembly.id, actor.uri)
    if existing is not None:
        raise Conflict(f"{assembly.handle} already follows {actor.uri} ({existing.status.value})")
    sent = await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=assembly,
        activity_type="Follow",
        obj=actor.uri,
        to=[actor.uri],
        inboxes=[actor.inbox_uri],
        public=False,
        now=now,
    )
    row = Following(
        assembly_id=assembly.id,
        target_uri=actor.uri,
        inbox_uri=actor.inbox_uri,
        follow_uri=sent.activity.uri,
        status=FollowStatus.PENDING,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def unfollow(
    session: AsyncSession, ctx: Context, *, handle: str, target: str, now: datetime
) -> Following:
    """Stop following: Undo{Follow} to the target, and the row is gone."""
    assembly = await assemblies.get(session, handle)
    row = await _find_target(session, ctx, assembly, target)
    if row is None:
        raise NotFound(f"{assembly.handle} does not follow {target[:200]}")
    follow_doc: dict[str, Any] = {
        "id": row.follow_uri,
        "type": "Follow",
        "actor": ctx.urls.actor(assembly.handle),
        "object": row.target_uri,
    }
    await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=assembly,
        activity_type="Undo",
        obj=follow_doc,
        to=[row.target_uri],
        inboxes=[row.inbox_uri],
        public=False,
        now=now,
    )
    await session.delete(row)
    await session.flush()
    return row


async def _find_target(
    session: AsyncSession, ctx: Context, assembly: Assembly, target: str
) -> Following | None:
    target = target.strip()
    rows = (
        await session.scalars(select(Following).where(Following.assembly_id == assembly.id))
    ).all()
    for row in rows:
        if row.target_uri == target:
            return row
    # A handle: resolve it (cached actors first) to its URI.
    actor = await resolve_actor(session, ctx, target)
    return next((row for row in rows if row.target_uri == actor.uri), None)


async def find(session: AsyncSession, assembly_id: int, target_uri: str) -> Following | None:
    query = select(Following).where(
        Following.assembly_id == assembly_id, Following.target_uri == target_uri
    )
    return (await session.scalars(query)).first()


async def answered(
    session: AsyncSession, *, follow_uri: str, actor_uri: str, accepted: bool, now: datetime
) -> bool:
    """An Accept or Reject of one of our Follows, from the actor we asked; False if unknown."""
    row = (
        await session.scalars(
            select(Following).where(
                Following.follow_uri == follow_uri, Following.target_uri == actor_uri
            )
        )
    ).first()
    if row is None:
        return False
    if accepted:
        row.status = FollowStatus.ACCEPTED
        row.accepted_at = row.accepted_at or now
    else:
        await session.delete(row)
    await session.flush()
    return True


async def following_of(session: AsyncSession, assembly_id: int) -> Sequence[Following]:
    query = (
        select(Following)
        .where(Following.assembly_id == assembly_id)
        .order_by(Following.created_at.desc(), Following.id.desc())
    )
    return (await session.scalars(query)).all()


async def accepted_targets(session: AsyncSession, assembly_id: int) -> list[str]:
    query = select(Following.target_uri).where(
        Following.assembly_id == assembly_id, Following.status == FollowStatus.ACCEPTED
    )
    return list((await session.scalars(query)).all())


async def assemblies_following(session: AsyncSession, actor_uri: str) -> list[int]:
    """Ids of our assemblies whose follow of ``actor_uri`` was accepted."""
    query = select(Following.assembly_id).where(
        Following.target_uri == actor_uri,
        Following.status == FollowStatus.ACCEPTED,
        Following.assembly_id.is_not(None),
    )
    return [i for i in (await session.scalars(query)).all() if i is not None]


async def forget_target(session: AsyncSession, actor_uri: str) -> None:
    """The followed actor is gone (Delete of an actor): drop our follows of it."""
    await session.execute(delete(Following).where(Following.target_uri == actor_uri))
