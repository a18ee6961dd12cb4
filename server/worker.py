"""The worker: deliveries (claim due rows, sign and POST each, record the outcome), and the
inbox queue (server/federation/inbox_queue.py) beside them.

``run_once`` processes one batch (tests drive it step by step, with an injected ``now``);
``run_forever`` loops until stopped. Claims are leases: a worker killed mid-batch leaves
rows whose lease expires, and another worker (or the restarted one) retries them.
On PostgreSQL candidate rows are locked with FOR UPDATE SKIP LOCKED, so workers running
side by side never claim the same row; on SQLite, BEGIN IMMEDIATE serialises claims.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import or_, select, update

from server import communiques
from server.activitypub import delivery
from server.activitypub.client import SignatureAuth
from server.context import Context
from server.errors import InterOccError
from server.federation import inbox_queue
from server.models import Activity, Assembly, Delivery, DeliveryAttempt, DeliveryStatus

log = logging.getLogger(__name__)

BATCH = 50


@dataclass(frozen=True)
class AttemptResult:
    delivery_id: int
    status: int | None
    error: str | None
    retry_after: str | None
    final: bool = False  # nothing to retry: the activity or its assembly is gone


def lease(ctx: Context) -> timedelta:
    return timedelta(seconds=ctx.settings.delivery_timeout * 2 + 30)


async def claim(ctx: Context, *, now: datetime, limit: int = BATCH) -> tuple[str, list[int]]:
    """Lease up to ``limit`` due deliveries to this worker; returns (token, ids)."""
    token = secrets.token_hex(8)
    async with ctx.sessions() as session, session.begin():
        query = (
            select(Delivery.id)
            .where(
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= now,
                or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
        if ctx.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list((await session.scalars(query)).all())
        if ids:
            await session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(claimed_until=now + lease(ctx), claim_token=token)
            )
    return token, ids


@dataclass(frozen=True)
class Job:
    delivery_id: int
    inbox_uri: str
    body: bytes
    key_id: str
    private_key_pem: str  # "" for the instance actor's key


async def load_jobs(ctx: Context, ids: list[int]) -> list[Job]:
    """Everything needed to send the claimed rows, in one query; bodies built once each."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(Delivery.id, Delivery.inbox_uri, Activity, Assembly)
                .join(Activity, Activity.id == Delivery.activity_id)
                # No assembly: the instance actor's own activity (a relay subscription).
                .outerjoin(Assembly, Assembly.id == Activity.assembly_id)
                .where(Delivery.id.in_(ids))
            )
        ).all()
    bodies: dict[int, bytes] = {}
    jobs = []
    for delivery_id, inbox, activity, assembly in rows:
        if activity.id not in bodies:
            bodies[activity.id] = delivery.activity_body(activity)
        if assembly is None:
            jobs.append(
                Job(delivery_id, inbox, bodies[activity.id], ctx.urls.instance_key_id(), "")
            )
            continue
        jobs.append(
            Job(
                delivery_id,
                inbox,
                bodies[activity.id],
                ctx.urls.key_id(assembly.handle),
                assembly.private_key_pem,
            )
        )
    return jobs


async def attempt(ctx: Context, job: Job) -> AttemptResult:
    """Sign and POST one delivery. Never raises: failures are results."""
    key = ctx.private_key(job.private_key_pem) if job.private_key_pem else ctx.instance_private_key
    auth = SignatureAuth(job.key_id, key, ctx.clock)
    try:
        response = await ctx.client.post(job.inbox_uri, job.body, auth=auth)
    except (httpx.HTTPError, TimeoutError, OSError, InterOccError) as exc:
        message = exc.message if isinstance(exc, InterOccError) else repr(exc)
        return AttemptResult(job.delivery_id, None, message[:500], None)
    error = None if response.is_success else response.text[:500]
    return AttemptResult(
        job.delivery_id, response.status_code, error, response.headers.get("retry-after")
    )


async def record(
    ctx: Context,
    result: AttemptResult,
    *,
    token: str,
    now: datetime,
    rng: random.Random | None = None,
) -> delivery.Outcome | None:
    """Write the attempt and the next step; None if our lease was lost meanwhile."""
    async with ctx.sessions() as session, session.begin():
        row = (
            await session.scalars(
                select(Delivery).where(
                    Delivery.id == result.delivery_id, Delivery.claim_token == token
                )
            )
        ).first()
        if row is None or row.status != DeliveryStatus.PENDING:
            return None
        row.attempts += 1
        plan = delivery.schedule(
            status=result.status,
            attempts=row.attempts,
            max_attempts=ctx.settings.delivery_max_attempts,
            now=now,
            retry_after_header=result.retry_after,
            rng=rng,
        )
        if result.final:
            plan = delivery.Schedule(delivery.Outcome.FAILED, None)
        row.last_status = result.status
        row.last_error = result.error
        row.claimed_until = None
        row.claim_token = None
        if plan.outcome is delivery.Outcome.DELIVERED:
            row.status = DeliveryStatus.DELIVERED
            row.delivered_at = now
        elif plan.outcome is delivery.Outcome.FAILED:
            row.status = DeliveryStatus.FAILED
        else:
            assert plan.next_attempt_at is not None
            row.next_attempt_at = plan.next_attempt_at
        session.add(
            DeliveryAttempt(
                delivery_id=row.id,
                attempted_at=now,
                status_code=result.status,
                error=result.error,
                outcome=plan.outcome.value,
                next_attempt_at=plan.next_attempt_at,
            )
        )
    if plan.outcome is delivery.Outcome.FAILED:
        log.warning("delivery %s to %s failed for good: %s", row.id, row.inbox_uri, result.error)
    return plan.outcome


async def run_once(
    ctx: Context,
    *,
    now: datetime | None = None,
    limit: int = BATCH,
    rng: random.Random | None = None,
) -> int:
    """Claim and attempt one batch of due deliveries; returns how many were attempted."""
    started = now or ctx.clock()
    token, ids = await claim(ctx, now=started, limit=limit)
    if not ids:
        return 0
    jobs = await load_jobs(ctx, ids)
    # Rows whose activity or assembly vanished meanwhile have nothing left to send.
    for missing in set(ids) - {job.delivery_id for job in jobs}:
        gone = AttemptResult(missing, None, "activity no longer exists", None, final=True)
        await record(ctx, gone, token=token, now=now or ctx.clock(), rng=rng)
    # Rows queued before their domain was blocked: failed without a request.
    async with ctx.sessions() as session:
        blocked = await delivery.blocked_domains(session)
    if blocked:
        allowed = []
        for job in jobs:
            if delivery.is_blocked_host(delivery.host_of_uri(job.inbox_uri), blocked):
                refused = AttemptResult(
                    job.delivery_id, None, delivery.DOMAIN_BLOCKED, None, final=True
                )
                await record(ctx, refused, token=token, now=now or ctx.clock(), rng=rng)
            else:
                allowed.append(job)
        jobs = allowed
    gate = asyncio.Semaphore(ctx.settings.delivery_concurrency)

    async def one(job: Job) -> None:
        async with gate:
            result = await attempt(ctx, job)
            await record(ctx, result, token=token, now=now or ctx.clock(), rng=rng)

    await asyncio.gather(*(one(job) for job in jobs))
    return len(ids)


# How often the worker looks for straw polls whose time is up.
POLL_CHECK = timedelta(seconds=15)


async def run_forever(ctx: Context, stop: asyncio.Event, *, idle: float = 1.0) -> None:
    """Deliver, and process queued inbox activities, until ``stop`` is set.

    Two loops side by side, so a slow delivery batch never delays incoming activities (and
    the reverse); each wakes early on its own event (``ctx.wake``, ``ctx.inbox_wake``).
    """
    log.info("worker started")
    inbox = asyncio.create_task(inbox_queue.run_forever(ctx, stop, idle=idle))
    try:
        await _deliver_forever(ctx, stop, idle=idle)
    finally:
        stop.set()
        await inbox
    log.info("worker stopped")


async def _deliver_forever(ctx: Context, stop: asyncio.Event, *, idle: float) -> None:
    polls_checked: datetime | None = None
    while not stop.is_set():
        try:
            now = ctx.clock()
            if polls_checked is None or now - polls_checked >= POLL_CHECK:
                polls_checked = now
                async with ctx.sessions() as session, session.begin():
                    await communiques.close_due_polls(session, ctx.urls, now=now)
            done = await run_once(ctx)
        except Exception:  # the worker must outlive any one bad batch (DB restart, bug)
            log.exception("delivery batch failed")
            done = 0
        if done:
            continue
        ctx.wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(ctx.wake.wait())]
        await asyncio.wait(waiters, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
