"""Inbox forwarding (ActivityPub §7.1.2): an activity about one of our communiqués that
addresses the author assembly's followers is passed on to them, as it arrived.

The typical case is a co-signature: assembly A announces B's communiqué with B's followers
collection in ``cc``; A cannot know who follows B, so B forwards the Announce. The copy is
signed by B (the forwarder); a receiver that insists on the key owner being the actor
dereferences the activity's id at its origin instead (it is public there).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import communiques
from server.activitypub import delivery, outbox
from server.activitypub.actors import origin_of
from server.activitypub.jsonld import as_list, id_of
from server.context import Context
from server.errors import NotFound
from server.models import Activity

Doc = dict[str, Any]


async def forward_to_followers(
    session: AsyncSession,
    ctx: Context,
    *,
    activity: Doc,
    raw: Doc,
    object_uri: str,
    now: datetime,
) -> int:
    """Queue ``raw`` for the followers of the assembly that wrote ``object_uri``, if the
    activity addresses that assembly's followers collection. Returns the deliveries queued."""
    try:
        assembly, item = await communiques.find_by_url(session, ctx.urls, object_uri)
    except NotFound:
        return 0
    followers = ctx.urls.followers(assembly.handle)
    addressed = {id_of(v) for key in ("to", "cc", "audience") for v in as_list(activity.get(key))}
    if followers not in addressed or item.deleted_at is not None:
        return 0
    uri = str(activity["id"])
    if await session.scalar(select(Activity.id).where(Activity.uri == uri)) is not None:
        return 0  # forwarded already
    # The sender's own server has it already.
    sender = origin_of(id_of(activity.get("actor")) or uri)
    inboxes = [
        inbox
        for inbox in await delivery.follower_inboxes(session, assembly.id)
        if origin_of(inbox) != sender
    ]
    if not inboxes:
        return 0
    forwarded = await outbox.forward(
        session,
        ctx.wake,
        uri=uri,
        document=raw,
        activity_type=str(activity.get("type", "Announce")),
        assembly_id=assembly.id,
        communique_id=item.id,
        inboxes=inboxes,
        now=now,
    )
    return len(forwarded.deliveries)
