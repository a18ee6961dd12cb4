"""Outgoing delivery: which inboxes, how rows are queued, how attempts are judged and retried.

Delivery is data: one ``deliveries`` row per (activity, inbox). The worker claims due rows,
signs each attempt afresh and records every attempt in ``delivery_attempts``.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.models import Activity, Delivery, Follower, FollowerStatus, RemoteActor

BASE_DELAY = timedelta(minutes=1)
MAX_DELAY = timedelta(hours=24)
MAX_RETRY_AFTER = timedelta(days=2)


async def follower_inboxes(session: AsyncSession, assembly_id: int) -> list[str]:
    """One inbox per follower server: the shared inbox when it has one, else each inbox."""
    rows = await session.execute(
        select(RemoteActor.shared_inbox_uri, RemoteActor.inbox_uri)
        .join(Follower, Follower.actor_id == RemoteActor.id)
        .where(Follower.assembly_id == assembly_id, Follower.status == FollowerStatus.ACCEPTED)
        .order_by(RemoteActor.id)
    )
    return list(dict.fromkeys(shared or inbox for shared, inbox in rows))


async def enqueue(
    session: AsyncSession, activity: Activity, inboxes: Iterable[str], *, now: datetime
) -> list[Delivery]:
    """Queue the activity for each distinct inbox, in the caller's transaction."""
    existing = set(
        (
            await session.scalars(
                select(Delivery.inbox_uri).where(Delivery.activity_id == activity.id)
            )
        ).all()
    )
    rows = [
        Delivery(activity_id=activity.id, inbox_uri=inbox, next_attempt_at=now, created_at=now)
        for inbox in dict.fromkeys(inboxes)
        if inbox not in existing
    ]
    session.add_all(rows)
    await session.flush()
    return rows


def next_delay(attempts: int, rng: random.Random | None = None) -> timedelta:
    """Exponential backoff after the n-th failed attempt: 1 min, 2, 4 … capped at a day.

    With the default 16 attempts the schedule spreads over about six days. A jitter of
    ±10 % keeps many deliveries to one recovering server from arriving together.
    """
    base: timedelta = BASE_DELAY * (2 ** max(0, min(attempts - 1, 20)))
    delay = min(base, MAX_DELAY)
    jitter = (rng or random).uniform(-0.1, 0.1)
    return delay + delay * jitter


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


def classify(status: int | None) -> Outcome:
    """2xx delivered; no answer, 408, 429 and 5xx worth retrying; any other 4xx final."""
    if status is None:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in {408, 429} or status >= 500:
        return Outcome.RETRY
    # 3xx is not followed for a signed POST; treat like other client errors.
    return Outcome.FAILED


def retry_after(value: str | None, *, now: datetime) -> timedelta | None:
    """The delay a Retry-After header asks for (seconds or HTTP date), bounded."""
    if not value:
        return None
    value = value.strip()
    delay: timedelta | None = None
    if value.isascii() and value.isdigit():  # not "²" or "١٢", which isdigit() accepts
        digits = value.lstrip("0") or "0"
        if len(digits) > 9:  # decades: only the bound matters, and timedelta would overflow
            return MAX_RETRY_AFTER
        delay = timedelta(seconds=int(digits))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        delay = when - now
    if delay < timedelta(0):
        return timedelta(0)
    return min(delay, MAX_RETRY_AFTER)


@dataclass(frozen=True)
class Schedule:
    outcome: Outcome
    next_attempt_at: datetime | None


def schedule(
    *,
    status: int | None,
    attempts: int,
    max_attempts: int,
    now: datetime,
    retry_after_header: str | None = None,
    rng: random.Random | None = None,
) -> Schedule:
    """What happens after attempt number ``attempts`` answered ``status`` (None: no answer)."""
    outcome = classify(status)
    if outcome is not Outcome.RETRY:
        return Schedule(outcome, None)
    if attempts >= max_attempts:
        return Schedule(Outcome.FAILED, None)
    delay = next_delay(attempts, rng)
    asked = retry_after(retry_after_header, now=now) if status in {429, 503} else None
    if asked is not None and asked > delay:
        delay = asked
    return Schedule(Outcome.RETRY, now + delay)


def activity_body(activity: Activity) -> bytes:
    return json.dumps(activity.document, ensure_ascii=False, separators=(",", ":")).encode()
