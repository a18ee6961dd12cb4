"""server.followers: the policy for an incoming Follow, applied to rows already resolved.

No peer and no HTTP: the policy never touches the network (the inbox fetches the follower's
actor before calling in), so a RemoteActor row made here is all it needs.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from server import assemblies, followers, instance
from server.context import Context
from server.errors import NotFound
from server.models import Activity, Delivery, Follower, FollowerStatus, RemoteActor
from tests.helpers import approved_assembly, count

ACTOR = "https://one.example/users/alice"
INBOX = "https://one.example/users/alice/inbox"


async def _actor(ctx: Context) -> None:
    async with ctx.sessions() as session, session.begin():
        session.add(
            RemoteActor(
                uri=ACTOR,
                domain="one.example",
                preferred_username="alice",
                inbox_uri=INBOX,
                shared_inbox_uri="https://one.example/inbox",
                fetched_at=ctx.clock(),
            )
        )


async def receive(ctx: Context, handle: str, follow_uri: str) -> bool:
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        actor = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == ACTOR))).one()
        return await followers.receive_follow(
            session, ctx, assembly=assembly, actor=actor, follow_uri=follow_uri, now=ctx.clock()
        )


async def follower(ctx: Context) -> Follower:
    async with ctx.sessions() as session:
        return (await session.scalars(select(Follower))).one()


async def test_accepted_at_once_then_one_accept_only(ctx: Context) -> None:
    await approved_assembly(ctx, "ga")
    await _actor(ctx)
    ctx.wake.clear()
    assert await receive(ctx, "ga", "https://one.example/follows/1") is True
    assert ctx.wake.is_set()  # the Accept is committed: the worker may deliver it
    row = await follower(ctx)
    assert (row.status, row.held_for_admin) == (FollowerStatus.ACCEPTED, False)
    async with ctx.sessions() as session:
        [accept] = (await session.scalars(select(Activity))).all()
        [queued] = (await session.scalars(select(Delivery))).all()
    assert accept.type == "Accept"
    assert accept.document["object"] == {
        "id": "https://one.example/follows/1",
        "type": "Follow",
        "actor": ACTOR,
        "object": ctx.urls.actor("ga"),
    }
    assert queued.inbox_uri == INBOX  # the follower's own inbox, not the shared one

    # Asked again: acknowledged (ignored), the new Follow id kept, no second Accept.
    assert await receive(ctx, "ga", "https://one.example/follows/2") is False
    assert (await follower(ctx)).follow_uri == "https://one.example/follows/2"
    assert await count(ctx, Activity) == 1


async def test_an_assembly_that_approves_by_hand_holds_the_request(ctx: Context) -> None:
    await approved_assembly(ctx, "careful", manually_approves_followers=True)
    await _actor(ctx)
    assert await receive(ctx, "careful", "https://one.example/follows/1") is True
    row = await follower(ctx)
    assert (row.status, row.held_for_admin) == (FollowerStatus.PENDING, False)
    assert await count(ctx, Activity) == 0
    # A repeated request still waits, answering to the newest Follow id.
    assert await receive(ctx, "careful", "https://one.example/follows/2") is True
    assert (await follower(ctx)).follow_uri == "https://one.example/follows/2"
    assert await count(ctx, Activity) == 0


async def test_the_instance_follow_approval_holds_it_for_the_admin(ctx: Context) -> None:
    await approved_assembly(ctx, "ga")
    await _actor(ctx)
    async with ctx.sessions() as session, session.begin():
        info = await instance.load(session, ctx.settings)
        await instance.save(
            session,
            name=info.name,
            description=info.description,
            rules=info.rules,
            registration_mode=info.registration_mode.value,
            follow_approval=True,
        )
    assert await receive(ctx, "ga", "https://one.example/follows/1") is True
    row = await follower(ctx)
    assert (row.status, row.held_for_admin) == (FollowerStatus.PENDING, True)
    assert await count(ctx, Activity) == 0

    async with ctx.sessions() as session, session.begin():
        entry = await followers.approve_held_follow(
            session, ctx, follower_id=row.id, now=ctx.clock()
        )
    assert entry.status == FollowerStatus.ACCEPTED
    assert await count(ctx, Activity, Activity.type == "Accept") == 1


async def test_only_an_approved_assembly_can_be_followed(ctx: Context) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(session, handle="early", name="Not approved yet")
    await _actor(ctx)
    with pytest.raises(NotFound):
        await receive(ctx, "early", "https://one.example/follows/1")
    assert await count(ctx, Follower) == 0
