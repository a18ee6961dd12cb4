"""Who follows our assemblies: the policy for an incoming Follow, and every answer to one.

The whole policy lives here, whoever applies it: the inbox when a Follow arrives
(server/federation/handlers.py), an assembly's facilitators approving, rejecting or removing
followers (server/web/followers.py), and the instance admin deciding the requests that the
instance's follow approval holds (server/web/admin.py). In order:

* only an approved assembly can be followed (a pending, rejected or suspended one is not
  there for the world);
* the instance's follow approval holds every new request for an admin first;
* then the assembly's ``manuallyApprovesFollowers`` holds it for its facilitators;
* otherwise the follower is accepted at once;
* one Accept per follower: a repeated Follow of an accepted follower is acknowledged without
  a new Accept, so a flood of Follows cannot make us send a flood of signed deliveries (a
  server that lost our Accept sends Undo, then Follow again);
* every Accept or Reject is queued to the follower's own inbox, with the Follow embedded.

Functions take values already resolved (the Assembly, the follower's RemoteActor row, the
Follow's id, a Follower row's id) and never touch the network: the inbox fetches the actor
before it calls in. That is also why this is not part of server/following.py, the other
direction (our assemblies' Follows of others), which resolves handles over the network.
Like every domain service: ``flush()``, never ``commit()``; the Accepts and Rejects go
through server.activitypub.outbox, which wakes the delivery worker once the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import instance, mail
from server.activitypub import outbox
from server.context import Context
from server.errors import Conflict, NotFound
from server.models import (
    Assembly,
    AssemblyStatus,
    Follower,
    FollowerStatus,
    RemoteActor,
)

# -- the incoming Follow ------------------------------------------------------------------


def require_followable(assembly: Assembly | None) -> Assembly:
    """The assembly, if the world may follow it; NotFound otherwise (not a Gone: a Follow
    of a suspended assembly is refused like one of an assembly that never existed)."""
    if assembly is None or assembly.status != AssemblyStatus.APPROVED:
        raise NotFound("the object is not an assembly on this instance")
    return assembly


async def receive_follow(
    session: AsyncSession,
    ctx: Context,
    *,
    assembly: Assembly,
    actor: RemoteActor,
    follow_uri: str,
    now: datetime,
) -> bool:
    """``actor`` asks to follow ``assembly`` with the Follow ``follow_uri``.

    A new follower is held for the admin (instance follow approval), held for the
    assembly (manuallyApprovesFollowers) or accepted with an Accept queued. A repeated
    Follow only updates the Follow id we answer to; False when it asked nothing of us (the
    follower was accepted already), True otherwise.
    """
    require_followable(assembly)
    follower = (
        await session.scalars(
            select(Follower).where(
                Follower.assembly_id == assembly.id, Follower.actor_id == actor.id
            )
        )
    ).first()
    if follower is not None:
        # The newest Follow's id: the one the follower's server matches our answer to.
        follower.follow_uri = follow_uri
        await session.flush()
        return follower.status != FollowerStatus.ACCEPTED
    # A follower that moved here (a verified Move, server/moving.py) keeps its place: its
    # new identity is accepted at once, and its old one is no longer a follower.
    previous = (
        await session.scalars(
            select(Follower)
            .join(RemoteActor, RemoteActor.id == Follower.actor_id)
            .where(
                Follower.assembly_id == assembly.id,
                Follower.status == FollowerStatus.ACCEPTED,
                RemoteActor.moved_to == actor.uri,
            )
        )
    ).first()
    if previous is not None:
        await session.delete(previous)
    held = (
        False
        if previous is not None
        else (await instance.load(session, ctx.settings)).follow_approval
    )
    follower = Follower(
        assembly_id=assembly.id,
        actor_id=actor.id,
        follow_uri=follow_uri,
        status=(
            FollowerStatus.PENDING
            if previous is None and (held or assembly.manually_approves_followers)
            else FollowerStatus.ACCEPTED
        ),
        held_for_admin=held,
        created_at=now,
    )
    session.add(follower)
    await session.flush()
    if follower.status == FollowerStatus.PENDING:
        await mail.follow_request_waiting(
            session, ctx.settings, assembly=assembly, held_for_admin=held, now=now
        )
    if follower.status == FollowerStatus.ACCEPTED:
        await answer_follow(
            session,
            ctx,
            assembly=assembly,
            actor=actor,
            follow_uri=follow_uri,
            accept=True,
            now=now,
        )
    return True


async def answer_follow(
    session: AsyncSession,
    ctx: Context,
    *,
    assembly: Assembly,
    actor: RemoteActor,
    follow_uri: str,
    accept: bool,
    now: datetime,
) -> outbox.Sent:
    """Send Accept{Follow} or Reject{Follow} to the follower's own inbox.

    The Follow is embedded with its id, type, actor and object: Mastodon matches the answer
    to its follow request by that id, and a Reject of an accepted Follow is how Mastodon
    itself removes a follower.
    """
    follow_doc: dict[str, Any] = {
        "id": follow_uri,
        "type": "Follow",
        "actor": actor.uri,
        "object": ctx.urls.actor(assembly.handle),
    }
    return await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=assembly,
        activity_type="Accept" if accept else "Reject",
        obj=follow_doc,
        to=[actor.uri],
        inboxes=[actor.inbox_uri],
        public=False,
        now=now,
    )


# -- followers and requests, as the pages show them ---------------------------------------


@dataclass(frozen=True)
class FollowerEntry:
    """One follower or follow request, as the pages show it."""

    id: int
    handle: str  # @preferredUsername@domain, or the actor's URI when it has no username
    domain: str
    profile_url: str
    status: FollowerStatus
    held_for_admin: bool
    since: datetime
    assembly_handle: str = ""
    assembly_name: str = ""


def _entry(
    follower: Follower, actor: RemoteActor, assembly: Assembly | None = None
) -> FollowerEntry:
    handle = (
        f"@{actor.preferred_username}@{actor.domain}" if actor.preferred_username else actor.uri
    )
    return FollowerEntry(
        id=follower.id,
        handle=handle,
        domain=actor.domain,
        profile_url=actor.url or actor.uri,
        status=follower.status,
        held_for_admin=follower.held_for_admin,
        since=follower.created_at,
        assembly_handle=assembly.handle if assembly else "",
        assembly_name=assembly.name if assembly else "",
    )


async def list_followers(
    session: AsyncSession,
    assembly_id: int,
    *,
    status: FollowerStatus,
    held_for_admin: bool = False,
    offset: int = 0,
    limit: int = 100,
) -> list[FollowerEntry]:
    """An assembly's followers (or its requests), newest first."""
    rows = await session.execute(
        select(Follower, RemoteActor)
        .join(RemoteActor, RemoteActor.id == Follower.actor_id)
        .where(
            Follower.assembly_id == assembly_id,
            Follower.status == status,
            Follower.held_for_admin == held_for_admin,
        )
        .order_by(Follower.created_at.desc(), Follower.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [_entry(follower, actor) for follower, actor in rows]


async def count_followers(
    session: AsyncSession, assembly_id: int, *, status: FollowerStatus, held_for_admin: bool
) -> int:
    query = select(func.count(Follower.id)).where(
        Follower.assembly_id == assembly_id,
        Follower.status == status,
        Follower.held_for_admin == held_for_admin,
    )
    return int(await session.scalar(query) or 0)


async def _follower(
    session: AsyncSession, follower_id: int, assembly_id: int | None = None
) -> tuple[Follower, RemoteActor, Assembly]:
    query = (
        select(Follower, RemoteActor, Assembly)
        .join(RemoteActor, RemoteActor.id == Follower.actor_id)
        .join(Assembly, Assembly.id == Follower.assembly_id)
        .where(Follower.id == follower_id)
    )
    if assembly_id is not None:
        query = query.where(Follower.assembly_id == assembly_id)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("no such follower or follow request")
    follower, actor, assembly = row
    return follower, actor, assembly


# -- the assembly's decisions -------------------------------------------------------------


async def approve_follower(
    session: AsyncSession, ctx: Context, *, assembly: Assembly, follower_id: int, now: datetime
) -> FollowerEntry:
    """An assembly accepts a pending request: Accept{Follow} goes out."""
    follower, actor, _ = await _follower(session, follower_id, assembly.id)
    if follower.status != FollowerStatus.PENDING or follower.held_for_admin:
        raise Conflict("this is not a follow request waiting for the assembly")
    follower.status = FollowerStatus.ACCEPTED
    await answer_follow(
        session,
        ctx,
        assembly=assembly,
        actor=actor,
        follow_uri=follower.follow_uri,
        accept=True,
        now=now,
    )
    await session.flush()
    return _entry(follower, actor)


async def reject_follower(
    session: AsyncSession, ctx: Context, *, assembly: Assembly, follower_id: int, now: datetime
) -> FollowerEntry:
    """An assembly turns down a pending request: Reject{Follow}, and the request is gone."""
    follower, actor, _ = await _follower(session, follower_id, assembly.id)
    if follower.status != FollowerStatus.PENDING or follower.held_for_admin:
        raise Conflict("this is not a follow request waiting for the assembly")
    return await _reject_and_delete(session, ctx, follower, actor, assembly, now=now)


async def remove_follower(
    session: AsyncSession, ctx: Context, *, assembly: Assembly, follower_id: int, now: datetime
) -> FollowerEntry:
    """An assembly removes an accepted follower: Reject{Follow}, as Mastodon does."""
    follower, actor, _ = await _follower(session, follower_id, assembly.id)
    if follower.status != FollowerStatus.ACCEPTED:
        raise Conflict("this account does not follow the assembly")
    return await _reject_and_delete(session, ctx, follower, actor, assembly, now=now)


async def _reject_and_delete(
    session: AsyncSession,
    ctx: Context,
    follower: Follower,
    actor: RemoteActor,
    assembly: Assembly,
    *,
    now: datetime,
) -> FollowerEntry:
    entry = _entry(follower, actor, assembly)
    await answer_follow(
        session,
        ctx,
        assembly=assembly,
        actor=actor,
        follow_uri=follower.follow_uri,
        accept=False,
        now=now,
    )
    await session.delete(follower)
    await session.flush()
    return entry


# -- the instance's follow approval -------------------------------------------------------


async def held_follows(session: AsyncSession) -> list[FollowerEntry]:
    """Remote follow requests waiting for an instance admin, oldest first."""
    rows = await session.execute(
        select(Follower, RemoteActor, Assembly)
        .join(RemoteActor, RemoteActor.id == Follower.actor_id)
        .join(Assembly, Assembly.id == Follower.assembly_id)
        .where(Follower.held_for_admin.is_(True))
        .order_by(Follower.created_at, Follower.id)
    )
    return [_entry(follower, actor, assembly) for follower, actor, assembly in rows]


async def approve_held_follow(
    session: AsyncSession, ctx: Context, *, follower_id: int, now: datetime
) -> FollowerEntry:
    """The admin lets a request through: accepted at once (Accept sent), or on to the
    assembly's own list when the assembly approves its followers by hand."""
    follower, actor, assembly = await _follower(session, follower_id)
    if not follower.held_for_admin:
        raise Conflict("this follow request is not waiting for an administrator")
    follower.held_for_admin = False
    if assembly.manually_approves_followers:
        await mail.follow_request_waiting(
            session, ctx.settings, assembly=assembly, held_for_admin=False, now=now
        )
    else:
        follower.status = FollowerStatus.ACCEPTED
        await answer_follow(
            session,
            ctx,
            assembly=assembly,
            actor=actor,
            follow_uri=follower.follow_uri,
            accept=True,
            now=now,
        )
    await session.flush()
    return _entry(follower, actor, assembly)


async def reject_held_follow(
    session: AsyncSession, ctx: Context, *, follower_id: int, now: datetime
) -> FollowerEntry:
    """The admin turns a held request down: Reject{Follow}, and the request is gone."""
    follower, actor, assembly = await _follower(session, follower_id)
    if not follower.held_for_admin:
        raise Conflict("this follow request is not waiting for an administrator")
    return await _reject_and_delete(session, ctx, follower, actor, assembly, now=now)
