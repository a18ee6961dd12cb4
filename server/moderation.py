"""Moderation: domain blocks, reports, and the admin's overview.

Domain services in the usual shape: ``(session, *, plain values)``, ``flush()`` but never
``commit()``. Follow requests (the instance's follow approval and each assembly's) are the
follow policy's, in server/followers.py.
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

from server.activitypub import delivery
from server.errors import BadRequest, Conflict, NotFound
from server.models import (
    Assembly,
    AssemblyStatus,
    DomainBlock,
    Follower,
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
