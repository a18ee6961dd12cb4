"""Outgoing delivery: which inboxes, how rows are queued, how attempts are judged and retried.

Delivery is data: one ``deliveries`` row per (activity, inbox). The worker claims due rows,
signs each attempt afresh and records every attempt in ``delivery_attempts``.

Nothing is ever sent to a blocked domain (or a subdomain of one): such rows are recorded as
failed with ``last_error = "domain blocked"``, at queueing time or, for rows queued before
the block, when the worker comes to them. The lookups live here, below the domain services,
because the inbox, the worker and server.moderation all need them.
"""

from __future__ import annotations

import enum
import functools
import json
import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub import hosts
from server.models import (
    Activity,
    Delivery,
    DeliveryStatus,
    DomainBlock,
    Follower,
    FollowerStatus,
    RemoteActor,
)

BASE_DELAY = timedelta(minutes=1)
MAX_DELAY = timedelta(hours=24)
MAX_RETRY_AFTER = timedelta(days=2)
DOMAIN_BLOCKED = "domain blocked"


# -- domain blocks ------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # pure, and asked for on every inbox POST
def ascii_host(host: str) -> str:
    """A host name as blocks are stored: lower-case, no trailing dot, IDNA (punycode)."""
    host = host.strip().lower().rstrip(".")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:  # not a valid IDNA name: compare it as it is
        return host


def host_of_uri(uri: str) -> str:
    try:
        return ascii_host(urlsplit(uri).hostname or "")
    except ValueError:  # urlsplit refuses some malformed netlocs
        return ""


_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=4096)
def host_key(uri: str) -> str:
    """The server an inbox belongs to, as host health and the per-host cap know it: the
    host as :func:`ascii_host` writes it, with the port when it is not the scheme's own
    (``social.example``, ``127.0.0.1:8081``)."""
    try:
        parts = urlsplit(uri)
        host, port = ascii_host(parts.hostname or ""), parts.port
    except ValueError:
        return ""
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{port}"[:300]
    return host[:300]


def covering_domains(host: str) -> list[str]:
    """The host and every parent domain: a block of any of them covers the host.

    >>> covering_domains("a.social.example")
    ['a.social.example', 'social.example', 'example']
    """
    labels = ascii_host(host).split(".")
    return [".".join(labels[i:]) for i in range(len(labels)) if labels[i]]


def is_blocked_host(host: str, blocked: Collection[str]) -> bool:
    return bool(blocked) and any(d in blocked for d in covering_domains(host))


async def blocked_domains(session: AsyncSession) -> frozenset[str]:
    """Every blocked domain (a short list, read once per batch)."""
    return frozenset((await session.scalars(select(DomainBlock.domain))).all())


async def blocking_domain(session: AsyncSession, uri: str) -> str | None:
    """The blocked domain covering ``uri``'s host, or None."""
    host = host_of_uri(uri)
    if not host:
        return None
    query = select(DomainBlock.domain).where(DomainBlock.domain.in_(covering_domains(host)))
    return (await session.scalars(query.limit(1))).first()


# -- queueing -----------------------------------------------------------------------------


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
    """Queue the activity for each distinct inbox, in the caller's transaction.

    An inbox on a blocked domain gets a row too, already failed with "domain blocked": no
    request is ever made, and the record says why nothing was sent. One on an unavailable
    host (server/activitypub/hosts.py) is recorded as skipped, "host unavailable".
    """
    existing = set(
        (
            await session.scalars(
                select(Delivery.inbox_uri).where(Delivery.activity_id == activity.id)
            )
        ).all()
    )
    blocked = await blocked_domains(session)
    wanted = [inbox for inbox in dict.fromkeys(inboxes) if inbox not in existing]
    skipped = await hosts.skipped_hosts(session, map(host_key, wanted), now=now)
    rows = []
    for inbox in wanted:
        host = host_key(inbox)
        row = Delivery(
            activity_id=activity.id,
            inbox_uri=inbox,
            host=host,
            next_attempt_at=now,
            created_at=now,
        )
        if is_blocked_host(host_of_uri(inbox), blocked):
            row.status = DeliveryStatus.FAILED
            row.last_error = DOMAIN_BLOCKED
        elif host in skipped:
            row.status = DeliveryStatus.SKIPPED
            row.last_error = hosts.HOST_UNAVAILABLE
        rows.append(row)
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
