"""The outbox: everything we send goes through :func:`send` (or :func:`forward`).

Sending an activity is three steps that belong together: record the ``activities`` row (what
the activity's id dereferences to, and what the worker signs and posts), queue one
``deliveries`` row per inbox (server/activitypub/delivery.py), and wake the in-process
delivery worker. The wake is the step a call site forgets or gets wrong: set before the
commit, the worker looks for rows it cannot see yet and goes back to sleep for its idle
interval; set for a transaction that then rolls back, it looks for rows that never came. So
the wake is tied to the session here and fires only once the transaction has committed.

This is protocol machinery (ids, documents, queueing), with no domain decision in it: the
domain modules decide what to send and to whom, then call :func:`send` in their transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from server.activitypub import delivery, proofs
from server.activitypub.vocab import build_activity
from server.models import Activity, Assembly, Delivery, DeliveryStatus
from server.urls import Urls, new_public_id

# Session.info keys: the wakes owed once the transaction commits, and whether this session
# already has the listeners that settle them.
_PENDING = "interocc.outbox.pending_wakes"
_LISTENING = "interocc.outbox.listening"


@dataclass(frozen=True)
class Sent:
    """What :func:`send` stored: the activity, and its delivery rows (blocked ones too)."""

    activity: Activity
    deliveries: list[Delivery]


async def send(
    session: AsyncSession,
    urls: Urls,
    wake: asyncio.Event | None,
    *,
    assembly: Assembly | None,
    activity_type: str,
    obj: dict[str, Any] | str,
    to: list[str],
    inboxes: Iterable[str],
    public: bool,
    now: datetime,
    cc: list[str] | None = None,
    communique_id: int | None = None,
    context: list[Any] | None = None,
    target: str | None = None,
) -> Sent:
    """Record an activity of ``assembly`` (None: the instance actor, signed with the
    instance key) and queue it for each distinct inbox, in the caller's transaction.

    ``wake`` is set once that transaction commits (never if it rolls back); None where no
    in-process worker waits for it (the worker itself, the CLI). An inbox on a blocked
    domain gets a row already failed with "domain blocked", as delivery.enqueue records it.
    """
    public_id = new_public_id()
    uri = urls.activity(public_id)
    actor_id = urls.actor(assembly.handle) if assembly is not None else urls.instance_actor()
    document = build_activity(
        activity_id=uri,
        activity_type=activity_type,
        actor_id=actor_id,
        obj=obj,
        to=to,
        cc=cc,
        published=now,
        context=context,
        target=target,
    )
    if public and assembly is not None:
        # Signed once here, not per delivery: every inbox gets these same bytes, and the
        # activity keeps proving its origin when it is forwarded or relayed (proofs.py).
        document = await proofs.secure_activity_off_loop(
            document, proofs.signing_keys(urls, assembly), now
        )
    activity = Activity(
        public_id=public_id,
        uri=uri,
        assembly_id=assembly.id if assembly is not None else None,
        communique_id=communique_id,
        type=activity_type,
        document=document,
        public=public,
        created_at=now,
    )
    session.add(activity)
    await session.flush()
    return await _queue(session, activity, inboxes, wake=wake, now=now)


async def forward(
    session: AsyncSession,
    wake: asyncio.Event | None,
    *,
    uri: str,
    document: dict[str, Any],
    activity_type: str,
    assembly_id: int,
    communique_id: int | None,
    inboxes: Iterable[str],
    now: datetime,
) -> Sent:
    """Queue someone else's activity ``document``, as it arrived, for ``inboxes`` (inbox
    forwarding, ActivityPub §7.1.2). It is recorded under its id ``uri`` so that it is
    forwarded once, and not public: its origin serves it, not us."""
    activity = Activity(
        public_id=new_public_id(),
        uri=uri,
        assembly_id=assembly_id,
        communique_id=communique_id,
        type=activity_type[:40],
        document=document,
        public=False,
        created_at=now,
    )
    session.add(activity)
    await session.flush()
    return await _queue(session, activity, inboxes, wake=wake, now=now)


async def _queue(
    session: AsyncSession,
    activity: Activity,
    inboxes: Iterable[str],
    *,
    wake: asyncio.Event | None,
    now: datetime,
) -> Sent:
    rows = await delivery.enqueue(session, activity, inboxes, now=now)
    if wake is not None and any(row.status == DeliveryStatus.PENDING for row in rows):
        wake_after_commit(session, wake)
    return Sent(activity, rows)


# -- the wake, after commit ---------------------------------------------------------------


def wake_after_commit(session: AsyncSession, wake: asyncio.Event) -> None:
    """Set ``wake`` when the session's current transaction commits; forget it if the
    transaction ends otherwise (rollback, or the session closed without committing).

    Two listeners per session, added on first use: one pass over the pending wakes per
    transaction, however many activities it sent. The listeners run in the event loop's
    thread (the async session drives the sync one in a greenlet), so setting an
    ``asyncio.Event`` there is safe.
    """
    sync = session.sync_session
    pending: list[asyncio.Event] = sync.info.setdefault(_PENDING, [])
    if wake not in pending:
        pending.append(wake)
    if not sync.info.get(_LISTENING):
        sync.info[_LISTENING] = True
        event.listen(sync, "after_commit", _after_commit)
        event.listen(sync, "after_transaction_end", _after_transaction_end)


def _after_commit(session: Session) -> None:
    # A savepoint's release fires after_commit too; only the outermost commit makes the
    # rows visible to the worker.
    if session.in_nested_transaction():
        return
    for wake in session.info.pop(_PENDING, []):
        wake.set()


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # Runs after _after_commit on a commit (nothing left then); after a rollback of the
    # outermost transaction it drops the wakes that commit would have set.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
