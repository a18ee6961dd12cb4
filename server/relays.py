"""ActivityPub relays: the instance subscribes, then every public communiqué goes to the
relay as well, and the relay's Announces of other servers' posts are accepted.

The subscription is the one Mastodon and the common relays (pub-relay, ActivityRelay,
aode-relay) speak: the instance actor sends ``Follow`` with ``object`` the Public collection
to the relay's inbox, and the relay answers ``Accept``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub import delivery
from server.activitypub.vocab import PUBLIC, build_activity
from server.context import Context
from server.errors import BadRequest, Conflict, NotFound
from server.following import resolve_actor
from server.models import Activity, Following, FollowStatus
from server.urls import new_public_id


def actor_url(url: str) -> str:
    """What the admin pasted: the relay's actor URL, or its inbox URL (what Mastodon asks
    for), from which the usual /actor is derived."""
    url = url.strip()
    if not url.startswith(("https://", "http://")) or len(url) > 2048:
        raise BadRequest("give the relay's URL, e.g. https://relay.example/inbox", field="url")
    if url.rstrip("/").endswith("/inbox"):
        return url.rstrip("/").removesuffix("/inbox") + "/actor"
    return url


async def _record(
    session: AsyncSession, ctx: Context, *, activity_type: str, obj: Any, to: str, now: datetime
) -> Activity:
    public_id = new_public_id()
    uri = ctx.urls.activity(public_id)
    activity = Activity(
        public_id=public_id,
        uri=uri,
        assembly_id=None,  # the instance actor's: the worker signs with the instance key
        type=activity_type,
        document=build_activity(
            activity_id=uri,
            activity_type=activity_type,
            actor_id=ctx.urls.instance_actor(),
            obj=obj,
            to=[to],
            published=now,
        ),
        public=False,
        created_at=now,
    )
    session.add(activity)
    await session.flush()
    return activity


async def subscribe(session: AsyncSession, ctx: Context, *, url: str, now: datetime) -> Following:
    relay = await resolve_actor(session, ctx, actor_url(url))
    existing = (
        await session.scalars(
            select(Following).where(
                Following.assembly_id.is_(None), Following.target_uri == relay.uri
            )
        )
    ).first()
    if existing is not None:
        raise Conflict("this instance already subscribes to that relay", field="url")
    activity = await _record(
        session, ctx, activity_type="Follow", obj=PUBLIC, to=relay.uri, now=now
    )
    row = Following(
        assembly_id=None,
        target_uri=relay.uri,
        inbox_uri=relay.inbox_uri,
        follow_uri=activity.uri,
        status=FollowStatus.PENDING,
        is_relay=True,
        created_at=now,
    )
    session.add(row)
    await delivery.enqueue(session, activity, [relay.inbox_uri], now=now)
    await session.flush()
    ctx.wake.set()
    return row


async def unsubscribe(
    session: AsyncSession, ctx: Context, *, relay_id: int, now: datetime
) -> Following:
    row = await session.get(Following, relay_id)
    if row is None or not row.is_relay or row.assembly_id is not None:
        raise NotFound("no such relay subscription")
    follow = {
        "id": row.follow_uri,
        "type": "Follow",
        "actor": ctx.urls.instance_actor(),
        "object": PUBLIC,
    }
    activity = await _record(
        session, ctx, activity_type="Undo", obj=follow, to=row.target_uri, now=now
    )
    await delivery.enqueue(session, activity, [row.inbox_uri], now=now)
    await session.delete(row)
    await session.flush()
    ctx.wake.set()
    return row


async def relays(session: AsyncSession) -> Sequence[Following]:
    query = (
        select(Following)
        .where(Following.is_relay.is_(True), Following.assembly_id.is_(None))
        .order_by(Following.created_at)
    )
    return (await session.scalars(query)).all()


async def inboxes(session: AsyncSession) -> list[str]:
    """Where public communiqués also go: every relay that accepted us."""
    return [r.inbox_uri for r in await relays(session) if r.status == FollowStatus.ACCEPTED]


async def is_relay(session: AsyncSession, actor_uri: str) -> bool:
    found = await session.scalar(
        select(Following.id).where(
            Following.is_relay.is_(True),
            Following.target_uri == actor_uri,
            Following.status == FollowStatus.ACCEPTED,
        )
    )
    return found is not None
