"""server.activitypub.outbox: one send records the activity, queues its deliveries and wakes
the delivery worker, and the wake waits for the commit.

A wake set before the commit sends the worker looking for rows it cannot see yet; one set
for a transaction that rolls back sends it looking for rows that never come. Each test uses
its own event, so nothing else in the process can set it.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assemblies, moderation
from server.activitypub import outbox
from server.activitypub.vocab import PUBLIC
from server.context import Context
from server.models import Activity, Delivery, DeliveryStatus
from tests.helpers import approved_assembly, count

ALICE = "https://one.example/users/alice/inbox"
SHARED = "https://two.example/inbox"
BLOCKED = "https://spam.blocked.example/inbox"


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


@pytest.fixture
async def ga(ctx: Context) -> Context:
    """An approved assembly @ga, and blocked.example blocked (its subdomains with it)."""
    await approved_assembly(ctx, "ga")
    async with ctx.sessions() as session, session.begin():
        await moderation.block_domain(
            session, domain="blocked.example", reason="", own_host=ctx.urls.host, now=ctx.clock()
        )
    return ctx


async def send_note(
    ctx: Context, session: AsyncSession, wake: asyncio.Event, inboxes: list[str]
) -> outbox.Sent:
    return await outbox.send(
        session,
        ctx.urls,
        wake,
        assembly=await assemblies.get(session, "ga"),
        activity_type="Create",
        obj={"id": "https://one.example/notes/1", "type": "Note", "content": "hi"},
        to=[PUBLIC],
        cc=[ctx.urls.followers("ga")],
        inboxes=inboxes,
        public=True,
        now=ctx.clock(),
    )


async def test_a_committed_send_records_queues_and_wakes_after_commit(ga: Context) -> None:
    ctx, wake = ga, asyncio.Event()
    async with ctx.sessions() as session, session.begin():
        sent = await send_note(ctx, session, wake, [ALICE, SHARED, ALICE, BLOCKED])
        assert not wake.is_set()  # the rows are not visible to the worker yet
        activity_uri = sent.activity.uri
    assert wake.is_set()

    async with ctx.sessions() as session:
        [activity] = (await session.scalars(select(Activity))).all()
        rows = (await session.scalars(select(Delivery).order_by(Delivery.id))).all()
    assert activity.uri == activity_uri and activity.type == "Create"
    assert activity.assembly_id is not None and activity.public
    assert activity.document["actor"] == ctx.urls.actor("ga")
    assert activity.document["id"] == activity_uri
    assert activity.document["cc"] == [ctx.urls.followers("ga")]
    # One row per distinct inbox; the blocked domain's recorded failed, never attempted.
    assert [(r.inbox_uri, r.status, r.last_error) for r in rows] == [
        (ALICE, DeliveryStatus.PENDING, None),
        (SHARED, DeliveryStatus.PENDING, None),
        (BLOCKED, DeliveryStatus.FAILED, "domain blocked"),
    ]
    assert all(r.activity_id == activity.id for r in rows)


async def test_a_rolled_back_send_leaves_no_rows_and_no_wake(ga: Context) -> None:
    ctx, wake = ga, asyncio.Event()
    async with ctx.sessions() as session:
        with pytest.raises(Rollback):
            async with session.begin():
                await send_note(ctx, session, wake, [ALICE])
                raise Rollback
        assert not wake.is_set()
        # The wake was forgotten with the transaction: a later commit on the same session
        # that sends nothing does not set it.
        async with session.begin():
            pass
    assert not wake.is_set()
    assert await count(ctx, Activity) == 0
    assert await count(ctx, Delivery) == 0


async def test_a_session_closed_without_commit_does_not_wake(ga: Context) -> None:
    ctx, wake = ga, asyncio.Event()
    async with ctx.sessions() as session:
        await send_note(ctx, session, wake, [ALICE])
    assert not wake.is_set()
    assert await count(ctx, Activity) == 0


async def test_many_sends_one_transaction_one_wake_after_commit(ga: Context) -> None:
    ctx, wake = ga, asyncio.Event()
    async with ctx.sessions() as session, session.begin():
        await send_note(ctx, session, wake, [ALICE])
        await send_note(ctx, session, wake, [SHARED])
        assert not wake.is_set()
    assert wake.is_set()
    assert await count(ctx, Activity) == 2 and await count(ctx, Delivery) == 2


async def test_a_savepoint_does_not_wake_before_the_outer_commit(ga: Context) -> None:
    ctx, wake = ga, asyncio.Event()
    async with ctx.sessions() as session, session.begin():
        async with session.begin_nested():
            await send_note(ctx, session, wake, [ALICE])
        assert not wake.is_set()  # released, but the outer transaction is still open
    assert wake.is_set()


async def test_nothing_to_deliver_no_wake(ga: Context) -> None:
    """Only blocked inboxes: the rows are recorded failed, and there is nothing to wake for."""
    ctx, wake = ga, asyncio.Event()
    async with ctx.sessions() as session, session.begin():
        sent = await send_note(ctx, session, wake, [BLOCKED])
    assert [r.status for r in sent.deliveries] == [DeliveryStatus.FAILED]
    assert not wake.is_set()


async def test_the_instance_actor_sends_without_an_assembly(ctx: Context) -> None:
    wake = asyncio.Event()
    async with ctx.sessions() as session, session.begin():
        sent = await outbox.send(
            session,
            ctx.urls,
            wake,
            assembly=None,
            activity_type="Follow",
            obj=PUBLIC,
            to=["https://relay.example/actor"],
            inboxes=["https://relay.example/inbox"],
            public=False,
            now=ctx.clock(),
        )
    assert wake.is_set()
    assert sent.activity.assembly_id is None
    assert sent.activity.document["actor"] == ctx.urls.instance_actor()
    assert "cc" not in sent.activity.document


async def test_a_forward_is_recorded_under_its_own_id_as_it_arrived(ga: Context) -> None:
    ctx, wake = ga, asyncio.Event()
    raw = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": "https://one.example/announces/7",
        "type": "Announce",
        "actor": "https://one.example/users/alice",
        "object": "https://one.example/notes/1",
    }
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "ga")
        sent = await outbox.forward(
            session,
            wake,
            uri=raw["id"],
            document=raw,
            activity_type="Announce",
            assembly_id=assembly.id,
            communique_id=None,
            inboxes=[SHARED],
            now=ctx.clock(),
        )
        assert not wake.is_set()
    assert wake.is_set()
    assert sent.activity.uri == raw["id"] and sent.activity.document == raw
    assert not sent.activity.public
    assert [r.inbox_uri for r in sent.deliveries] == [SHARED]
