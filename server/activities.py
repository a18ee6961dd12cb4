"""Recording the activities we publish, so they can be delivered and dereferenced."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub.vocab import build_activity
from server.models import Activity, Assembly
from server.urls import Urls, new_public_id


async def record(
    session: AsyncSession,
    urls: Urls,
    *,
    assembly: Assembly,
    activity_type: str,
    obj: dict[str, Any] | str,
    to: list[str],
    cc: list[str] | None = None,
    public: bool,
    now: datetime,
    communique_id: int | None = None,
    context: list[Any] | None = None,
) -> Activity:
    public_id = new_public_id()
    uri = urls.activity(public_id)
    document = build_activity(
        activity_id=uri,
        activity_type=activity_type,
        actor_id=urls.actor(assembly.handle),
        obj=obj,
        to=to,
        cc=cc,
        published=now,
        context=context,
    )
    activity = Activity(
        public_id=public_id,
        uri=uri,
        assembly_id=assembly.id,
        communique_id=communique_id,
        type=activity_type,
        document=document,
        public=public,
        created_at=now,
    )
    session.add(activity)
    await session.flush()
    return activity
