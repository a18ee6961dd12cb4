"""Delivery that dead servers cannot stall: slots kept full, requests left unanswered moved
aside, a cap per host, and host health (held, probed, unavailable, reset).

Followers live on real loopback servers (tests/support/sinks.py): live ones answer, hanging
ones accept the connection and never answer, refusing ones are ports nothing listens on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from server import worker
from server.activitypub import hosts
from server.config import Settings
from server.context import Context, create_context
from server.models import (
    Assembly,
    Delivery,
    DeliveryAttempt,
    DeliveryHost,
    DeliveryStatus,
    Follower,
    HostState,
    RemoteActor,
)
from tests.helpers import approved_assembly, post
from tests.support.sinks import Host, Sinks


async def follow_from(ctx: Context, handle: str, inboxes: list[str]) -> None:
    """One accepted follower per inbox (no shared inbox: one delivery row each)."""
    async with ctx.sessions() as session, session.begin():
        assembly = (await session.scalars(select(Assembly).where(Assembly.handle == handle))).one()
        for inbox in inboxes:
            actor = RemoteActor(
                uri=inbox.removesuffix("/inbox"), domain="127.0.0.1", inbox_uri=inbox
            )
            session.add(actor)
            await session.flush()
            session.add(Follower(assembly_id=assembly.id, actor_id=actor.id, follow_uri="f"))


async def rows(ctx: Context) -> list[Delivery]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(Delivery).order_by(Delivery.id))).all())


async def host_row(ctx: Context, host: Host) -> DeliveryHost | None:
    async with ctx.sessions() as session:
        return await session.get(DeliveryHost, f"127.0.0.1:{host.port}")


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[tuple[Context, asyncio.Event]]:
    """A context whose settings a test replaces before it starts the worker."""
    stop = asyncio.Event()
    contexts: list[Context] = []

    async def start(**changes: object) -> Context:
        ctx = await create_context(replace(settings, **changes))  # type: ignore[arg-type]
        contexts.append(ctx)
        return ctx

    yield start, stop  # type: ignore[misc]
    stop.set()
    for ctx in contexts:
        await ctx.aclose()


@pytest.mark.parametrize(
    ("live", "hanging", "refusing"),
    [(60, 30, 10), (15, 80, 5)],
    ids=["mostly-live", "mostly-hanging"],
)
async def test_live_followers_are_served_whatever_the_dead_ones_do(
    running: tuple[object, asyncio.Event], live: int, hanging: int, refusing: int
) -> None:
    start, stop = running
    # The defaults, but a short read timeout so that the hanging rows' first attempt ends
    # within the test; the slots, the cap and the move aside are the shipped ones.
    ctx: Context = await start(delivery_timeout=3.0)  # type: ignore[operator]
    with Sinks() as sinks:
        kinds = [sinks.live() for _ in range(live)]
        kinds += [sinks.hanging() for _ in range(hanging)]
        kinds += [sinks.refusing() for _ in range(refusing)]
        # Interleaved, so that the dead hosts sit in front of live ones in the queue.
        ordered = sorted(kinds, key=lambda h: (kinds.index(h) % 10, h.port))
        await approved_assembly(ctx, "plaza")
        await follow_from(ctx, "plaza", [h.inbox() for h in ordered])
        loop = asyncio.create_task(worker.run_forever(ctx, stop, idle=0.2))
        try:
            started = time.monotonic()
            published = await post(ctx, "plaza", "The camps are gone; the assemblies are not.")
            live_hosts = [h for h in kinds if h.kind == "live"]
            while time.monotonic() - started < 10 and not all(h.received for h in live_hosts):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            served = [h.received[0].at - started for h in live_hosts if h.received]
            assert len(served) == live, f"{len(served)} of {live} live followers served"
            assert max(served) < 5.0, f"the last live follower waited {max(served):.1f} s"
            for host in live_hosts:
                assert [r.json["object"]["id"] for r in host.received] == [published.url]

            # The dead hosts' rows end their first attempt (3 s read timeout, or refused)
            # and are scheduled again on the backoff: about a minute later.
            # (A generous bound: it is left as soon as they have; a loaded machine is slow.)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                pending = [r for r in await rows(ctx) if r.status == DeliveryStatus.PENDING]
                if len(pending) == hanging + refusing and all(r.attempts == 1 for r in pending):
                    break
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await loop
    by_status: dict[DeliveryStatus, list[Delivery]] = {}
    for row in await rows(ctx):
        by_status.setdefault(row.status, []).append(row)
    assert len(by_status[DeliveryStatus.DELIVERED]) == live
    pending = by_status[DeliveryStatus.PENDING]
    assert len(pending) == hanging + refusing
    dead_ports = {h.port for h in kinds if h.kind != "live"}
    for row in pending:
        assert int(row.host.rsplit(":", 1)[1]) in dead_ports
        assert row.attempts == 1 and row.claim_token is None
        assert row.last_error and ("no answer" in row.last_error or "connection" in row.last_error)
        wait = row.next_attempt_at - row.created_at
        assert timedelta(seconds=50) < wait < timedelta(seconds=90), wait


async def test_one_host_never_has_more_than_its_cap_in_flight(
    running: tuple[object, asyncio.Event],
) -> None:
    start, stop = running
    ctx: Context = await start()  # type: ignore[operator]
    with Sinks() as sinks:
        busy = sinks.live(delay=0.2)
        other = sinks.live()
        await approved_assembly(ctx, "plaza")
        # Twelve followers behind one server, then one elsewhere, queued after them.
        await follow_from(ctx, "plaza", [busy.inbox(n) for n in range(12)] + [other.inbox()])
        loop = asyncio.create_task(worker.run_forever(ctx, stop, idle=0.2))
        try:
            started = time.monotonic()
            await post(ctx, "plaza", "One server, many followers.")
            while time.monotonic() - started < 10 and len(busy.received) < 12:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await loop
    assert len(busy.received) == 12
    assert busy.most_in_flight == 2  # the cap, reached and never passed
    # The other server did not wait behind the busy one's queue.
    assert other.received and other.received[0].at - started < 0.5


async def test_a_failing_host_is_held_probed_and_gets_what_it_held_when_it_answers(
    running: tuple[object, asyncio.Event],
) -> None:
    start, stop = running
    ctx: Context = await start(  # type: ignore[operator]
        host_failure_threshold=2,
        host_probe_first=timedelta(seconds=0.5),
        host_release_per_minute=600,
    )
    with Sinks() as sinks:
        flaky = sinks.refusing()
        await approved_assembly(ctx, "plaza")
        await follow_from(ctx, "plaza", [flaky.inbox()])
        loop = asyncio.create_task(worker.run_forever(ctx, stop, idle=0.1))
        try:
            urls = [(await post(ctx, "plaza", f"Communiqué {i}.")).url for i in range(2)]
            # Two refusals: the host is failing, its deliveries held.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                health = await host_row(ctx, flaky)
                if health is not None and health.state is HostState.FAILING:
                    break
                await asyncio.sleep(0.05)
            assert health is not None and health.state is HostState.FAILING
            assert health.failures >= 2 and health.failing_since is not None
            # What is published meanwhile is held, not attempted: only probes go out.
            urls += [(await post(ctx, "plaza", f"Communiqué {i}.")).url for i in range(2, 5)]
            await asyncio.sleep(1.2)
            async with ctx.sessions() as session:
                attempts = len((await session.scalars(select(DeliveryAttempt))).all())
            assert attempts <= 2 + 2  # the two that failed, and at most two probes since
            sinks.revive(flaky)
            # (A generous bound: it is left as soon as they have; a loaded machine is slow.)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and len(flaky.received) < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await loop
    delivered = sinks.received_objects(flaky)
    assert sorted(delivered) == sorted(urls), [
        (r.status, r.attempts, r.next_attempt_at, r.last_error) for r in await rows(ctx)
    ]
    assert set(delivered.values()) == {1}  # each once
    health = await host_row(ctx, flaky)
    assert health is not None and health.state is HostState.AVAILABLE and health.failures == 0
    assert {r.status for r in await rows(ctx)} == {DeliveryStatus.DELIVERED}


async def test_host_health_on_a_schedule(
    running: tuple[object, asyncio.Event], caplog: pytest.LogCaptureFixture
) -> None:
    """Held after the threshold, one probe per backoff step, unavailable after the set
    time (its held rows and new ones skipped), back after an admin's reset."""
    start, _ = running
    ctx: Context = await start(  # type: ignore[operator]
        delivery_per_host=1,  # one at a time: each failure is counted before the next try
        host_failure_threshold=2,
        host_probe_first=timedelta(minutes=1),
        host_probe_most=timedelta(hours=1),
        host_unavailable_after=timedelta(days=1),
        host_release_per_minute=60,
    )
    caplog.set_level(logging.INFO)
    with Sinks() as sinks:
        dead = sinks.refusing()
        key = f"127.0.0.1:{dead.port}"
        await approved_assembly(ctx, "plaza")
        await follow_from(ctx, "plaza", [dead.inbox()])
        for i in range(4):
            await post(ctx, "plaza", f"Communiqué {i}.")
        t0 = max(r.next_attempt_at for r in await rows(ctx))

        # Two refused, one after the other: the host is failing, the other two held.
        assert await worker.run_once(ctx, now=t0) == 2
        health = await host_row(ctx, dead)
        assert health is not None and health.state is HostState.FAILING
        assert health.next_probe_at == t0 + timedelta(minutes=1)
        assert await worker.run_once(ctx, now=t0 + timedelta(seconds=59)) == 0
        assert "failed (attempt 1" in caplog.text and key in caplog.text

        # One probe when it is due, whatever the rows' own schedules; the next waits twice
        # as long.
        t1 = t0 + timedelta(minutes=1)
        assert await worker.run_once(ctx, now=t1) == 1
        health = await host_row(ctx, dead)
        assert health is not None and health.next_probe_at == t1 + timedelta(minutes=2)
        assert await worker.run_once(ctx, now=t1 + timedelta(seconds=119)) == 0

        # A day of failures: unavailable, held rows skipped, one warning.
        t2 = t0 + timedelta(days=1, seconds=1)
        assert await worker.run_once(ctx, now=t2) == 1
        health = await host_row(ctx, dead)
        assert health is not None and health.state is HostState.UNAVAILABLE
        assert health.unavailable_since == t2
        warnings = [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("server.")
        ]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
        statuses = sorted(r.status for r in await rows(ctx))
        # The probe stays pending (the next probe); the three others were skipped.
        assert statuses == [DeliveryStatus.PENDING] + [DeliveryStatus.SKIPPED] * 3

        # New deliveries to it are skipped, not attempted.
        async with ctx.sessions() as session, session.begin():
            from server import communiques

            published = await communiques.publish(
                session, ctx.urls, handle="plaza", source="Later.", now=t2
            )
        assert published.deliveries == 1
        newest = (await rows(ctx))[-1]
        assert newest.status is DeliveryStatus.SKIPPED
        assert newest.last_error == hosts.HOST_UNAVAILABLE

        # An admin resets it: available, what it held released (skipped rows stay skipped).
        t3 = t2 + timedelta(minutes=5)
        async with ctx.sessions() as session, session.begin():
            released = await hosts.reset(session, key, now=t3, policy=hosts.Policy.of(ctx.settings))
            assert released == 1
        health = await host_row(ctx, dead)
        assert health is not None and health.state is HostState.AVAILABLE
        assert health.failures == 0 and health.next_probe_at is None
        pending = [r for r in await rows(ctx) if r.status is DeliveryStatus.PENDING]
        assert len(pending) == 1 and pending[0].next_attempt_at == t3


async def test_release_is_spread_at_the_set_rate(
    running: tuple[object, asyncio.Event],
) -> None:
    start, _ = running
    ctx: Context = await start(  # type: ignore[operator]
        delivery_per_host=1, host_failure_threshold=1, host_release_per_minute=30
    )
    with Sinks() as sinks:
        dead = sinks.refusing()
        await approved_assembly(ctx, "plaza")
        await follow_from(ctx, "plaza", [dead.inbox(n) for n in range(5)])
        await post(ctx, "plaza", "Held.")
        t0 = max(r.next_attempt_at for r in await rows(ctx))
        assert await worker.run_once(ctx, now=t0) == 1  # refused: the host's rows are held
        sinks.revive(dead)
        t1 = t0 + timedelta(minutes=1)
        # The probe answers; what was held is released two seconds apart (30 a minute)
        # from now: the first at once (sent in the same run), the others later.
        assert await worker.run_once(ctx, now=t1) == 2
        assert len(dead.received) == 2
    health = await host_row(ctx, dead)
    assert health is not None and health.state is HostState.AVAILABLE
    held = [r for r in await rows(ctx) if r.status is DeliveryStatus.PENDING]
    assert [r.next_attempt_at for r in held] == [t1 + timedelta(seconds=2 * i) for i in (1, 2, 3)]


async def test_a_batch_that_cannot_be_written_is_written_row_by_row(
    running: tuple[object, asyncio.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results are written in group commits; if a whole batch fails, each result is written
    alone, so one bad row never costs the others their record."""
    start, _ = running
    ctx: Context = await start()  # type: ignore[operator]
    await approved_assembly(ctx, "plaza")
    await follow_from(ctx, "plaza", [f"https://s{n}.example/inbox" for n in range(4)])
    await post(ctx, "plaza", "Recorded.")
    token, ids = await worker.claim(ctx, now=ctx.clock(), limit=10)
    assert len(ids) == 4
    batches: list[int] = []
    whole = worker.record_many

    async def failing_batches(
        c: Context, results: list[tuple[str, worker.AttemptResult]], **kw: object
    ) -> list[object]:
        batches.append(len(results))
        if len(results) > 1:
            raise RuntimeError("the batch's transaction failed")
        return await whole(c, results, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(worker, "record_many", failing_batches)
    slots = worker.Slots(ctx)
    # Four results at once: one batch (refused as a whole), then one by one.
    results = [worker.AttemptResult(i, 202, None, None) for i in ids]
    await asyncio.gather(*(slots._record(token, r) for r in results))
    assert batches == [4, 1, 1, 1, 1]
    assert {r.status for r in await rows(ctx)} == {DeliveryStatus.DELIVERED}


async def test_rows_claimed_ahead_and_not_sent_are_handed_back(
    running: tuple[object, asyncio.Event],
) -> None:
    start, _ = running
    ctx: Context = await start(delivery_concurrency=1)  # type: ignore[operator]
    with Sinks() as sinks:
        hosts_ = [sinks.live() for _ in range(3)]
        await approved_assembly(ctx, "plaza")
        await follow_from(ctx, "plaza", [h.inbox() for h in hosts_])
        await post(ctx, "plaza", "One at a time.")
        # One slot: two rows are claimed (one to send, one ahead); the run stops after them.
        assert await worker.run_once(ctx, limit=1) == 2
    found = await rows(ctx)
    assert (
        sorted(r.status for r in found) == [DeliveryStatus.DELIVERED] + [DeliveryStatus.PENDING] * 2
    )
    # The one claimed ahead is free again at once, not leased until its lease runs out.
    assert all(r.claim_token is None and r.claimed_until is None for r in found)
    assert sum(len(h.received) for h in hosts_) == 1
