"""Deliveries to an inbox of this instance go through the inbox pipeline in-process.

Two assemblies of one instance follow each other with no HTTP server running and private
addresses refused, as on an instance behind NAT that cannot reach its own public address:
the Follow and the Accept are signed, verified and queued exactly as over the network, and
nothing is fetched or posted.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from server import following, worker
from server.config import Settings
from server.context import create_context
from server.federation import inbox_queue
from server.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Follower,
    FollowerStatus,
    Following,
    FollowStatus,
    InboxActivity,
)
from tests.helpers import approved_assembly, post
from tests.support.servers import free_port


async def test_two_assemblies_of_one_instance_follow_without_http(settings: Settings) -> None:
    # Nothing listens at the base URL, and the client refuses loopback addresses.
    local = replace(
        settings, base_url=f"http://127.0.0.1:{free_port()}", allow_private_addresses=False
    )
    ctx = await create_context(local)
    try:
        await approved_assembly(ctx, "sol")
        await approved_assembly(ctx, "plaza")
        async with ctx.sessions() as session, session.begin():
            await following.follow(
                session, ctx, handle="sol", target=ctx.urls.actor("plaza"), now=ctx.clock()
            )
        # The Follow, then the Accept, each delivered in-process and applied by the worker.
        for _ in range(2):
            assert await worker.run_once(ctx) == 1
            assert await inbox_queue.drain(ctx) == 1
        published = await post(ctx, "plaza", "Assembly tonight at seven.")
        assert await worker.run_once(ctx) == 1
        assert await inbox_queue.drain(ctx) == 1

        async with ctx.sessions() as session:
            follow = (await session.scalars(select(Following))).one()
            follower = (await session.scalars(select(Follower))).one()
            rows = (await session.scalars(select(Delivery))).all()
            attempts = (await session.scalars(select(DeliveryAttempt))).all()
            received = (await session.scalars(select(InboxActivity.type))).all()
        assert follow.status is FollowStatus.ACCEPTED
        assert follower.status is FollowerStatus.ACCEPTED
        assert {r.status for r in rows} == {DeliveryStatus.DELIVERED}
        assert [a.status_code for a in attempts] == [202, 202, 202]
        assert sorted(received) == ["Accept", "Create", "Follow"]
        assert published.deliveries == 1
    finally:
        await ctx.aclose()
