"""The worker: deliveries (claim due rows, sign and POST each, record the outcome), and the
inbox queue (server/federation/inbox_queue.py), scheduled exports (server/exports.py) and
mail (server/mail.py) beside them.

Deliveries run in slots (:class:`Slots`): when one attempt ends the next due row is claimed,
and a request left unanswered moves aside, so dead or hanging servers never hold back the
live ones. No host has more than ``delivery_per_host`` requests in flight, over every worker;
hosts that keep failing are held and probed (server/activitypub/hosts.py). An inbox of this
instance is served in-process (server/federation/local.py), never over HTTP.

``run_once`` attempts what is due (tests drive it step by step, with an injected ``now``);
``run_forever`` loops until stopped. Claims are leases: a worker killed mid-way leaves rows
whose lease expires, and another worker (or the restarted one) retries them. Claims are
serialised (a transaction-level advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite), so
workers side by side never claim the same row and the per-host count is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server import communiques, exports, mail
from server.activitypub import delivery, hosts
from server.activitypub.client import SignatureAuth
from server.context import Context
from server.errors import InterOccError
from server.federation import inbox_queue, local
from server.federation.cache import Memo
from server.models import (
    Activity,
    Assembly,
    Delivery,
    DeliveryAttempt,
    DeliveryHost,
    DeliveryStatus,
    HostState,
)

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
    """How long a claim lasts: the slowest attempt (``client.post`` gives up after twice the
    delivery timeout) twice over and a margin, so a live worker never loses a row it is
    sending, nor one it claimed ahead (see :class:`Slots`)."""
    return timedelta(seconds=ctx.settings.delivery_timeout * 4 + 10)


# Every claim on PostgreSQL takes this transaction-level lock first, so claims from workers
# side by side are serialised and the per-host count each one reads is exact (on SQLite,
# BEGIN IMMEDIATE does the same). A claim is one short statement or two.
_CLAIM_LOCK = 0x1A7E_0CC0


def _claimable(ctx: Context, now: datetime, limit: int) -> Any:
    """Due, unclaimed rows, oldest first, at most as many per host as its allowance: the
    per-host cap less the rows already leased to it, or for a held host one probe (its
    oldest row, due or not) when its probe is due and nothing of it is leased."""
    leased = (
        select(Delivery.host, func.count().label("n"))
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.claimed_until >= now)
        .group_by(Delivery.host)
        .cte("leased")
    )
    probe_due = select(DeliveryHost.host).where(
        DeliveryHost.state != HostState.AVAILABLE, DeliveryHost.next_probe_at <= now
    )
    # Held hosts whose probe is not due are left out before ranking: a dead host's backlog
    # costs a claim nothing.
    held = select(DeliveryHost.host).where(
        DeliveryHost.state != HostState.AVAILABLE,
        or_(DeliveryHost.next_probe_at.is_(None), DeliveryHost.next_probe_at > now),
    )
    ranked = (
        select(
            Delivery.id,
            Delivery.host,
            Delivery.next_attempt_at,
            func.row_number()
            .over(partition_by=Delivery.host, order_by=(Delivery.next_attempt_at, Delivery.id))
            .label("rank"),
        )
        .where(
            Delivery.status == DeliveryStatus.PENDING,
            or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now),
            # A held host's probe is due whatever its rows' own schedules say.
            or_(Delivery.next_attempt_at <= now, Delivery.host.in_(probe_due)),
            Delivery.host.not_in(held),
        )
        .cte("ranked")
    )
    allowance = case(
        (
            or_(DeliveryHost.state.is_(None), DeliveryHost.state == HostState.AVAILABLE),
            ctx.settings.delivery_per_host,
        ),
        (DeliveryHost.next_probe_at <= now, 1),
        else_=0,
    )
    return (
        select(ranked.c.id, ranked.c.host, DeliveryHost.state)
        .select_from(
            ranked.outerjoin(leased, leased.c.host == ranked.c.host).outerjoin(
                DeliveryHost, DeliveryHost.host == ranked.c.host
            )
        )
        .where(ranked.c.rank <= allowance - func.coalesce(leased.c.n, 0))
        .order_by(ranked.c.next_attempt_at, ranked.c.id)
        .limit(limit)
    )


async def claim(ctx: Context, *, now: datetime, limit: int = BATCH) -> tuple[str, list[int]]:
    """Lease up to ``limit`` due deliveries to this worker; returns (token, ids).

    No host gets more than ``delivery_per_host`` rows leased at once, counted over every
    worker (the leases are in the database); a held host (server/activitypub/hosts.py) gets
    one probe when it is due, and its next probe moves past this lease."""
    token = secrets.token_hex(8)
    async with ctx.sessions() as session, session.begin():
        if ctx.engine.dialect.name == "postgresql":
            await session.execute(select(func.pg_advisory_xact_lock(_CLAIM_LOCK)))
        rows = (await session.execute(_claimable(ctx, now, limit))).all()
        ids = [row.id for row in rows]
        if ids:
            await session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(claimed_until=now + lease(ctx), claim_token=token)
            )
        probed = {row.host for row in rows if row.state not in (None, HostState.AVAILABLE)}
        if probed:
            await session.execute(
                update(DeliveryHost)
                .where(DeliveryHost.host.in_(probed))
                .values(next_probe_at=now + lease(ctx))
            )
    return token, ids


async def unclaim(ctx: Context, claims: list[tuple[str, int]]) -> None:
    """Hand back claimed rows that were not attempted: due again for any worker now."""
    async with ctx.sessions() as session, session.begin():
        for token, delivery_id in claims:
            await session.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id, Delivery.claim_token == token)
                .values(claimed_until=None, claim_token=None)
            )


@dataclass(frozen=True)
class Job:
    delivery_id: int
    inbox_uri: str
    host: str
    body: bytes
    key_id: str
    private_key_pem: str  # "" for the instance actor's key


async def load_jobs(ctx: Context, ids: list[int]) -> list[Job]:
    """Everything needed to send the claimed rows, in one query; bodies built once each."""
    async with ctx.sessions() as session:
        rows = (
            await session.execute(
                select(Delivery.id, Delivery.inbox_uri, Delivery.host, Activity, Assembly)
                .join(Activity, Activity.id == Delivery.activity_id)
                # No assembly: the instance actor's own activity (a relay subscription).
                .outerjoin(Assembly, Assembly.id == Activity.assembly_id)
                .where(Delivery.id.in_(ids))
                .order_by(Delivery.next_attempt_at, Delivery.id)
            )
        ).all()
    bodies: dict[int, bytes] = {}
    jobs = []
    for delivery_id, inbox, host, activity, assembly in rows:
        if activity.id not in bodies:
            bodies[activity.id] = delivery.activity_body(activity)
        if assembly is None:
            key_id, pem = ctx.urls.instance_key_id(), ""
        else:
            key_id, pem = ctx.urls.key_id(assembly.handle), assembly.private_key_pem
        jobs.append(Job(delivery_id, inbox, host, bodies[activity.id], key_id, pem))
    return jobs


async def attempt(ctx: Context, job: Job, *, memo: Memo[Any] | None = None) -> AttemptResult:
    """Sign and POST one delivery (to an inbox of ours: hand it to the inbox pipeline in
    this process, server/federation/local.py). Never raises: failures are results."""
    key = ctx.private_key(job.private_key_pem) if job.private_key_pem else ctx.instance_private_key
    if ctx.urls.is_local(job.inbox_uri):
        status, error = await local.deliver(
            ctx,
            job.inbox_uri,
            job.body,
            key_id=job.key_id,
            private_key=key,
            memo=memo if memo is not None else Memo(ttl=0),
            now=ctx.clock(),
        )
        return AttemptResult(job.delivery_id, status, readable(error) if error else None, None)
    auth = SignatureAuth(job.key_id, key, ctx.clock)
    try:
        response = await ctx.client.post(job.inbox_uri, job.body, auth=auth)
    except (httpx.HTTPError, TimeoutError, OSError, InterOccError) as exc:
        message = exc.message if isinstance(exc, InterOccError) else _describe(exc)
        return AttemptResult(job.delivery_id, None, readable(message), None)
    error = None if response.is_success else readable(response.text)
    return AttemptResult(
        job.delivery_id, response.status_code, error, response.headers.get("retry-after")
    )


_UNPRINTABLE = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n")


def readable(text: str) -> str:
    """What a remote server answered, fit to store and show: at most 500 characters, no
    control characters (PostgreSQL refuses NUL in text, and a row that cannot be written
    would be retried for ever)."""
    return text[:500].translate(_UNPRINTABLE)


def _describe(exc: BaseException) -> str:
    """A failed request in a few words a facilitator can read."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "no connection (timed out)"
    if isinstance(exc, httpx.ConnectError):
        return f"no connection: {exc}" if str(exc) else "no connection"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "no answer (timed out)"
    return repr(exc)


async def record(
    ctx: Context,
    result: AttemptResult,
    *,
    token: str,
    now: datetime,
    rng: random.Random | None = None,
) -> delivery.Outcome | None:
    """Write the attempt, the next step and the host's health; None if our lease was lost
    meanwhile."""
    [outcome] = await record_many(ctx, [(token, result)], now=now, rng=rng)
    return outcome


async def record_many(
    ctx: Context,
    results: list[tuple[str, AttemptResult]],
    *,
    now: datetime,
    rng: random.Random | None = None,
) -> list[delivery.Outcome | None]:
    """:func:`record` for several attempts (each with its claim token) in one transaction;
    the outcomes in the same order."""
    policy = hosts.Policy.of(ctx.settings)
    outcomes: list[delivery.Outcome | None] = []
    written: list[tuple[Delivery, AttemptResult, delivery.Schedule]] = []
    async with ctx.sessions() as session, session.begin():
        ids = [result.delivery_id for _, result in results]
        rows = {
            row.id: row
            for row in (await session.scalars(select(Delivery).where(Delivery.id.in_(ids)))).all()
        }
        answered: set[str] = set()
        for token, result in results:
            row = rows.get(result.delivery_id)
            if row is None or row.claim_token != token or row.status != DeliveryStatus.PENDING:
                outcomes.append(None)
                continue
            plan = _settle(ctx, session, row, result, now=now, rng=rng)
            outcomes.append(plan.outcome)
            written.append((row, result, plan))
            if result.final or not row.host:
                continue
            if hosts.is_host_failure(result.status):
                await hosts.on_failure(
                    session, row.host, result.error, now=now, policy=policy, probe=row.id
                )
            elif row.host not in answered:  # one answer reopens a host; the rest add nothing
                answered.add(row.host)
                await hosts.on_success(session, row.host, now=now, policy=policy)
    for row, result, plan in written:
        _log_outcome(row, result, plan)
    return outcomes


def _settle(
    ctx: Context,
    session: AsyncSession,
    row: Delivery,
    result: AttemptResult,
    *,
    now: datetime,
    rng: random.Random | None,
) -> delivery.Schedule:
    """Apply one attempt's result to its row and add it to the row's history."""
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
    return plan


def _log_outcome(row: Delivery, result: AttemptResult, plan: delivery.Schedule) -> None:
    if plan.outcome is delivery.Outcome.FAILED:
        log.warning("delivery %s to %s failed for good: %s", row.id, row.inbox_uri, result.error)
    elif plan.outcome is delivery.Outcome.RETRY:
        assert plan.next_attempt_at is not None
        log.info(
            "delivery %s to %s failed (attempt %d, %s): %s; next try %s",
            row.id,
            row.inbox_uri,
            row.attempts,
            result.status or "no answer",
            (result.error or "")[:200],
            plan.next_attempt_at.isoformat(timespec="seconds"),
        )


class Slots:
    """Keeps ``delivery_concurrency`` deliveries in flight: whenever one ends, the next due
    row is claimed, so a slow host never holds back the rows behind it (no batches).

    A request still unanswered after ``delivery_slow_seconds`` moves aside and frees its
    slot (at most ``delivery_slow_max`` wait aside; beyond that it keeps its slot), so hosts
    that accept connections and never answer cannot take every slot. Rows are claimed a
    little ahead (up to the number of slots again) to keep claims few; one whose lease would
    run out before it could be sent is left for its lease to expire.
    """

    def __init__(
        self, ctx: Context, *, now: datetime | None = None, rng: random.Random | None = None
    ) -> None:
        self.ctx = ctx
        self.fixed_now = now
        self.rng = rng
        self.capacity = ctx.settings.delivery_concurrency
        self.busy = 0  # attempts holding a slot
        self.aside = 0  # slow attempts that gave theirs up
        self.ready: list[tuple[str, datetime, Job]] = []  # claimed, waiting for a slot
        self.tasks: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self.memo: Memo[Any] = Memo(ttl=ctx.settings.read_cache_seconds)
        # Results waiting to be written, and the task writing them (group commit: the
        # results that end while one transaction commits go into the next one).
        self.unrecorded: list[tuple[str, AttemptResult, asyncio.Future[None]]] = []
        self.recorder: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return self.fixed_now or self.ctx.clock()

    @property
    def idle(self) -> bool:
        return not self.tasks and not self.ready

    async def fill(self) -> int:
        """Claim what the free slots (and the read-ahead) can take, start what the free
        slots can; returns how many rows were claimed."""
        claimed = 0
        if len(self.ready) < max(1, self.capacity // 2):
            want = 2 * self.capacity - self.busy - len(self.ready)
            if want > 0:
                claimed = await self._claim(want)
        self._start()
        return claimed

    async def _claim(self, want: int) -> int:
        now = self.now()
        token, ids = await claim(self.ctx, now=now, limit=want)
        if not ids:
            return 0
        jobs = await load_jobs(self.ctx, ids)
        # Rows whose activity or assembly vanished meanwhile have nothing left to send.
        for missing in set(ids) - {job.delivery_id for job in jobs}:
            gone = AttemptResult(missing, None, "activity no longer exists", None, final=True)
            await record(self.ctx, gone, token=token, now=self.now(), rng=self.rng)
        # Rows queued before their domain was blocked: failed without a request.
        blocked: frozenset[str] = await self.memo.get(("domain blocks",), self._blocked)
        for job in jobs:
            if blocked and delivery.is_blocked_host(delivery.host_of_uri(job.inbox_uri), blocked):
                refused = AttemptResult(
                    job.delivery_id, None, delivery.DOMAIN_BLOCKED, None, final=True
                )
                await record(self.ctx, refused, token=token, now=self.now(), rng=self.rng)
            else:
                self.ready.append((token, now, job))
        return len(ids)

    async def _blocked(self) -> frozenset[str]:
        async with self.ctx.sessions() as session:
            return await delivery.blocked_domains(session)

    def _start(self) -> None:
        # A row is sent only if its lease outlasts the slowest attempt, with a margin.
        margin = timedelta(seconds=self.ctx.settings.delivery_timeout * 2 + 5)
        while self.ready and self.busy < self.capacity:
            token, claimed_at, job = self.ready.pop(0)
            if self.fixed_now is None and self.now() + margin > claimed_at + lease(self.ctx):
                log.info("delivery %s left for another claim: its lease ran short", job.delivery_id)
                continue
            self.busy += 1
            task = asyncio.create_task(self._run(token, job))
            self.tasks.add(task)

    async def _run(self, token: str, job: Job) -> None:
        holding = True
        try:
            sending = asyncio.ensure_future(attempt(self.ctx, job, memo=self.memo))
            done, _ = await asyncio.wait({sending}, timeout=self.ctx.settings.delivery_slow_seconds)
            if not done and self.aside < self.ctx.settings.delivery_slow_max:
                holding = False
                self.busy -= 1
                self.aside += 1
                self.changed.set()
            result = await sending
            await self._record(token, result)
        except Exception:  # a database hiccup: the lease expires and the row is retried
            log.exception("delivery %s not recorded", job.delivery_id)
        finally:
            if holding:
                self.busy -= 1
            else:
                self.aside -= 1
            self.tasks.discard(asyncio.current_task())
            self.changed.set()

    async def _record(self, token: str, result: AttemptResult) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unrecorded.append((token, result, done))
        if self.recorder is None or self.recorder.done():
            self.recorder = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self.unrecorded:
            batch, self.unrecorded = self.unrecorded[:BATCH], self.unrecorded[BATCH:]
            try:
                await record_many(
                    self.ctx, [(t, r) for t, r, _ in batch], now=self.now(), rng=self.rng
                )
            except Exception:
                # One bad row must not cost the others their record: each alone, then.
                for token, result, done in batch:
                    try:
                        await record(self.ctx, result, token=token, now=self.now(), rng=self.rng)
                    except Exception as exc:
                        done.set_exception(exc)
                    else:
                        done.set_result(None)
                continue
            for _, _, done in batch:
                done.set_result(None)

    async def wait(self) -> None:
        """Until an attempt ends or moves aside (since ``changed`` was last cleared: the
        caller clears it before it claims, so that no such moment is missed)."""
        await self.changed.wait()

    async def aclose(self, grace: float | None = None) -> None:
        """Let the attempts in flight finish and record; after ``grace`` seconds cancel the
        rest (their leases run out and another claim retries them). Rows claimed ahead and
        not started are handed back at once."""
        waiting, self.ready = self.ready, []
        if waiting:
            try:
                await unclaim(self.ctx, [(token, job.delivery_id) for token, _, job in waiting])
            except Exception:  # their leases run out instead
                log.exception("claims not handed back")
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.info("%d deliveries in flight left to their leases", len(pending))
            await asyncio.gather(*pending, return_exceptions=True)


async def run_once(
    ctx: Context,
    *,
    now: datetime | None = None,
    limit: int | None = None,
    rng: random.Random | None = None,
) -> int:
    """Attempt every delivery due at ``now`` (at most ``limit``), keeping the slots full
    and each host under its cap, until none is left that can be claimed; returns how many
    rows were claimed. Tests drive the worker with it step by step."""
    slots = Slots(ctx, now=now, rng=rng)
    total = 0
    try:
        while limit is None or total < limit:
            slots.changed.clear()
            claimed = await slots.fill()
            total += claimed
            if slots.idle:
                break
            if not claimed or slots.busy >= slots.capacity:
                await slots.wait()
    finally:
        await slots.aclose()
    return total


# How long a stopping worker lets its deliveries in flight finish before it cancels them.
SHUTDOWN_GRACE = 5.0

# How often the worker looks for straw polls whose time is up.
POLL_CHECK = timedelta(seconds=15)
# How often the worker looks for assemblies whose scheduled export is due (each one is due
# every INTEROCC_EXPORT_INTERVAL_HOURS; a check costs one small query).
EXPORT_CHECK = timedelta(minutes=1)


async def run_forever(ctx: Context, stop: asyncio.Event, *, idle: float = 1.0) -> None:
    """Deliver, and process queued inbox activities, until ``stop`` is set.

    Two loops side by side, so a slow delivery batch never delays incoming activities (and
    the reverse); each wakes early on its own event (``ctx.wake``, ``ctx.inbox_wake``).
    """
    log.info("worker started")
    inbox = asyncio.create_task(inbox_queue.run_forever(ctx, stop, idle=idle))
    exporting = asyncio.create_task(_export_forever(ctx, stop))
    mailing = asyncio.create_task(mail.run_forever(ctx, stop))
    try:
        await _deliver_forever(ctx, stop, idle=idle)
    finally:
        stop.set()
        await inbox
        await exporting
        await mailing
    log.info("worker stopped")


async def _export_forever(ctx: Context, stop: asyncio.Event) -> None:
    """Scheduled exports (server/exports.py), every EXPORT_CHECK until ``stop``: in a task
    of their own, since one export can take minutes and no delivery waits for it. A
    stopping worker finishes the export under way, and starts no other."""
    while not stop.is_set():
        try:
            await exports.run_due(ctx, stop=stop)
        except Exception:  # the worker must outlive a failed check (DB restart, bug)
            log.exception("scheduled exports check failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), EXPORT_CHECK.total_seconds())


async def _deliver_forever(ctx: Context, stop: asyncio.Event, *, idle: float) -> None:
    """Keep the delivery slots full until ``stop``; sleep (at most ``idle``) when nothing is
    due, waking early for a new activity (``ctx.wake``) or an attempt that ends."""
    slots = Slots(ctx)
    polls_checked: datetime | None = None
    try:
        while not stop.is_set():
            claimed = 0
            try:
                now = ctx.clock()
                if polls_checked is None or now - polls_checked >= POLL_CHECK:
                    polls_checked = now
                    async with ctx.sessions() as session, session.begin():
                        await communiques.close_due_polls(session, ctx.urls, now=now)
                ctx.wake.clear()
                slots.changed.clear()
                claimed = await slots.fill()
            except Exception:  # the worker must outlive any one bad claim (DB restart, bug)
                log.exception("delivery claim failed")
            if claimed and slots.busy < slots.capacity:
                continue
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(ctx.wake.wait()),
                asyncio.ensure_future(slots.wait()),
            ]
            await asyncio.wait(waiters, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
    finally:
        await slots.aclose(grace=SHUTDOWN_GRACE)
