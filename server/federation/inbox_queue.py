"""The inbox queue: accept fast, process later.

An inbox request does only the bounded checks a remote server must see at once (size,
syntax, domain block, Date, Digest, signature, key ↔ actor, rate limits, the activity's id on
its actor's origin), then ``enqueue`` stores the body as it arrived in ``inbox_queue`` in
one short transaction and the request answers 202.

Workers ``claim`` due rows as leases (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, BEGIN
IMMEDIATE on SQLite), at most one per actor at a time and always that actor's oldest, so an
actor's activities are applied in the order they arrived (a Create before its Update and
Delete). ``process`` normalises the activity, does the network lookups its handler needs,
then applies it and deletes its row in one transaction: a worker killed at any point leaves
either nothing applied and the row (retried when the lease ends), or everything applied and
no row. The outcome of a bad activity is ``rejected`` with the reason (the remote server
already had its 202); an activity that keeps failing for other reasons (a peer that does not
answer, a bug) is retried with backoff and finally ``parked`` with its error, never dropped.
``retry`` puts parked (or rejected) rows back in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub import delivery
from server.activitypub.actors import store_resolved
from server.activitypub.jsonld import JsonLdError, as_list, normalise_off_loop
from server.activitypub.proofs import Provenance, Scheme
from server.context import Context
from server.db import create_sqlite_writer
from server.errors import Forbidden, InterOccError
from server.federation.inbox import Signed, prefetch, receive
from server.models import InboxActivity, InboxItem, InboxItemStatus

log = logging.getLogger(__name__)

BATCH = 50
FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(hours=1)
# Rejected activities are kept this long, for `interocc inbox status` and a resend's
# "duplicate", then deleted: a hostile sender cannot grow the table without bound. Parked
# ones stay until an operator retries them (they may be ours to fix).
KEEP_REJECTED = timedelta(days=7)
PRUNE_EVERY = 600.0  # seconds between prunes in run_forever


class Queued(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"


def _type_of(raw: dict[str, object]) -> str:
    types = as_list(raw.get("type"))
    first = types[0] if types and isinstance(types[0], str) else ""
    return first[:40]


async def enqueue(ctx: Context, signed: Signed, *, inbox_handle: str | None) -> Queued:
    """Store a verified activity for the workers, in one short transaction; a copy of an
    activity already processed or already waiting is a duplicate and stores nothing."""
    activity_uri = str(signed.raw["id"])
    async with ctx.sessions() as session:
        try:
            async with session.begin():
                if await _seen(session, activity_uri):
                    return Queued.DUPLICATE
                for key in signed.fetched_keys:
                    await store_resolved(session, ctx, key)
                session.add(InboxItem(**_values(ctx, signed, inbox_handle)))
        except IntegrityError:
            # The same activity arrived twice at once: the other request queued it.
            if await _seen(session, activity_uri):
                return Queued.DUPLICATE
            raise
    ctx.inbox_wake.set()
    return Queued.QUEUED


def _values(ctx: Context, signed: Signed, inbox_handle: str | None) -> dict[str, object]:
    """The columns of the queue row of ``signed``."""
    now = ctx.clock()
    return {
        "activity_uri": str(signed.raw["id"]),
        "actor_uri": signed.actor_uri,
        "type": _type_of(signed.raw),
        "inbox_handle": inbox_handle,
        "document": signed.raw,
        "status": InboxItemStatus.PENDING,
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now,
        "verified_by": signed.provenance.key_id if signed.provenance else None,
        "verified_with": str(signed.provenance.scheme) if signed.provenance else None,
    }


Waiting = list[tuple[Signed, str | None, "asyncio.Future[Queued]"]]


class Enqueuer:
    """``enqueue`` for a web process under load: one transaction for the activities that
    arrive while the previous one commits (group commit).

    Each request still gets its answer only once its row is committed, so a 202 always means
    stored. The first request finds the writer idle and starts it; the writer takes every
    request waiting when it runs, and those that come while it commits next, at most BATCH
    at a time. If a batch fails as a whole (a row another process queued in between, a bad
    value), each of its activities is written on its own with ``enqueue``, which tells every
    request its own outcome.

    On a SQLite file the batch is written by the sqlite3 driver on a thread of the
    Enqueuer's own, in one call (aiosqlite would hand each statement, fetch and commit to its
    thread and back, a dozen trips through a busy event loop per batch); elsewhere, and for
    a batch that also stores a newly fetched key, through the app's async sessions."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._waiting: Waiting = []
        self._writer: asyncio.Task[None] | None = None
        self._sqlite = create_sqlite_writer(ctx.settings.database_url)
        self._thread = (
            ThreadPoolExecutor(1, thread_name_prefix="inbox-writer") if self._sqlite else None
        )

    async def enqueue(self, signed: Signed, *, inbox_handle: str | None) -> Queued:
        future: asyncio.Future[Queued] = asyncio.get_running_loop().create_future()
        self._waiting.append((signed, inbox_handle, future))
        if self._writer is None or self._writer.done():
            # One writer per process, not the request's own task: a client that goes away
            # cannot cancel the write. (Several writers on PostgreSQL measured slower on two
            # cores: smaller batches, more work per activity.)
            self._writer = asyncio.create_task(self._write())
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Let the writer finish what it holds, then close the SQLite writer's engine."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._sqlite is not None:
            self._sqlite.dispose()

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH], self._waiting[BATCH:]
            try:
                outcomes: list[Queued | BaseException] = list(await self._store(batch))
            except Exception:
                log.warning("inbox: a batch of %d failed; writing each alone", len(batch))
                outcomes = []
                for signed, inbox_handle, _ in batch:
                    try:
                        outcomes.append(await enqueue(self.ctx, signed, inbox_handle=inbox_handle))
                    except Exception as exc:
                        outcomes.append(exc)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _store(self, batch: Waiting) -> list[Queued]:
        ctx = self.ctx
        uris = [str(signed.raw["id"]) for signed, _, _ in batch]
        values = [_values(ctx, signed, handle) for signed, handle, _ in batch]
        if self._thread is not None and all(not s.fetched_keys for s, _, _ in batch):
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(self._thread, self._store_sqlite, uris, values)
        else:
            outcomes = await self._store_async(batch, uris, values)
        if Queued.QUEUED in outcomes:
            ctx.inbox_wake.set()
        return outcomes

    def _store_sqlite(self, uris: list[str], values: list[dict[str, object]]) -> list[Queued]:
        assert self._sqlite is not None
        with self._sqlite.begin() as conn:
            outcomes, rows = _new_rows(set(conn.scalars(_known(uris)).all()), uris, values)
            if rows:
                conn.execute(insert(InboxItem), rows)  # one executemany
        return outcomes

    async def _store_async(
        self, batch: Waiting, uris: list[str], values: list[dict[str, object]]
    ) -> list[Queued]:
        ctx = self.ctx
        async with ctx.sessions() as session, session.begin():
            seen = set((await session.scalars(_known(uris))).all())
            outcomes, rows = _new_rows(seen, uris, values)
            for (signed, _, _), outcome in zip(batch, outcomes, strict=True):
                if outcome is Queued.QUEUED:
                    for key in signed.fetched_keys:
                        await store_resolved(session, ctx, key)
            if rows:
                await session.execute(insert(InboxItem), rows)  # one executemany
        return outcomes


def _known(uris: list[str]) -> Any:
    """The ids among ``uris`` already applied or already queued: one query for both."""
    return union_all(
        select(InboxActivity.uri).where(InboxActivity.uri.in_(uris)),
        select(InboxItem.activity_uri).where(InboxItem.activity_uri.in_(uris)),
    )


def _new_rows(
    seen: set[str], uris: list[str], values: list[dict[str, object]]
) -> tuple[list[Queued], list[dict[str, object]]]:
    """Each activity's outcome, and the rows to insert: one per id not seen before (a
    second copy in the same batch is a duplicate too)."""
    outcomes: list[Queued] = []
    rows: list[dict[str, object]] = []
    for uri, row in zip(uris, values, strict=True):
        if uri in seen:
            outcomes.append(Queued.DUPLICATE)
        else:
            seen.add(uri)
            rows.append(row)
            outcomes.append(Queued.QUEUED)
    return outcomes, rows


async def _seen(session: AsyncSession, activity_uri: str) -> bool:
    processed = await session.scalar(
        select(InboxActivity.id).where(InboxActivity.uri == activity_uri)
    )
    if processed is not None:
        return True
    waiting = await session.scalar(
        select(InboxItem.id).where(InboxItem.activity_uri == activity_uri)
    )
    return waiting is not None


async def claim(ctx: Context, *, now: datetime, limit: int = BATCH) -> tuple[str, list[int]]:
    """Lease up to ``limit`` due rows, each the oldest pending row of its actor."""
    token = secrets.token_hex(8)
    heads = (
        select(func.min(InboxItem.id))
        .where(InboxItem.status == InboxItemStatus.PENDING)
        .group_by(InboxItem.actor_uri)
    )
    query = (
        select(InboxItem.id)
        .where(
            InboxItem.id.in_(heads),
            InboxItem.next_attempt_at <= now,
            or_(InboxItem.claimed_until.is_(None), InboxItem.claimed_until < now),
        )
        .order_by(InboxItem.id)
        .limit(limit)
    )
    if ctx.engine.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    async with ctx.sessions() as session, session.begin():
        ids = list((await session.scalars(query)).all())
        if ids:
            await session.execute(
                update(InboxItem)
                .where(InboxItem.id.in_(ids))
                .values(claimed_until=now + ctx.settings.inbox_lease, claim_token=token)
            )
    return token, ids


@dataclass(frozen=True)
class _Item:
    id: int
    actor_uri: str
    inbox_handle: str | None
    document: dict[str, object]
    provenance: Provenance | None


def _provenance(scheme: str | None, key_id: str | None) -> Provenance | None:
    """The queue row's record of how the request proved the actor's authorship."""
    try:
        return Provenance(Scheme(scheme), key_id) if scheme else None
    except ValueError:  # a scheme a later version wrote
        return None


class _LeaseLost(Exception):
    """Another worker took the row over (our lease ran out): our work is rolled back."""


def _refusal(exc: BaseException) -> str | None:
    """The reason when ``exc`` says the activity itself is bad (retrying cannot help)."""
    if isinstance(exc, JsonLdError):
        return f"invalid JSON-LD: {exc}"
    if isinstance(exc, InterOccError) and 400 <= exc.status < 500:
        return exc.message
    return None


async def process(ctx: Context, item_id: int, *, token: str) -> InboxItemStatus | None:
    """Apply one claimed activity. Returns None when it was applied (its row is gone), else
    the row's state afterwards; never raises for the activity's sake."""
    async with ctx.sessions() as session:
        row = (
            await session.scalars(
                select(InboxItem).where(InboxItem.id == item_id, InboxItem.claim_token == token)
            )
        ).first()
        if row is None:
            return None
        item = _Item(
            row.id,
            row.actor_uri,
            row.inbox_handle,
            dict(row.document),
            _provenance(row.verified_with, row.verified_by),
        )
        # Blocked since it was queued: a block applies to what still waits, too.
        blocked = await delivery.blocking_domain(session, item.actor_uri) is not None
    try:
        if blocked:
            raise Forbidden("this instance does not accept activities from your domain")
        activity = await normalise_off_loop(item.document)
        signed = Signed(
            item.document,
            item.actor_uri,
            item.actor_uri,
            None,
            activity,
            provenance=item.provenance,
        )
        prefetched = await prefetch(ctx, signed)
        async with ctx.sessions() as session, session.begin():
            await receive(
                ctx, session, signed, inbox_handle=item.inbox_handle, prefetched=prefetched
            )
            gone = await session.execute(
                delete(InboxItem).where(InboxItem.id == item.id, InboxItem.claim_token == token)
            )
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                raise _LeaseLost
    except _LeaseLost:
        return None
    except Exception as exc:  # a worker outlives any one activity
        reason = _refusal(exc)
        if reason is None:
            log.warning("inbox activity %s failed: %r", item.id, exc, exc_info=True)
        return await _failed(ctx, item, token=token, reason=reason, error=repr(exc))
    ctx.wake.set()  # a handler may have queued deliveries (an Accept, a forward)
    return None


async def _failed(
    ctx: Context, item: _Item, *, token: str, reason: str | None, error: str
) -> InboxItemStatus | None:
    """Record a refusal (final) or a failure (retried with backoff, parked at the limit)."""
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        row = (
            await session.scalars(
                select(InboxItem).where(InboxItem.id == item.id, InboxItem.claim_token == token)
            )
        ).first()
        if row is None:
            return None
        row.attempts += 1
        row.claimed_until = None
        row.claim_token = None
        if reason is not None:
            row.status = InboxItemStatus.REJECTED
            row.last_error = reason[:500]
        elif row.attempts >= ctx.settings.inbox_max_attempts:
            row.status = InboxItemStatus.PARKED
            row.last_error = error[:2000]
            log.error("inbox activity %s parked after %d tries: %s", row.id, row.attempts, error)
        else:
            row.last_error = error[:2000]
            row.next_attempt_at = now + min(FIRST_RETRY * 4 ** (row.attempts - 1), MAX_RETRY)
        return row.status


async def run_once(ctx: Context, *, now: datetime | None = None, limit: int = BATCH) -> int:
    """Claim and process one batch; returns how many rows were claimed."""
    token, ids = await claim(ctx, now=now or ctx.clock(), limit=limit)
    if not ids:
        return 0
    gate = asyncio.Semaphore(ctx.settings.inbox_concurrency)

    async def one(item_id: int) -> None:
        async with gate:
            await process(ctx, item_id, token=token)

    await asyncio.gather(*(one(item_id) for item_id in ids))
    return len(ids)


async def drain(ctx: Context) -> int:
    """Process until nothing is due now (tests and ``interocc inbox process``)."""
    total = 0
    while done := await run_once(ctx):
        total += done
    return total


async def prune(ctx: Context, *, now: datetime) -> int:
    """Delete rejected activities older than KEEP_REJECTED; returns how many."""
    async with ctx.sessions() as session, session.begin():
        result = await session.execute(
            delete(InboxItem).where(
                InboxItem.status == InboxItemStatus.REJECTED,
                InboxItem.received_at < now - KEEP_REJECTED,
            )
        )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def run_forever(ctx: Context, stop: asyncio.Event, *, idle: float = 1.0) -> None:
    """Process queued activities until ``stop`` is set; wakes early on ``ctx.inbox_wake``."""
    loop = asyncio.get_running_loop()
    pruned_at = -PRUNE_EVERY
    while not stop.is_set():
        try:
            if loop.time() - pruned_at >= PRUNE_EVERY:
                pruned_at = loop.time()
                await prune(ctx, now=ctx.clock())
            done = await run_once(ctx)
        except Exception:  # the database restarted, a bug: the next round tries again
            log.exception("inbox batch failed")
            done = 0
        if done:
            continue
        ctx.inbox_wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(ctx.inbox_wake.wait())]
        await asyncio.wait(waiters, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()


async def counts(session: AsyncSession) -> dict[str, int]:
    """Rows by state, for the CLI and the admin's overview."""
    rows = await session.execute(select(InboxItem.status, func.count()).group_by(InboxItem.status))
    found = {str(status): int(n) for status, n in rows}
    return {status.value: found.get(status.value, 0) for status in InboxItemStatus}


async def retry(
    session: AsyncSession, *, now: datetime, statuses: tuple[InboxItemStatus, ...]
) -> int:
    """Put parked (or rejected) rows back in the queue, due now; returns how many."""
    result = await session.execute(
        update(InboxItem)
        .where(InboxItem.status.in_(statuses))
        .values(
            status=InboxItemStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            claimed_until=None,
            claim_token=None,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
