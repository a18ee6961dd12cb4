"""Delivery as facilitators and admins see it: read-only queries over the deliveries, their
attempts and the health of the servers they go to (server/activitypub/hosts.py).

A delivery is *held* while it is pending and its host is failing or unavailable: no worker
takes it, but for the host's probe now and then. It is *in flight* while a worker holds its
lease (``claimed_until`` is later than now). A host with no ``delivery_hosts`` row has never
failed: it is available.

A communiqué's deliveries are those of every activity sent for it (its Create, the Updates
of its edits, its Delete, the replies forwarded to its followers), so one follower inbox may
count once per activity.

Every count is one SQL aggregate (GROUP BY in the database); nothing here walks the rows in
Python, and the lists are bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, distinct, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from server.activitypub import hosts
from server.models import (
    Activity,
    Delivery,
    DeliveryAttempt,
    DeliveryHost,
    DeliveryStatus,
    HostState,
)

HOSTS_LISTED = 500  # servers on the admin's federation page
COMMUNIQUE_HOSTS_LISTED = 200  # servers in a communiqué's delivery table
DELIVERIES_LISTED = 200
RECENT = timedelta(hours=24)  # "failed attempts in the last 24 hours"

_HELD_STATES = (HostState.FAILING, HostState.UNAVAILABLE)


@dataclass(frozen=True)
class Counts:
    """Deliveries by status. ``pending`` counts every pending row, held ones included;
    ``held`` is the part of them whose host is failing or unavailable."""

    delivered: int = 0
    pending: int = 0
    held: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def waiting(self) -> int:
        """Pending and not held: due, being sent, or waiting for a retry."""
        return self.pending - self.held

    @property
    def total(self) -> int:
        return self.delivered + self.pending + self.failed + self.skipped


@dataclass(frozen=True)
class HostDeliveries:
    """One server's part of a communiqué's deliveries."""

    host: str
    state: HostState
    counts: Counts
    in_flight: int
    last_error: str | None
    # The next attempt: the earliest of its pending rows; the host's next probe when held.
    next_try: datetime | None

    @property
    def held(self) -> bool:
        return self.state in _HELD_STATES


@dataclass(frozen=True)
class CommuniqueDeliveries:
    counts: Counts
    hosts: list[HostDeliveries]  # troubled servers first; at most COMMUNIQUE_HOSTS_LISTED
    host_total: int  # every server it goes to, listed or not


@dataclass(frozen=True)
class HostHealth:
    """One server on the admin's federation page."""

    host: str
    state: HostState
    failures: int  # consecutive failed attempts
    failing_since: datetime | None
    unavailable_since: datetime | None
    last_error: str | None
    last_failure_at: datetime | None
    next_probe_at: datetime | None
    queued: int  # pending deliveries (queue depth), held ones included
    oldest_pending: datetime | None  # when the oldest of them was queued
    next_attempt: datetime | None  # the earliest next attempt of its pending deliveries

    @property
    def held(self) -> bool:
        return self.state in _HELD_STATES

    @property
    def troubled(self) -> bool:
        """It has a health record worth an admin's reset: held, or counting failures."""
        return self.held or self.failures > 0

    @property
    def next_try(self) -> datetime | None:
        return self.next_probe_at if self.held else self.next_attempt


@dataclass(frozen=True)
class HostOverview:
    hosts: list[HostHealth]  # unavailable, then failing, then by queue depth
    total: int  # servers with a health record or a pending delivery
    limit: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.hosts)


@dataclass(frozen=True)
class QueueOverview:
    pending: int  # every pending delivery, held ones included
    held: int
    failed_attempts: int  # attempts that did not deliver, in the last 24 hours
    failing_hosts: int
    unavailable_hosts: int


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    activity_uri: str
    activity_type: str
    inbox_uri: str
    host: str
    status: DeliveryStatus
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _held_state() -> ColumnElement[bool]:
    return DeliveryHost.state.in_(_HELD_STATES)


def _state_rank(state: Any) -> ColumnElement[int]:
    """Unavailable first, then failing, then the rest (no row: available)."""
    return case((state == HostState.UNAVAILABLE, 0), (state == HostState.FAILING, 1), else_=2)


def _of_communique(communique_id: int) -> ColumnElement[bool]:
    return Delivery.activity_id.in_(
        select(Activity.id).where(Activity.communique_id == communique_id)
    )


async def communique_summary(
    session: AsyncSession,
    communique_id: int,
    *,
    now: datetime,
    limit: int = COMMUNIQUE_HOSTS_LISTED,
) -> CommuniqueDeliveries:
    """Where a communiqué's deliveries stand: the totals, and server by server."""
    mine = _of_communique(communique_id)
    by_status = await session.execute(
        select(Delivery.status, DeliveryHost.state, func.count())
        .select_from(Delivery)
        .outerjoin(DeliveryHost, DeliveryHost.host == Delivery.host)
        .where(mine)
        .group_by(Delivery.status, DeliveryHost.state)
    )
    tally: dict[str, int] = {}
    for status, state, n in by_status:  # at most one row per (status, host state)
        tally[status.value] = tally.get(status.value, 0) + n
        if status is DeliveryStatus.PENDING and state in _HELD_STATES:
            tally["held"] = tally.get("held", 0) + n
    counts = Counts(**tally)
    if not counts.total:
        return CommuniqueDeliveries(counts=counts, hosts=[], host_total=0)

    pending = Delivery.status == DeliveryStatus.PENDING
    per_host = (
        select(
            Delivery.host.label("host"),
            _count(Delivery.status == DeliveryStatus.DELIVERED).label("delivered"),
            _count(pending).label("pending"),
            _count(Delivery.status == DeliveryStatus.FAILED).label("failed"),
            _count(Delivery.status == DeliveryStatus.SKIPPED).label("skipped"),
            _count(and_(pending, Delivery.claimed_until > now)).label("in_flight"),
            func.min(case((pending, Delivery.next_attempt_at))).label("next_attempt"),
            # The latest of its undelivered rows that says what went wrong.
            func.max(
                case(
                    (
                        and_(
                            Delivery.status != DeliveryStatus.DELIVERED,
                            Delivery.last_error.is_not(None),
                        ),
                        Delivery.id,
                    )
                )
            ).label("error_id"),
        )
        .where(mine)
        .group_by(Delivery.host)
        .subquery()
    )
    erring = aliased(Delivery)
    rows = await session.execute(
        select(
            per_host,
            DeliveryHost.state,
            DeliveryHost.next_probe_at,
            DeliveryHost.last_error.label("host_error"),
            erring.last_error.label("row_error"),
        )
        .outerjoin(DeliveryHost, DeliveryHost.host == per_host.c.host)
        .outerjoin(erring, erring.id == per_host.c.error_id)
        .order_by(
            _state_rank(DeliveryHost.state),
            per_host.c.pending.desc(),
            (per_host.c.failed + per_host.c.skipped).desc(),
            per_host.c.host,
        )
        .limit(limit)
    )
    listed = []
    for row in rows:
        state = HostState(row.state) if row.state is not None else HostState.AVAILABLE
        held = state in _HELD_STATES
        listed.append(
            HostDeliveries(
                host=row.host,
                state=state,
                counts=Counts(
                    delivered=row.delivered,
                    pending=row.pending,
                    held=row.pending if held else 0,
                    failed=row.failed,
                    skipped=row.skipped,
                ),
                in_flight=row.in_flight,
                # A held server's own error is why nothing goes there now.
                last_error=(row.host_error if held else None) or row.row_error,
                next_try=(row.next_probe_at if held else row.next_attempt) if row.pending else None,
            )
        )
    host_total = await session.scalar(select(func.count(distinct(Delivery.host))).where(mine))
    return CommuniqueDeliveries(counts=counts, hosts=listed, host_total=int(host_total or 0))


async def host_overview(
    session: AsyncSession, *, now: datetime, limit: int = HOSTS_LISTED
) -> HostOverview:
    """Every server with a health record or a pending delivery: unavailable ones first,
    then failing ones, then by queue depth; at most ``limit`` of them."""
    pending = (
        select(
            Delivery.host.label("host"),
            func.count().label("queued"),
            func.min(Delivery.created_at).label("oldest"),
            func.min(Delivery.next_attempt_at).label("next_attempt"),
        )
        .where(Delivery.status == DeliveryStatus.PENDING)
        .group_by(Delivery.host)
        .cte("pending_by_host")
    )
    names = union(select(DeliveryHost.host), select(pending.c.host)).subquery("names")
    queued = func.coalesce(pending.c.queued, 0)
    rows = await session.execute(
        select(
            names.c.host,
            DeliveryHost.state,
            DeliveryHost.failures,
            DeliveryHost.failing_since,
            DeliveryHost.unavailable_since,
            DeliveryHost.last_error,
            DeliveryHost.last_failure_at,
            DeliveryHost.next_probe_at,
            queued.label("queued"),
            pending.c.oldest,
            pending.c.next_attempt,
        )
        .select_from(names)
        .outerjoin(DeliveryHost, DeliveryHost.host == names.c.host)
        .outerjoin(pending, pending.c.host == names.c.host)
        .order_by(_state_rank(DeliveryHost.state), queued.desc(), names.c.host)
        .limit(limit)
    )
    listed = [
        HostHealth(
            host=row.host,
            state=HostState(row.state) if row.state is not None else HostState.AVAILABLE,
            failures=row.failures or 0,
            failing_since=row.failing_since,
            unavailable_since=row.unavailable_since,
            last_error=row.last_error,
            last_failure_at=row.last_failure_at,
            next_probe_at=row.next_probe_at,
            queued=row.queued,
            oldest_pending=row.oldest,
            next_attempt=row.next_attempt,
        )
        for row in rows
    ]
    total = await session.scalar(select(func.count()).select_from(names))
    return HostOverview(hosts=listed, total=int(total or 0), limit=limit)


async def queue_overview(session: AsyncSession, *, now: datetime) -> QueueOverview:
    """The queue in three numbers, and how many servers are failing or unavailable."""
    row = (
        await session.execute(
            select(func.count(), _count(_held_state()))
            .select_from(Delivery)
            .outerjoin(DeliveryHost, DeliveryHost.host == Delivery.host)
            .where(Delivery.status == DeliveryStatus.PENDING)
        )
    ).one()
    failed = await session.scalar(
        select(func.count())
        .select_from(DeliveryAttempt)
        .where(DeliveryAttempt.outcome != "delivered", DeliveryAttempt.attempted_at >= now - RECENT)
    )
    states = await hosts.counts(session)
    return QueueOverview(
        pending=int(row[0]),
        held=int(row[1]),
        failed_attempts=int(failed or 0),
        failing_hosts=states[HostState.FAILING.value],
        unavailable_hosts=states[HostState.UNAVAILABLE.value],
    )


async def list_deliveries(
    session: AsyncSession,
    *,
    host: str | None = None,
    status: DeliveryStatus | None = None,
    limit: int = DELIVERIES_LISTED,
) -> Sequence[DeliveryRow]:
    """Deliveries, newest first, of one host and/or in one status."""
    query = (
        select(
            Delivery.id,
            Activity.uri,
            Activity.type,
            Delivery.inbox_uri,
            Delivery.host,
            Delivery.status,
            Delivery.attempts,
            Delivery.last_status,
            Delivery.last_error,
            Delivery.next_attempt_at,
            Delivery.created_at,
        )
        .join(Activity, Activity.id == Delivery.activity_id)
        .order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(limit)
    )
    if host is not None:
        query = query.where(Delivery.host == host)
    if status is not None:
        query = query.where(Delivery.status == status)
    return [
        DeliveryRow(
            id=row[0],
            activity_uri=row[1],
            activity_type=row[2],
            inbox_uri=row[3],
            host=row[4],
            status=DeliveryStatus(row[5]),
            attempts=row[6],
            last_status=row[7],
            last_error=row[8],
            next_attempt_at=row[9],
            created_at=row[10],
        )
        for row in await session.execute(query)
    ]
