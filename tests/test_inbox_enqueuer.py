"""The web process's inbox writer (Enqueuer): activities that arrive together are stored in
one transaction, each request still learns its own outcome, and none is lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from server.context import Context
from server.federation import inbox_queue
from server.federation.inbox import Signed
from server.federation.inbox_queue import Enqueuer, Queued
from server.models import InboxActivity, InboxItem, InboxItemStatus

ACTOR = "https://peer.example/users/ana"
AS = "https://www.w3.org/ns/activitystreams"


def _signed(n: int, actor: str = ACTOR) -> Signed:
    raw: dict[str, Any] = {
        "@context": AS,
        "id": f"{actor}/statuses/{n}/activity",
        "type": "Create",
        "actor": actor,
        "object": {"id": f"{actor}/statuses/{n}", "type": "Note", "content": f"<p>{n}</p>"},
    }
    return Signed(raw, actor, actor, None)


async def _rows(ctx: Context) -> list[InboxItem]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(InboxItem).order_by(InboxItem.id))).all())


@pytest.fixture
async def enqueuer(ctx: Context) -> Any:
    writer = Enqueuer(ctx)
    yield writer
    await writer.aclose()


def _count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    store = Enqueuer._store

    async def counting(self: Enqueuer, batch: Any) -> list[Queued]:
        sizes.append(len(batch))
        return await store(self, batch)

    monkeypatch.setattr(Enqueuer, "_store", counting)
    return sizes


async def test_activities_that_arrive_together_share_one_transaction(
    ctx: Context, enqueuer: Enqueuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _count_batches(monkeypatch)
    outcomes = await asyncio.gather(
        *(enqueuer.enqueue(_signed(n), inbox_handle=None) for n in range(40))
    )
    assert outcomes == [Queued.QUEUED] * 40
    # All were waiting by the time the writer ran: one transaction.
    assert sizes == [40]
    rows = await _rows(ctx)
    assert [r.activity_uri for r in rows] == [str(_signed(n).raw["id"]) for n in range(40)]


async def test_a_batch_is_at_most_batch_rows(
    ctx: Context, enqueuer: Enqueuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _count_batches(monkeypatch)
    n = inbox_queue.BATCH * 2 + 5
    outcomes = await asyncio.gather(
        *(enqueuer.enqueue(_signed(i), inbox_handle=None) for i in range(n))
    )
    assert outcomes == [Queued.QUEUED] * n
    assert max(sizes) == inbox_queue.BATCH and sum(sizes) == n
    assert len(await _rows(ctx)) == n


async def test_rows_are_those_enqueue_writes(ctx: Context, enqueuer: Enqueuer) -> None:
    """The batch writer (on SQLite: the sqlite3 driver on its own thread) stores exactly
    the row the one-at-a-time ``enqueue`` stores."""
    ctx.clock = lambda: datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert await enqueuer.enqueue(_signed(1), inbox_handle="ga") == Queued.QUEUED
    assert await inbox_queue.enqueue(ctx, _signed(2), inbox_handle="ga") == Queued.QUEUED
    batched, alone = await _rows(ctx)
    for row, n in ((batched, 1), (alone, 2)):
        assert row.document == _signed(n).raw
        assert (row.actor_uri, row.type, row.inbox_handle) == (ACTOR, "Create", "ga")
        assert row.status == InboxItemStatus.PENDING and row.attempts == 0
        assert row.received_at == row.next_attempt_at == ctx.clock()
    uses_thread = enqueuer._sqlite is not None
    assert uses_thread == ctx.settings.database_url.startswith("sqlite")


async def test_duplicates_in_a_batch_queued_and_applied_ones_each_get_duplicate(
    ctx: Context, enqueuer: Enqueuer
) -> None:
    assert await enqueuer.enqueue(_signed(1), inbox_handle=None) == Queued.QUEUED
    async with ctx.sessions() as session, session.begin():
        applied = _signed(2).raw
        session.add(
            InboxActivity(uri=str(applied["id"]), actor_uri=ACTOR, type="Create", document=applied)
        )
    outcomes = await asyncio.gather(
        enqueuer.enqueue(_signed(1), inbox_handle=None),  # still queued
        enqueuer.enqueue(_signed(2), inbox_handle=None),  # already applied
        enqueuer.enqueue(_signed(3), inbox_handle=None),
        enqueuer.enqueue(_signed(3), inbox_handle=None),  # twice in one batch
    )
    assert outcomes == [Queued.DUPLICATE, Queued.DUPLICATE, Queued.QUEUED, Queued.DUPLICATE]
    assert [r.activity_uri for r in await _rows(ctx)] == [
        str(_signed(1).raw["id"]),
        str(_signed(3).raw["id"]),
    ]


async def test_a_failed_batch_is_written_one_by_one_each_with_its_outcome(
    ctx: Context, enqueuer: Enqueuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(self: Enqueuer, batch: Any) -> list[Queued]:
        raise RuntimeError("the batch failed as a whole")

    monkeypatch.setattr(Enqueuer, "_store", failing)
    await inbox_queue.enqueue(ctx, _signed(1), inbox_handle=None)
    outcomes = await asyncio.gather(
        *(enqueuer.enqueue(_signed(n), inbox_handle=None) for n in (1, 2, 3))
    )
    assert outcomes == [Queued.DUPLICATE, Queued.QUEUED, Queued.QUEUED]
    assert len(await _rows(ctx)) == 3


async def test_a_request_that_goes_away_does_not_cancel_the_write(
    ctx: Context, enqueuer: Enqueuer
) -> None:
    request = asyncio.ensure_future(enqueuer.enqueue(_signed(1), inbox_handle=None))
    await asyncio.sleep(0)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await enqueuer.aclose()  # waits for what the writer holds
    [row] = await _rows(ctx)
    assert row.activity_uri == str(_signed(1).raw["id"])


async def test_a_queued_activity_wakes_the_inbox_worker(ctx: Context, enqueuer: Enqueuer) -> None:
    ctx.inbox_wake.clear()
    await enqueuer.enqueue(_signed(1), inbox_handle=None)
    assert ctx.inbox_wake.is_set()
    ctx.inbox_wake.clear()
    await enqueuer.enqueue(_signed(1), inbox_handle=None)  # a duplicate: nothing new to do
    assert not ctx.inbox_wake.is_set()
