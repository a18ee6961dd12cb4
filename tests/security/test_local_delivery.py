"""Hostile cases of deliveries to our own inboxes (server/federation/local.py) and of keys
that claim to be ours.

A local delivery skips only the transport: a document whose actor is not the signer is
refused as over HTTP, nothing is queued, and the refusal is recorded on the delivery. A POST
from outside signed with a key id of ours is checked against the key in our database, never
fetched from ourselves, and a suspended assembly's key signs nothing.
"""

from __future__ import annotations

from sqlalchemy import select

from server import assemblies, worker
from server.activitypub.vocab import build_activity
from server.context import Context
from server.federation import inbox_queue
from server.models import (
    Activity,
    Assembly,
    Delivery,
    DeliveryStatus,
    InboxItem,
)
from server.urls import new_public_id
from tests.helpers import approved_assembly
from tests.security.support import AS, signed_post
from tests.support.peer import pooled_key
from tests.support.servers import ServerThread


async def _deliver_locally(ctx: Context, *, author: str, document: dict[str, object]) -> Delivery:
    """Queue ``document`` as an activity of ``author`` for plaza's inbox, and run the worker."""
    async with ctx.sessions() as session, session.begin():
        assembly = (await session.scalars(select(Assembly).where(Assembly.handle == author))).one()
        public_id = new_public_id()
        activity = Activity(
            public_id=public_id,
            uri=ctx.urls.activity(public_id),
            assembly_id=assembly.id,
            type=str(document["type"]),
            document=document,
            public=False,
            created_at=ctx.clock(),
        )
        session.add(activity)
        await session.flush()
        session.add(
            Delivery(
                activity_id=activity.id,
                inbox_uri=ctx.urls.inbox("plaza"),
                host=ctx.urls.host,
                next_attempt_at=ctx.clock(),
                created_at=ctx.clock(),
            )
        )
    assert await worker.run_once(ctx) == 1
    async with ctx.sessions() as session:
        return (await session.scalars(select(Delivery))).one()


async def test_a_local_delivery_whose_actor_is_not_its_signer_is_refused(ctx: Context) -> None:
    await approved_assembly(ctx, "sol")
    await approved_assembly(ctx, "plaza")
    # sol's key signs a Follow that says plaza's neighbour "mallory" sent it.
    await approved_assembly(ctx, "mallory")
    forged = build_activity(
        activity_id=ctx.urls.activity(new_public_id()),
        activity_type="Follow",
        actor_id=ctx.urls.actor("mallory"),
        obj=ctx.urls.actor("plaza"),
        to=[ctx.urls.actor("plaza")],
        cc=None,
        published=ctx.clock(),
        context=None,
    )
    row = await _deliver_locally(ctx, author="sol", document=forged)
    assert row.status is DeliveryStatus.FAILED and row.last_status == 401
    assert row.last_error and "does not belong to the activity's actor" in row.last_error
    async with ctx.sessions() as session:
        assert (await session.scalars(select(InboxItem))).first() is None
    assert await inbox_queue.drain(ctx) == 0


async def test_a_local_delivery_larger_than_an_inbox_takes_is_refused(ctx: Context) -> None:
    await approved_assembly(ctx, "sol")
    await approved_assembly(ctx, "plaza")
    huge = build_activity(
        activity_id=ctx.urls.activity(new_public_id()),
        activity_type="Note",
        actor_id=ctx.urls.actor("sol"),
        obj={"type": "Note", "content": "x" * (ctx.settings.max_body_bytes + 1)},
        to=[f"{AS}#Public"],
        cc=None,
        published=ctx.clock(),
        context=None,
    )
    row = await _deliver_locally(ctx, author="sol", document=huge)
    assert row.status is DeliveryStatus.FAILED and row.last_status == 413
    async with ctx.sessions() as session:
        assert (await session.scalars(select(InboxItem))).first() is None


async def test_a_post_signed_with_a_wrong_key_under_our_key_id_is_refused(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "sol")
    await approved_assembly(ctx, "plaza")
    activity = {
        "@context": AS,
        "id": ctx.urls.actor("sol") + "/follows/1",
        "type": "Follow",
        "actor": ctx.urls.actor("sol"),
        "object": ctx.urls.actor("plaza"),
    }
    answer = await signed_post(
        ctx.urls.inbox("plaza"),
        activity,
        key_id=ctx.urls.key_id("sol"),
        private_key=pooled_key(),  # not sol's
    )
    assert answer.status_code == 401
    # Verified against sol's key in our database: no "could not obtain the signing key",
    # which a fetch from ourselves would have led to.
    assert "signature not verified" in answer.json()["error"]


async def test_a_suspended_assemblys_key_signs_nothing(ctx: Context, server: ServerThread) -> None:
    await approved_assembly(ctx, "sol")
    await approved_assembly(ctx, "plaza")
    async with ctx.sessions() as session, session.begin():
        key_pem = (
            await session.scalars(select(Assembly.private_key_pem).where(Assembly.handle == "sol"))
        ).one()
        await assemblies.suspend(session, "sol", now=ctx.clock())
    activity = {
        "@context": AS,
        "id": ctx.urls.actor("sol") + "/follows/2",
        "type": "Follow",
        "actor": ctx.urls.actor("sol"),
        "object": ctx.urls.actor("plaza"),
    }
    answer = await signed_post(
        ctx.urls.inbox("plaza"),
        activity,
        key_id=ctx.urls.key_id("sol"),
        private_key=ctx.private_key(key_pem),  # type: ignore[arg-type]
    )
    assert answer.status_code == 401
    assert "no such key on this instance" in answer.json()["error"]
    async with ctx.sessions() as session:
        assert (await session.scalars(select(InboxItem))).first() is None
