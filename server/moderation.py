"""Moderation: domain blocks, follow requests (the instance's and each assembly's) and reports.

Domain services in the usual shape: ``(session, *, plain values)``, ``flush()`` but never
``commit()``. Answers to follow requests are recorded and queued here, in the caller's
transaction, exactly like a communiqué's Create: the caller wakes the worker after commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import activities
from server.activitypub import delivery
from server.errors import BadRequest, Conflict, NotFound
from server.models import (
    Activity,
    Assembly,
    AssemblyStatus,
    DomainBlock,
    Follower,
    FollowerStatus,
    RemoteActor,
    Report,
    User,
    UserStatus,
)
from server.urls import Urls

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_REASON = 2000
MAX_COMMENT = 5000
MAX_TARGETS = 100


# -- domain blocks ------------------------------------------------------------------------


def normalise_domain(raw: str, *, own_host: str) -> str:
    """A domain as blocks store it: lower-case IDNA, no scheme, port or path.

    A pasted URL is reduced to its host; anything else that is not a bare domain name is
    refused with a message for the form. ``own_host`` (our host, port allowed) cannot be
    blocked, nor can a domain it belongs to.
    """
    value = raw.strip()
    if "://" in value:
        try:
            value = urlsplit(value).hostname or ""
        except ValueError:
            value = ""
    value = re.sub(r":\d{1,5}$", "", value.lower()).removeprefix("*.").rstrip(".")
    if not value or any(c in value for c in "/@:?#[] \t"):
        raise BadRequest(
            "enter a domain name such as social.example, without https:// or a path",
            field="domain",
        )
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadRequest(
            f"{raw.strip()[:100]!r} is not a valid domain name", field="domain"
        ) from None
    if len(value) > 253 or not all(LABEL_RE.match(label) for label in value.split(".")):
        raise BadRequest(f"{raw.strip()[:100]!r} is not a valid domain name", field="domain")
    ours = delivery.host_of_uri(f"http://{own_host}")
    if value in delivery.covering_domains(ours):
        raise BadRequest("that is this instance's own domain", field="domain")
    return value


@dataclass(frozen=True)
class Blocked:
    block: DomainBlock
    followers_removed: int


async def block_domain(
    session: AsyncSession, *, domain: str, reason: str, own_host: str, now: datetime
) -> Blocked:
    """Block a domain and its subdomains.

    Like Mastodon, the block also removes that domain's followers of every assembly: we
    would not deliver to them any more, and counting them would mislead. Deliveries already
    queued to it fail at their next attempt without a request (see the worker).
    """
    domain = normalise_domain(domain, own_host=own_host)
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is at most {MAX_REASON} characters", field="reason")
    exists = await session.scalar(select(DomainBlock.id).where(DomainBlock.domain == domain))
    if exists is not None:
        raise Conflict(f"{domain} is already blocked", field="domain")
    block = DomainBlock(domain=domain, reason=reason, created_at=now)
    session.add(block)
    actors = select(RemoteActor.id).where(
        or_(
            RemoteActor.domain == domain,
            RemoteActor.domain.endswith("." + domain, autoescape=True),
        )
    )
    removed = await session.execute(delete(Follower).where(Follower.actor_id.in_(actors)))
    await session.flush()
    return Blocked(block, int(getattr(removed, "rowcount", 0) or 0))


async def unblock_domain(session: AsyncSession, block_id: int) -> DomainBlock:
    block = await session.get(DomainBlock, block_id)
    if block is None:
        raise NotFound("no such domain block")
    await session.delete(block)
    await session.flush()
    return block


async def list_domain_blocks(session: AsyncSession) -> Sequence[DomainBlock]:
    return (await session.scalars(select(DomainBlock).order_by(DomainBlock.domain))).all()


# -- answering follow requests ------------------------------------------------------------


async def answer_follow(
    session: AsyncSession,
    urls: Urls,
    *,
    assembly: Assembly,
    actor: RemoteActor,
    follow_uri: str,
    accept: bool,
    now: datetime,
) -> Activity:
    """Record and queue Accept{Follow} or Reject{Follow} to the follower's own inbox.

    The Follow is embedded with its id, type, actor and object: Mastodon matches the answer
    to its follow request by that id, and a Reject of an accepted Follow is how Mastodon
    itself removes a follower.
    """
    follow_doc: dict[str, Any] = {
        "id": follow_uri,
        "type": "Follow",
        "actor": actor.uri,
        "object": urls.actor(assembly.handle),
    }
    activity = await activities.record(
        session,
        urls,
        assembly=assembly,
        activity_type="Accept" if accept else "Reject",
        obj=follow_doc,
        to=[actor.uri],
        public=False,
        now=now,
    )
    await delivery.enqueue(session, activity, [actor.inbox_uri], now=now)
    return activity


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


async def approve_follower(
    session: AsyncSession, urls: Urls, *, assembly: Assembly, follower_id: int, now: datetime
) -> FollowerEntry:
    """An assembly accepts a pending request: Accept{Follow} goes out."""
    follower, actor, _ = await _follower(session, follower_id, assembly.id)
    if follower.status != FollowerStatus.PENDING or follower.held_for_admin:
        raise Conflict("this is not a follow request waiting for the assembly")
    follower.status = FollowerStatus.ACCEPTED
    await answer_follow(
        session,
        urls,
        assembly=assembly,
        actor=actor,
        follow_uri=follower.follow_uri,
        accept=True,
        now=now,
    )
    await session.flush()
    return _entry(follower, actor)


async def reject_follower(
    session: AsyncSession, urls: Urls, *, assembly: Assembly, follower_id: int, now: datetime
) -> FollowerEntry:
    """An assembly turns down a pending request: Reject{Follow}, and the request is gone."""
    follower, actor, _ = await _follower(session, follower_id, assembly.id)
    if follower.status != FollowerStatus.PENDING or follower.held_for_admin:
        raise Conflict("this is not a follow request waiting for the assembly")
    return await _reject_and_delete(session, urls, follower, actor, assembly, now=now)


async def remove_follower(
    session: AsyncSession, urls: Urls, *, assembly: Assembly, follower_id: int, now: datetime
) -> FollowerEntry:
    """An assembly removes an accepted follower: Reject{Follow}, as Mastodon does."""
    follower, actor, _ = await _follower(session, follower_id, assembly.id)
    if follower.status != FollowerStatus.ACCEPTED:
        raise Conflict("this account does not follow the assembly")
    return await _reject_and_delete(session, urls, follower, actor, assembly, now=now)


async def _reject_and_delete(
    session: AsyncSession,
    urls: Urls,
    follower: Follower,
    actor: RemoteActor,
    assembly: Assembly,
    *,
    now: datetime,
) -> FollowerEntry:
    entry = _entry(follower, actor, assembly)
    await answer_follow(
        session,
        urls,
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
    session: AsyncSession, urls: Urls, *, follower_id: int, now: datetime
) -> FollowerEntry:
    """The admin lets a request through: accepted at once (Accept sent), or on to the
    assembly's own list when the assembly approves its followers by hand."""
    follower, actor, assembly = await _follower(session, follower_id)
    if not follower.held_for_admin:
        raise Conflict("this follow request is not waiting for an administrator")
    follower.held_for_admin = False
    if not assembly.manually_approves_followers:
        follower.status = FollowerStatus.ACCEPTED
        await answer_follow(
            session,
            urls,
            assembly=assembly,
            actor=actor,
            follow_uri=follower.follow_uri,
            accept=True,
            now=now,
        )
    await session.flush()
    return _entry(follower, actor, assembly)


async def reject_held_follow(
    session: AsyncSession, urls: Urls, *, follower_id: int, now: datetime
) -> FollowerEntry:
    follower, actor, assembly = await _follower(session, follower_id)
    if not follower.held_for_admin:
        raise Conflict("this follow request is not waiting for an administrator")
    return await _reject_and_delete(session, urls, follower, actor, assembly, now=now)


# -- reports (incoming Flag activities) ---------------------------------------------------


async def store_report(
    session: AsyncSession,
    urls: Urls,
    *,
    uri: str,
    actor_uri: str,
    objects: Sequence[str],
    comment: str,
    document: dict[str, Any],
    now: datetime,
) -> Report | None:
    """Keep a Flag that names at least one of our actors or communiqués; None otherwise
    (or when that Flag id was stored already)."""
    targets = list(dict.fromkeys(o for o in objects if urls.is_local(o)))[:MAX_TARGETS]
    if not targets:
        return None
    if await session.scalar(select(Report.id).where(Report.uri == uri)) is not None:
        return None
    report = Report(
        uri=uri,
        actor_uri=actor_uri,
        targets=targets,
        comment=comment.strip()[:MAX_COMMENT],
        document=document,
        received_at=now,
    )
    session.add(report)
    await session.flush()
    return report


@dataclass(frozen=True)
class ReportEntry:
    report: Report
    reporter: str  # @user@domain when we know the actor, else its URI


async def list_reports(session: AsyncSession, *, limit: int = 200) -> list[ReportEntry]:
    """Reports, newest first."""
    rows = await session.execute(
        select(Report, RemoteActor)
        .outerjoin(RemoteActor, RemoteActor.uri == Report.actor_uri)
        .order_by(Report.received_at.desc(), Report.id.desc())
        .limit(limit)
    )
    entries = []
    for report, actor in rows:
        reporter = report.actor_uri
        if actor is not None and actor.preferred_username:
            reporter = f"@{actor.preferred_username}@{actor.domain}"
        entries.append(ReportEntry(report, reporter))
    return entries


async def resolve_report(session: AsyncSession, report_id: int, *, now: datetime) -> Report:
    report = await session.get(Report, report_id)
    if report is None:
        raise NotFound("no such report")
    if report.resolved_at is not None:
        raise Conflict("this report is already resolved")
    report.resolved_at = now
    await session.flush()
    return report


# -- the admin's overview -----------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    assemblies: int
    pending_assemblies: int
    accounts: int
    pending_accounts: int
    held_follows: int
    open_reports: int
    domain_blocks: int


async def overview(session: AsyncSession) -> Overview:
    async def count(query: Any) -> int:
        return int(await session.scalar(query) or 0)

    return Overview(
        assemblies=await count(select(func.count(Assembly.id))),
        pending_assemblies=await count(
            select(func.count(Assembly.id)).where(Assembly.status == AssemblyStatus.PENDING)
        ),
        accounts=await count(select(func.count(User.id))),
        pending_accounts=await count(
            select(func.count(User.id)).where(User.status == UserStatus.PENDING)
        ),
        held_follows=await count(
            select(func.count(Follower.id)).where(Follower.held_for_admin.is_(True))
        ),
        open_reports=await count(select(func.count(Report.id)).where(Report.resolved_at.is_(None))),
        domain_blocks=await count(select(func.count(DomainBlock.id))),
    )
