"""ActivityPub relays: the instance subscribes, then every public communiqué goes to the
relay as well, and the relay's Announces of other servers' posts are accepted.

The subscription is the one Mastodon and the common relays (pub-relay, ActivityRelay,
aode-relay) speak: the instance actor sends ``Follow`` with ``object`` the Public collection
to the relay's inbox, and the relay answers ``Accept``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub import outbox
from server.activitypub.vocab import PUBLIC
from server.context import Context
from server.errors import BadRequest, Conflict, NotFound
from server.following import resolve_actor
from server.models import Following, FollowStatus


def actor_url(url: str) -> str:
    """What the admin pasted: the relay's actor URL, or its inbox URL (what Mastodon asks
    for), from which the usual /actor is derived."""
    url = url.strip()
    if not url.startswith(("https://", "http://")) or len(url) > 2048:
        raise BadRequest("give the relay's URL, e.g. https://relay.example/inbox", field="url")
    if url.rstrip("/").endswith("/inbox"):
        return url.rstrip("/").removesuffix("/inbox") + "/actor"
    return url


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
    # The instance actor subscribes (assembly None): the worker signs with the instance key.
    sent = await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=None,
        activity_type="Follow",
        obj=PUBLIC,
        to=[relay.uri],
        inboxes=[relay.inbox_uri],
        public=False,
        now=now,
    )
    row = Following(
        assembly_id=None,
        target_uri=relay.uri,
        inbox_uri=relay.inbox_uri,
        follow_uri=sent.activity.uri,
        status=FollowStatus.PENDING,
        is_relay=True,
        created_at=now,
    )
    session.add(row)
    await session.flush()
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
    await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=None,
        activity_type="Undo",
        obj=follow,
        to=[row.target_uri],
        inboxes=[row.inbox_uri],
        public=False,
        now=now,
    )
    await session.delete(row)
    await session.flush()
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
