"""Host health: the servers we deliver to, and what to do about the ones that stop answering.

A host's consecutive failed attempts (no answer, a 408, or a 5xx) are counted in
``delivery_hosts``. An answer of any other kind, a refusal included, shows the host is up and
resets the count. At ``host_failure_threshold`` failures the host is FAILING: its deliveries
are held (the worker claims none of them) except one probe when ``next_probe_at`` comes, on a
doubling backoff from ``host_probe_first`` to ``host_probe_most``. A probe that succeeds makes
the host AVAILABLE again and releases what was held, spread at ``host_release_per_minute``.
A host failing for ``host_unavailable_after`` is UNAVAILABLE: what it held is skipped, and so
is every new delivery to it, except one kept pending as the next probe while none is; it
comes back when a probe succeeds or when an admin resets it.

A host with no row has never failed. Only failures write rows, so a healthy fan-out costs
one indexed read per answer here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.models import Delivery, DeliveryHost, DeliveryStatus, HostState

log = logging.getLogger(__name__)

HOST_UNAVAILABLE = "host unavailable"


@dataclass(frozen=True)
class Policy:
    threshold: int
    probe_first: timedelta
    probe_most: timedelta
    unavailable_after: timedelta
    release_per_minute: int

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            threshold=settings.host_failure_threshold,
            probe_first=settings.host_probe_first,
            probe_most=settings.host_probe_most,
            unavailable_after=settings.host_unavailable_after,
            release_per_minute=settings.host_release_per_minute,
        )

    def probe_delay(self, probes: int) -> timedelta:
        """The wait before probe number ``probes + 1``: doubling, at most ``probe_most``."""
        delay: timedelta = self.probe_first * (2 ** max(0, min(probes, 30)))
        return min(delay, self.probe_most)


def is_host_failure(status: int | None) -> bool:
    """No answer, a timeout or a server error: the host, not the activity, is the trouble."""
    return status is None or status == 408 or status >= 500


async def _locked(session: AsyncSession, host: str) -> DeliveryHost | None:
    query = select(DeliveryHost).where(DeliveryHost.host == host)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row: DeliveryHost | None = (await session.scalars(query)).first()
    return row


async def on_failure(
    session: AsyncSession,
    host: str,
    error: str | None,
    *,
    now: datetime,
    policy: Policy,
    probe: int | None = None,
) -> HostState | None:
    """Count a failed attempt to ``host`` (``probe``: the delivery just attempted, which
    stays pending as the next probe if the host becomes unavailable); returns the host's
    new state if it changed."""
    row = await _locked(session, host)
    if row is None:
        row = DeliveryHost(host=host, state=HostState.AVAILABLE, failures=0)
        session.add(row)
    row.failures = (row.failures or 0) + 1
    row.last_error = (error or "no answer")[:500]
    row.last_failure_at = now
    if row.failing_since is None:
        row.failing_since = now
    changed: HostState | None = None
    if row.state in (HostState.AVAILABLE, None):
        if row.failures >= policy.threshold:
            row.state = changed = HostState.FAILING
            row.next_probe_at = now + policy.probe_first
            log.info(
                "host %s failing since %s (%d failures): its deliveries are held",
                host,
                row.failing_since.isoformat(),
                row.failures,
            )
    elif row.state is HostState.FAILING and now - row.failing_since >= policy.unavailable_after:
        row.state = changed = HostState.UNAVAILABLE
        row.unavailable_since = now
        row.next_probe_at = now + policy.probe_most
        skipped = await _skip_held(session, host, now=now, keep=probe)
        log.warning(
            "host %s unavailable: failing since %s; %d held deliveries skipped, new ones will "
            "be too until it answers or an admin resets it",
            host,
            row.failing_since.isoformat(),
            skipped,
        )
    elif row.state is HostState.FAILING:
        row.next_probe_at = now + policy.probe_delay(row.failures - policy.threshold)
    else:  # UNAVAILABLE: the probe failed again
        row.next_probe_at = now + policy.probe_most
    await session.flush()
    return changed


async def _skip_held(session: AsyncSession, host: str, *, now: datetime, keep: int | None) -> int:
    """Skip the host's pending deliveries that no worker holds, but ``keep``."""
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.host == host,
            Delivery.status == DeliveryStatus.PENDING,
            or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            Delivery.id != (keep if keep is not None else -1),
        )
        .values(status=DeliveryStatus.SKIPPED, last_error=HOST_UNAVAILABLE)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def on_success(session: AsyncSession, host: str, *, now: datetime, policy: Policy) -> int:
    """The host answered: it is available again. Returns how many held deliveries were
    released (0 unless it was failing)."""
    row = await _locked(session, host)
    if row is None or (row.state is HostState.AVAILABLE and not row.failures):
        return 0
    return await _reopen(session, row, now=now, policy=policy)


async def reset(session: AsyncSession, host: str, *, now: datetime, policy: Policy) -> int | None:
    """An admin's reset: the host is available again, its held deliveries released (skipped
    ones stay skipped). Returns how many were released; None if the host had no health
    record."""
    row = await _locked(session, host)
    if row is None:
        return None
    released = await _reopen(session, row, now=now, policy=policy)
    log.info("host %s reset by an admin: %d held deliveries released", host, released)
    return released


async def _reopen(
    session: AsyncSession, row: DeliveryHost, *, now: datetime, policy: Policy
) -> int:
    was = row.state
    row.state = HostState.AVAILABLE
    row.failures = 0
    row.failing_since = None
    row.next_probe_at = None
    row.unavailable_since = None
    row.last_success_at = now
    released = 0
    if was is not HostState.AVAILABLE:
        released = await _release(session, row.host, now=now, policy=policy)
        log.info("host %s answers again: %d held deliveries released", row.host, released)
    await session.flush()
    return released


async def _release(session: AsyncSession, host: str, *, now: datetime, policy: Policy) -> int:
    """Make the host's held deliveries due again, one every 60/rate seconds, oldest first."""
    ids = (
        await session.scalars(
            select(Delivery.id)
            .where(
                Delivery.host == host,
                Delivery.status == DeliveryStatus.PENDING,
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            )
            .order_by(Delivery.id)
        )
    ).all()
    if not ids:
        return 0
    step = timedelta(minutes=1) / policy.release_per_minute
    await session.execute(
        update(Delivery),
        [{"id": id_, "next_attempt_at": now + step * i} for i, id_ in enumerate(ids)],
    )
    return len(ids)


async def skipped_hosts(session: AsyncSession, hosts: Iterable[str], *, now: datetime) -> set[str]:
    """Of ``hosts``, those whose new deliveries are skipped: unavailable, and already holding
    a pending delivery (the next probe)."""
    wanted = list(dict.fromkeys(hosts))
    if not wanted:
        return set()
    unavailable = set(
        (
            await session.scalars(
                select(DeliveryHost.host).where(
                    DeliveryHost.host.in_(wanted), DeliveryHost.state == HostState.UNAVAILABLE
                )
            )
        ).all()
    )
    if not unavailable:
        return set()
    probing = set(
        (
            await session.scalars(
                select(Delivery.host)
                .where(Delivery.host.in_(unavailable), Delivery.status == DeliveryStatus.PENDING)
                .group_by(Delivery.host)
            )
        ).all()
    )
    return unavailable & probing


async def counts(session: AsyncSession) -> dict[str, int]:
    """How many hosts are in each state (hosts that never failed have no record)."""
    rows = await session.execute(
        select(DeliveryHost.state, func.count()).group_by(DeliveryHost.state)
    )
    found = {HostState(state).value: int(n) for state, n in rows}
    return {state.value: found.get(state.value, 0) for state in HostState}
