"""The delivery read model (server/deliveries.py) on rows made by hand, on both engines.

One world, described once: a communiqué (its Create and one Update) delivered to five
servers in every state, another communiqué queued elsewhere, a healed server and a few
attempts around the 24-hour edge. Each test asserts exact numbers and order on it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from server import deliveries
from server.context import Context
from server.deliveries import Counts
from server.models import (
    Activity,
    Delivery,
    DeliveryAttempt,
    DeliveryHost,
    DeliveryStatus,
    HostState,
)
from tests.helpers import approved_assembly, post

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

PENDING = DeliveryStatus.PENDING
DELIVERED = DeliveryStatus.DELIVERED
FAILED = DeliveryStatus.FAILED
SKIPPED = DeliveryStatus.SKIPPED


@dataclass(frozen=True)
class World:
    communique_id: int  # the communiqué under test
    other_id: int  # another one, queued elsewhere
    quiet_id: int  # one with no delivery at all


_inboxes = itertools.count(1)


def delivery(
    activity: Activity,
    host: str,
    status: DeliveryStatus,
    *,
    created: datetime = NOW - HOUR,
    next_at: datetime = NOW + 5 * MINUTE,
    claimed_until: datetime | None = None,
    error: str | None = None,
    last_status: int | None = None,
) -> Delivery:
    return Delivery(
        activity_id=activity.id,
        inbox_uri=f"https://{host}/users/u{next(_inboxes)}/inbox",
        host=host,
        status=status,
        attempts=0 if status is PENDING and error is None else 1,
        next_attempt_at=next_at,
        claimed_until=claimed_until,
        last_status=last_status,
        last_error=error,
        created_at=created,
    )


@pytest.fixture
async def world(ctx: Context) -> World:
    await approved_assembly(ctx, "libertyplaza")
    published = await post(ctx, "libertyplaza", "The general strike is on Thursday.")
    other = await post(ctx, "libertyplaza", "The kitchen needs onions.")
    quiet = await post(ctx, "libertyplaza", "Nobody follows us yet.")
    async with ctx.sessions() as session, session.begin():
        create = await session.get(Activity, published.activity.id)
        elsewhere = await session.get(Activity, other.activity.id)
        assert create is not None and elsewhere is not None
        update = Activity(
            public_id="update1",
            uri="http://127.0.0.1/activities/update1",
            assembly_id=create.assembly_id,
            communique_id=create.communique_id,
            type="Update",
            document={},
            public=True,
            created_at=NOW - 30 * MINUTE,
        )
        session.add(update)
        session.add_all(
            [
                DeliveryHost(
                    host="down.example",
                    state=HostState.FAILING,
                    failures=7,
                    failing_since=NOW - 2 * HOUR,
                    last_error="connect timeout",
                    last_failure_at=NOW - 10 * MINUTE,
                    next_probe_at=NOW + 10 * MINUTE,
                ),
                DeliveryHost(
                    host="gone.example",
                    state=HostState.UNAVAILABLE,
                    failures=40,
                    failing_since=NOW - 8 * DAY,
                    unavailable_since=NOW - DAY,
                    last_error="no answer",
                    last_failure_at=NOW - HOUR,
                    next_probe_at=NOW + 6 * HOUR,
                ),
                DeliveryHost(
                    host="healed.example",
                    state=HostState.AVAILABLE,
                    failures=0,
                    last_error="HTTP 502",
                    last_success_at=NOW - DAY,
                ),
                DeliveryHost(
                    host="shaky.example",
                    state=HostState.AVAILABLE,
                    failures=2,
                    failing_since=NOW - 20 * MINUTE,
                    last_error="HTTP 500",
                ),
            ]
        )
        await session.flush()
        rows = [
            # up.example: healthy; two delivered and two pending (one of them in flight).
            delivery(create, "up.example", DELIVERED, created=NOW - 3 * HOUR),
            delivery(create, "up.example", DELIVERED, created=NOW - 3 * HOUR),
            delivery(create, "up.example", PENDING, next_at=NOW + 5 * MINUTE),
            delivery(
                create,
                "up.example",
                PENDING,
                next_at=NOW - MINUTE,
                claimed_until=NOW + MINUTE,
                created=NOW - 2 * HOUR,
            ),
            delivery(update, "up.example", DELIVERED, created=NOW - 30 * MINUTE),
            # down.example: failing, so its two pending rows are held.
            delivery(create, "down.example", PENDING, next_at=NOW - 30 * MINUTE),
            delivery(
                create, "down.example", PENDING, error="HTTP 503", last_status=503, created=NOW
            ),
            # gone.example: unavailable; one row skipped, one kept pending as its probe.
            delivery(create, "gone.example", SKIPPED, error="host unavailable"),
            delivery(create, "gone.example", PENDING, created=NOW - 5 * HOUR),
            # refuse.example: answered, and refused.
            delivery(create, "refuse.example", FAILED, error="HTTP 403", last_status=403),
            # shaky.example: two failures, below the threshold: not held.
            delivery(update, "shaky.example", PENDING, error="HTTP 500", next_at=NOW + HOUR),
            # The other communiqué: queued on other.example, and one more on down.example.
            delivery(elsewhere, "other.example", PENDING, created=NOW - 4 * HOUR),
            delivery(elsewhere, "other.example", PENDING, created=NOW - 6 * HOUR),
            delivery(elsewhere, "other.example", PENDING),
            delivery(elsewhere, "down.example", PENDING, created=NOW - 7 * HOUR),
        ]
        session.add_all(rows)
        await session.flush()
        attempts = [
            (NOW - HOUR, "retry"),
            (NOW - 23 * HOUR, "failed"),
            (NOW - 24 * HOUR, "retry"),  # exactly 24 hours ago: still counted
            (NOW - HOUR, "delivered"),
            (NOW - 25 * HOUR, "retry"),  # too old
        ]
        session.add_all(
            DeliveryAttempt(delivery_id=rows[0].id, attempted_at=at, outcome=outcome)
            for at, outcome in attempts
        )
    return World(
        communique_id=published.communique.id,
        other_id=other.communique.id,
        quiet_id=quiet.communique.id,
    )


async def test_communique_totals_count_every_activity_and_hold_by_host_state(
    ctx: Context, world: World
) -> None:
    async with ctx.sessions() as session:
        summary = await deliveries.communique_summary(session, world.communique_id, now=NOW)
    # Create and Update together: up 3 delivered; pending up 2 + down 2 + gone 1 + shaky 1.
    assert summary.counts == Counts(delivered=3, pending=6, held=3, failed=1, skipped=1)
    assert summary.counts.waiting == 3 and summary.counts.total == 11
    assert summary.host_total == 5


async def test_communique_hosts_troubled_first_with_their_errors_and_next_try(
    ctx: Context, world: World
) -> None:
    async with ctx.sessions() as session:
        summary = await deliveries.communique_summary(session, world.communique_id, now=NOW)
    got = [
        (h.host, h.state, h.counts, h.in_flight, h.last_error, h.next_try) for h in summary.hosts
    ]
    assert got == [
        # Held servers show their own error and their next probe.
        (
            "gone.example",
            HostState.UNAVAILABLE,
            Counts(pending=1, held=1, skipped=1),
            0,
            "no answer",
            NOW + 6 * HOUR,
        ),
        (
            "down.example",
            HostState.FAILING,
            Counts(pending=2, held=2),
            0,
            "connect timeout",
            NOW + 10 * MINUTE,
        ),
        # Then by pending rows, then by failed and skipped ones, then by name.
        ("up.example", HostState.AVAILABLE, Counts(delivered=3, pending=2), 1, None, NOW - MINUTE),
        (
            "shaky.example",
            HostState.AVAILABLE,
            Counts(pending=1),
            0,
            "HTTP 500",
            NOW + HOUR,
        ),
        ("refuse.example", HostState.AVAILABLE, Counts(failed=1), 0, "HTTP 403", None),
    ]
    assert [h.held for h in summary.hosts] == [True, True, False, False, False]


async def test_communique_host_list_is_bounded(ctx: Context, world: World) -> None:
    async with ctx.sessions() as session:
        summary = await deliveries.communique_summary(
            session, world.communique_id, now=NOW, limit=2
        )
    assert [h.host for h in summary.hosts] == ["gone.example", "down.example"]
    assert summary.host_total == 5
    assert summary.counts.total == 11  # the totals still count every server


async def test_a_communique_nobody_receives_has_an_empty_summary(
    ctx: Context, world: World
) -> None:
    async with ctx.sessions() as session:
        quiet = await deliveries.communique_summary(session, world.quiet_id, now=NOW)
        other = await deliveries.communique_summary(session, world.other_id, now=NOW)
    assert quiet.counts == Counts() and quiet.hosts == [] and quiet.host_total == 0
    assert other.counts == Counts(pending=4, held=1)
    assert [(h.host, h.counts.pending) for h in other.hosts] == [
        ("down.example", 1),
        ("other.example", 3),
    ]


async def test_host_overview_orders_by_health_then_queue_depth(ctx: Context, world: World) -> None:
    async with ctx.sessions() as session:
        overview = await deliveries.host_overview(session, now=NOW)
    got = [
        (h.host, h.state, h.failures, h.queued, h.oldest_pending, h.next_try)
        for h in overview.hosts
    ]
    assert got == [
        ("gone.example", HostState.UNAVAILABLE, 40, 1, NOW - 5 * HOUR, NOW + 6 * HOUR),
        ("down.example", HostState.FAILING, 7, 3, NOW - 7 * HOUR, NOW + 10 * MINUTE),
        ("other.example", HostState.AVAILABLE, 0, 3, NOW - 6 * HOUR, NOW + 5 * MINUTE),
        ("up.example", HostState.AVAILABLE, 0, 2, NOW - 2 * HOUR, NOW - MINUTE),
        ("shaky.example", HostState.AVAILABLE, 2, 1, NOW - HOUR, NOW + HOUR),
        # A health record and nothing queued; refuse.example has neither and is not listed.
        ("healed.example", HostState.AVAILABLE, 0, 0, None, None),
    ]
    gone, down = overview.hosts[0], overview.hosts[1]
    assert (gone.failing_since, gone.unavailable_since) == (NOW - 8 * DAY, NOW - DAY)
    assert (down.failing_since, down.unavailable_since) == (NOW - 2 * HOUR, None)
    assert (down.last_error, down.last_failure_at) == ("connect timeout", NOW - 10 * MINUTE)
    assert [h.troubled for h in overview.hosts] == [True, True, False, False, True, False]
    assert overview.total == 6 and not overview.truncated


async def test_host_overview_is_bounded(ctx: Context, world: World) -> None:
    async with ctx.sessions() as session:
        overview = await deliveries.host_overview(session, now=NOW, limit=3)
    assert [h.host for h in overview.hosts] == ["gone.example", "down.example", "other.example"]
    assert (overview.total, overview.limit, overview.truncated) == (6, 3, True)


async def test_queue_overview(ctx: Context, world: World) -> None:
    async with ctx.sessions() as session:
        queue = await deliveries.queue_overview(session, now=NOW)
    # Pending: up 2, down 3, gone 1, shaky 1, other 3; held: down 3 and gone 1.
    assert queue == deliveries.QueueOverview(
        pending=10, held=4, failed_attempts=3, failing_hosts=1, unavailable_hosts=1
    )


async def test_queue_overview_of_an_empty_queue(ctx: Context) -> None:
    async with ctx.sessions() as session:
        queue = await deliveries.queue_overview(session, now=NOW)
    assert queue == deliveries.QueueOverview(0, 0, 0, 0, 0)


async def test_list_deliveries_filters_and_orders_newest_first(ctx: Context, world: World) -> None:
    async with ctx.sessions() as session:
        down = await deliveries.list_deliveries(session, host="down.example")
        failed = await deliveries.list_deliveries(session, status=FAILED)
        held = await deliveries.list_deliveries(session, host="down.example", status=PENDING)
        newest = await deliveries.list_deliveries(session, limit=2)
        none = await deliveries.list_deliveries(session, host="down.example", status=DELIVERED)
    assert [(d.created_at, d.activity_type, d.last_status, d.last_error) for d in down] == [
        (NOW, "Create", 503, "HTTP 503"),
        (NOW - HOUR, "Create", None, None),
        (NOW - 7 * HOUR, "Create", None, None),
    ]
    assert {d.host for d in down} == {"down.example"}
    assert all(d.inbox_uri.startswith("https://down.example/users/") for d in down)
    assert all(d.activity_uri.startswith("http") for d in down)
    (refused,) = failed
    assert (refused.host, refused.status, refused.attempts) == ("refuse.example", FAILED, 1)
    assert len(held) == 3
    assert [(d.host, d.activity_type, d.created_at) for d in newest] == [
        ("down.example", "Create", NOW),
        ("up.example", "Update", NOW - 30 * MINUTE),
    ]
    assert none == []
