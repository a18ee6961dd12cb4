"""Mail: what the instance tells people by e-mail, queued in the database and sent by the
worker through the SMTP server of ``INTEROCC_SMTP_URL``.

Queued with what causes it: each message is a :class:`~server.models.MailMessage` row
added in the same transaction as the invitation, the request, the approval or the follow
request it is about, so a message is never sent for something rolled back, nor lost for
something committed. A request never talks to the SMTP server.

The row says what to write and to whom (a kind, an address, a few ids), never the text: the
worker writes the message when it sends it, from the templates in
``server/web/templates/mail/``. A link with a token in it (a password reset, an address
confirmation, an invitation) is minted then, and the previous token of the same link stops
working; if the SMTP server does not take the message the token minted for it is deleted. So
no row of the queue ever holds a secret, and a sent row can be kept a few days (whom, what,
when) for the record before it is deleted.

Retried with backoff (:func:`next_delay`); a message that keeps failing, or that the SMTP
server refuses for good (5xx), is parked with its error, never deleted, until an admin
retries it (:func:`retry_parked`). One that has nothing left to say (the invitation was
withdrawn, no account has the address a reset was asked for) is dropped without a trace.

Without ``INTEROCC_SMTP_URL`` and ``INTEROCC_MAIL_FROM`` mail is off: the web queues
nothing, and what a domain hook without the settings at hand queued anyway (an assembly's
approval) is dropped by the worker.

Rows are claimed like deliveries: a lease, and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
workers side by side never send one message twice (a worker killed after the SMTP server
took a message, before it recorded so, sends it again once the lease runs out:
at-least-once, as deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server import accounts, i18n, memberships
from server.config import Settings
from server.context import Context
from server.models import (
    AccountToken,
    Activity,
    Assembly,
    AssemblyStatus,
    Communique,
    Delivery,
    DeliveryFailureNotice,
    DeliveryStatus,
    Follower,
    FollowerStatus,
    Invitation,
    MailMessage,
    MailStatus,
    MemberRole,
    Membership,
    RemoteActor,
    User,
    UserStatus,
)
from server.urls import Urls

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "web" / "templates" / "mail"

# The kinds of message, one template each (``<kind>.txt``).
INVITATION = "invitation"
PASSWORD_RESET = "password_reset"
EMAIL_CONFIRM = "email_confirm"
EMAIL_CHANGED = "email_changed"
PASSWORD_CHANGED = "password_changed"
ASSEMBLY_APPROVED = "assembly_approved"
ASSEMBLY_REJECTED = "assembly_rejected"
FOLLOW_REQUESTS = "follow_requests"
FOLLOW_REQUESTS_HELD = "follow_requests_held"
DELIVERY_FAILURES = "delivery_failures"

BATCH = 10  # messages claimed, and sent over one SMTP connection, at once
MAX_ATTEMPTS = 10  # then parked: 1 min, 2, 4 … capped at an hour, about six hours in all
FIRST_DELAY = timedelta(minutes=1)
MOST_DELAY = timedelta(hours=1)
KEEP_SENT = timedelta(days=7)  # a sent row (no text, no secret) is kept this long
# Follow requests: at most one message per assembly and person in this time; the next one
# says how many wait by then.
FOLLOW_NOTICE_EVERY = timedelta(hours=1)
# Deliveries are retried for days; a communiqué whose deliveries all ended more than this
# long after it was published is not looked at again (it keeps the scan cheap).
FAILURE_SCAN_WINDOW = timedelta(days=60)
MAX_FAILURES_LISTED = 20

Send = Callable[[Settings, Sequence[EmailMessage]], Awaitable[list["SendError | None"]]]


def next_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed try: 1 minute, doubling, at most an hour."""
    delay: timedelta = FIRST_DELAY * (2 ** max(0, min(attempts - 1, 12)))
    return min(delay, MOST_DELAY)


# -- queueing -------------------------------------------------------------------------------


async def queue(
    session: AsyncSession,
    *,
    kind: str,
    recipient: str,
    now: datetime,
    user_id: int | None = None,
    params: dict[str, Any] | None = None,
    not_before: datetime | None = None,
) -> MailMessage:
    """A message for the worker, in the caller's transaction."""
    row = MailMessage(
        kind=kind,
        recipient=recipient,
        user_id=user_id,
        params=params or {},
        status=MailStatus.PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=max(now, not_before or now),
    )
    session.add(row)
    await session.flush()
    return row


async def invitation(
    session: AsyncSession, settings: Settings, *, invitation: Invitation, now: datetime
) -> bool:
    """Mail an invitation (its link is minted when it is sent); False when mail is off and
    the inviter passes the link on by hand."""
    if not settings.mail_enabled:
        return False
    await queue(
        session,
        kind=INVITATION,
        recipient=invitation.email,
        params={"invitation_id": invitation.id},
        now=now,
    )
    return True


async def password_reset(
    session: AsyncSession, settings: Settings, *, email: str, now: datetime
) -> None:
    """Someone asks for a reset link for ``email``. The address is not looked up here:
    the worker does, and sends nothing when no account has it, so the request costs the
    same and answers the same whether or not the account exists."""
    if settings.mail_enabled:
        await queue(session, kind=PASSWORD_RESET, recipient=email.strip().lower()[:254], now=now)


async def confirm_address(
    session: AsyncSession, settings: Settings, *, user: User, email: str, now: datetime
) -> bool:
    """Mail a confirmation link to ``email`` (the account's address, or the new one it
    asked for); False when mail is off."""
    if not settings.mail_enabled:
        return False
    await queue(session, kind=EMAIL_CONFIRM, recipient=email, user_id=user.id, now=now)
    return True


async def address_changed(
    session: AsyncSession, settings: Settings, *, old_email: str, new_email: str, now: datetime
) -> None:
    """Tell the previous address that the account moved to another (no account id: that
    address is not the account's any more)."""
    if settings.mail_enabled:
        params = {"new_email": new_email}
        await queue(session, kind=EMAIL_CHANGED, recipient=old_email, params=params, now=now)


async def password_changed(
    session: AsyncSession, settings: Settings, *, user: User, now: datetime
) -> None:
    if settings.mail_enabled and user.email_confirmed_at is not None:
        await queue(session, kind=PASSWORD_CHANGED, recipient=user.email, user_id=user.id, now=now)


async def _confirmed(session: AsyncSession, user_ids: Any) -> list[User]:
    """The active accounts among ``user_ids`` (a select of ids) whose address is confirmed:
    the only ones notices are mailed to (an unconfirmed address may be someone else's)."""
    query = (
        select(User)
        .where(
            User.id.in_(user_ids),
            User.status == UserStatus.ACTIVE,
            User.email_confirmed_at.is_not(None),
        )
        .order_by(User.id)
    )
    return list((await session.scalars(query)).all())


def _members(assembly_id: int, *, admins: bool = False) -> Any:
    query = select(Membership.user_id).where(Membership.assembly_id == assembly_id)
    return query.where(Membership.role == MemberRole.ADMIN) if admins else query


async def assembly_decided(session: AsyncSession, assembly: Assembly, *, now: datetime) -> None:
    """Hook for server.assemblies.approve and reject: tell the assembly's admins (its
    requester among them) that it is approved or rejected. Queued whatever the settings
    (approve has none at hand); a worker without mail drops it."""
    kind = ASSEMBLY_APPROVED if assembly.status == AssemblyStatus.APPROVED else ASSEMBLY_REJECTED
    for user in await _confirmed(session, _members(assembly.id, admins=True)):
        await queue(
            session,
            kind=kind,
            recipient=user.email,
            user_id=user.id,
            params={"assembly_id": assembly.id},
            now=now,
        )


async def follow_request_waiting(
    session: AsyncSession,
    settings: Settings,
    *,
    assembly: Assembly,
    held_for_admin: bool,
    now: datetime,
) -> None:
    """Hook for server.followers: a follow request waits for the assembly's facilitators
    (or, ``held_for_admin``, for the instance's administrators). One message per person
    and assembly at most every FOLLOW_NOTICE_EVERY, written when sent: it counts what is
    waiting by then, so a flood of Follows makes one message, not a flood."""
    if not settings.mail_enabled:
        return
    if held_for_admin:
        kind, params = FOLLOW_REQUESTS_HELD, {}
        people: Any = select(User.id).where(User.is_admin.is_(True))
    else:
        kind, params = FOLLOW_REQUESTS, {"assembly_id": assembly.id}
        people = _members(assembly.id)
    for user in await _confirmed(session, people):
        recent = (
            await session.scalars(
                select(MailMessage).where(
                    MailMessage.kind == kind,
                    MailMessage.user_id == user.id,
                    or_(
                        MailMessage.status == MailStatus.PENDING,
                        MailMessage.sent_at >= now - FOLLOW_NOTICE_EVERY,
                    ),
                )
            )
        ).all()
        mine = [r for r in recent if r.params == params]
        if any(r.status == MailStatus.PENDING for r in mine):
            continue  # the message waiting will count this one too
        last = max((r.sent_at for r in mine if r.sent_at), default=None)
        await queue(
            session,
            kind=kind,
            recipient=user.email,
            user_id=user.id,
            params=params,
            now=now,
            not_before=last + FOLLOW_NOTICE_EVERY if last else None,
        )


async def notice_delivery_failures(session: AsyncSession, *, now: datetime) -> int:
    """Tell the facilitators of each communiqué some of whose deliveries failed for good,
    once all of them have ended: one summary per communiqué, whatever the number of
    servers. The worker calls this now and then (the delivery code is not told: a
    communiqué's deliveries end one by one, across workers and days). Returns how many
    communiqués were summed up."""
    candidates = (
        await session.execute(
            select(Activity.communique_id, func.count(Delivery.id))
            .join(Delivery, Delivery.activity_id == Activity.id)
            .where(
                Activity.type == "Create",
                Activity.communique_id.is_not(None),
                Activity.created_at >= now - FAILURE_SCAN_WINDOW,
                Delivery.status == DeliveryStatus.FAILED,
                Activity.communique_id.not_in(select(DeliveryFailureNotice.communique_id)),
            )
            .group_by(Activity.communique_id)
        )
    ).all()
    if not candidates:
        return 0
    ids = [communique_id for communique_id, _ in candidates]
    unfinished = set(
        (
            await session.scalars(
                select(Activity.communique_id)
                .join(Delivery, Delivery.activity_id == Activity.id)
                .where(
                    Activity.type == "Create",
                    Activity.communique_id.in_(ids),
                    Delivery.status == DeliveryStatus.PENDING,
                )
            )
        ).all()
    )
    done = 0
    for communique_id, failed in candidates:
        if communique_id in unfinished:
            continue
        communique = await session.get(Communique, communique_id)
        if communique is None:
            continue
        session.add(
            DeliveryFailureNotice(communique_id=communique_id, failed=failed, created_at=now)
        )
        for user in await _confirmed(session, _members(communique.assembly_id)):
            await queue(
                session,
                kind=DELIVERY_FAILURES,
                recipient=user.email,
                user_id=user.id,
                params={"communique_id": communique_id},
                now=now,
            )
        done += 1
    await session.flush()
    return done


# -- what an admin sees and does ------------------------------------------------------------


@dataclass(frozen=True)
class QueueCounts:
    pending: int
    parked: int
    sent: int  # within KEEP_SENT


async def counts(session: AsyncSession) -> QueueCounts:
    rows = dict(
        (
            await session.execute(
                select(MailMessage.status, func.count(MailMessage.id)).group_by(MailMessage.status)
            )
        ).all()
    )
    return QueueCounts(
        pending=int(rows.get(MailStatus.PENDING, 0)),
        parked=int(rows.get(MailStatus.PARKED, 0)),
        sent=int(rows.get(MailStatus.SENT, 0)),
    )


async def parked(session: AsyncSession) -> list[MailMessage]:
    query = select(MailMessage).where(MailMessage.status == MailStatus.PARKED)
    return list((await session.scalars(query.order_by(MailMessage.id))).all())


async def retry_parked(session: AsyncSession, *, now: datetime, ids: Sequence[int] = ()) -> int:
    """Parked messages (those of ``ids``, or all) are tried again at once, from scratch."""
    query = update(MailMessage).where(MailMessage.status == MailStatus.PARKED)
    if ids:
        query = query.where(MailMessage.id.in_(list(ids)))
    result: Any = await session.execute(
        query.values(status=MailStatus.PENDING, attempts=0, next_attempt_at=now)
    )
    return int(result.rowcount or 0)


# -- writing a message ----------------------------------------------------------------------


@dataclass
class Draft:
    """A message written from its row: the template's values; ``minted`` the account
    tokens made for its link (deleted if the SMTP server does not take it)."""

    values: dict[str, Any]
    minted: list[int] = field(default_factory=list)


class Drop(Exception):
    """Nothing left to send (the reason is logged, the row deleted)."""


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=False,  # plain text: nothing here is ever read as HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    # Mail is written in the language current where it is rendered (server/i18n.py).
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    # {% trans %} blocks are looked up with their whitespace collapsed, as extracted (babel.cfg).
    env.policies["ext.i18n.trimmed"] = True
    env.filters["datetime"] = i18n.format_datetime
    return env


async def _account(session: AsyncSession, row: MailMessage) -> User:
    user = await session.get(User, row.user_id) if row.user_id else None
    if user is None or user.status != UserStatus.ACTIVE:
        raise Drop("the account is gone or closed")
    return user


async def _language_of(session: AsyncSession, row: MailMessage) -> str:
    """The language of the account the message goes to (by id, else by address)."""
    query = select(User.language)
    if row.user_id:
        query = query.where(User.id == row.user_id)
    else:
        query = query.where(User.email == row.recipient.lower())
    language = await session.scalar(query.limit(1))
    return language or i18n.DEFAULT


def _token_id(token: str) -> int:
    return int(token.partition(".")[0])


async def _write(session: AsyncSession, row: MailMessage, urls: Urls, *, now: datetime) -> Draft:
    """What the message of ``row`` says; Drop when there is nothing left to say."""
    params = row.params or {}
    if row.kind == INVITATION:
        found = await session.get(Invitation, int(params.get("invitation_id", 0)))
        if found is None or found.accepted_at is not None:
            raise Drop("the invitation was withdrawn or accepted")
        assembly = await session.get(Assembly, found.assembly_id)
        if assembly is None:
            raise Drop("the assembly is gone")
        # A new token, minted now: the one made with the invitation was never shown to
        # anyone (mail was on) and stops working here.
        token = secrets.token_urlsafe(32)
        found.token_hash = memberships.token_hash(token)
        link = f"{urls.base}/invitations/{token}"
        return Draft({"assembly": assembly, "role": found.role.value, "link": link})
    if row.kind == PASSWORD_RESET:
        user = await accounts.find_by_email(session, row.recipient)
        if user is None or user.status != UserStatus.ACTIVE:
            raise Drop("no open account has this address")
        token = await accounts.mint_link_token(
            session, user=user, purpose=accounts.RESET, email=user.email, now=now
        )
        link = f"{urls.base}/password/reset/{token}"
        hours = int(accounts.LIFETIMES[accounts.RESET].total_seconds() // 3600)
        return Draft({"link": link, "hours": hours}, [_token_id(token)])
    if row.kind == EMAIL_CONFIRM:
        user = await _account(session, row)
        first = row.recipient == user.email and user.email_confirmed_at is None
        if not first and row.recipient != user.pending_email:
            raise Drop("the address is confirmed already, or no longer asked for")
        token = await accounts.mint_link_token(
            session, user=user, purpose=accounts.CONFIRM, email=row.recipient, now=now
        )
        link = f"{urls.base}/account/confirm/{token}"
        days = accounts.LIFETIMES[accounts.CONFIRM].days
        values = {"link": link, "days": days, "changing": not first, "current": user.email}
        return Draft(values, [_token_id(token)])
    if row.kind == EMAIL_CHANGED:
        return Draft({"new_email": str(params.get("new_email", ""))})
    if row.kind == PASSWORD_CHANGED:
        await _account(session, row)
        return Draft({"when": now, "reset_link": f"{urls.base}/password/forgot"})
    if row.kind in {ASSEMBLY_APPROVED, ASSEMBLY_REJECTED}:
        assembly = await session.get(Assembly, int(params.get("assembly_id", 0)))
        if assembly is None:
            raise Drop("the assembly is gone")
        manage = f"{urls.base}/manage/{assembly.handle}"
        return Draft(
            {"assembly": assembly, "manage": manage, "dashboard": f"{urls.base}/dashboard"}
        )
    if row.kind in {FOLLOW_REQUESTS, FOLLOW_REQUESTS_HELD}:
        held = row.kind == FOLLOW_REQUESTS_HELD
        query = select(RemoteActor, Assembly).join(Follower, Follower.actor_id == RemoteActor.id)
        query = query.join(Assembly, Assembly.id == Follower.assembly_id).where(
            Follower.status == FollowerStatus.PENDING, Follower.held_for_admin.is_(held)
        )
        if not held:
            query = query.where(Follower.assembly_id == int(params.get("assembly_id", 0)))
        waiting = (await session.execute(query.order_by(Follower.id))).all()
        if not waiting:
            raise Drop("no follow request waits any more")
        if held:
            link = f"{urls.base}/admin/follows"
        else:
            link = f"{urls.base}/manage/{waiting[0][1].handle}/followers"
        return Draft(
            {
                "count": len(waiting),
                "requests": [(_who(actor), assembly) for actor, assembly in waiting[:20]],
                "assembly": waiting[0][1],
                "link": link,
            }
        )
    if row.kind == DELIVERY_FAILURES:
        communique = await session.get(Communique, int(params.get("communique_id", 0)))
        if communique is None or communique.deleted_at is not None:
            raise Drop("the communiqué is gone")
        assembly = await session.get(Assembly, communique.assembly_id)
        if assembly is None:
            raise Drop("the assembly is gone")
        rows = (
            await session.execute(
                select(Delivery.host, Delivery.status, Delivery.last_status, Delivery.last_error)
                .join(Activity, Activity.id == Delivery.activity_id)
                .where(Activity.communique_id == communique.id, Activity.type == "Create")
                .order_by(Delivery.host, Delivery.id)
            )
        ).all()
        failed = [r for r in rows if r.status == DeliveryStatus.FAILED]
        if not failed:
            raise Drop("no delivery failed")
        return Draft(
            {
                "assembly": assembly,
                "excerpt": _excerpt(communique.source),
                "total": len(rows),
                "failed": len(failed),
                "listed": [
                    (r.host, r.last_status, _one_line(r.last_error or ""))
                    for r in failed[:MAX_FAILURES_LISTED]
                ],
                "link": (
                    f"{urls.base}/manage/{assembly.handle}/communiques/"
                    f"{communique.public_id}/delivery"
                ),
            }
        )
    raise Drop(f"unknown kind {row.kind!r}")


def _who(actor: RemoteActor) -> str:
    handle = f"@{actor.preferred_username}@{actor.domain}" if actor.preferred_username else ""
    name = _one_line(actor.name or "")[:100]
    return f"{name} ({handle})" if name and handle else (handle or actor.uri)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _excerpt(source: str, limit: int = 120) -> str:
    text = _one_line(source)
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def compose(
    env: Environment,
    settings: Settings,
    urls: Urls,
    row: MailMessage,
    draft: Draft,
    *,
    now: datetime,
) -> EmailMessage:
    """The message itself: the template's ``subject`` and text, plain UTF-8."""
    values = {
        "instance_name": settings.instance_name,
        "base_url": urls.base,
        "recipient": row.recipient,
        **draft.values,
    }
    module = env.get_template(f"{row.kind}.txt").make_module(values)
    subject = _one_line(str(getattr(module, "subject", "")))[:200]
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = row.recipient
    message["Subject"] = f"{subject} · {settings.instance_name}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=urls.host.rsplit(":", 1)[0])
    # RFC 3834: no vacation auto-replies to these.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(str(module).strip() + "\n")
    return message


# -- sending --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendError:
    message: str
    permanent: bool = False  # the server refused it for good (5xx): no use retrying


def _tls_context(settings: Settings) -> ssl.SSLContext:
    if settings.smtp_ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.smtp_ca_file))
    return ssl.create_default_context()


def _describe(exc: BaseException) -> SendError:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{exc.code} {exc.message}"
        return SendError(text[:500], permanent=500 <= exc.code < 600)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return SendError(text[:500], permanent=all(500 <= c < 600 for c in codes))
    return SendError((str(exc) or type(exc).__name__)[:500])


async def smtp_send(settings: Settings, messages: Sequence[EmailMessage]) -> list[SendError | None]:
    """Send ``messages`` over one connection to the SMTP server; each one's error, or None.
    A failure to connect, to secure the connection or to log in is every message's."""
    server = settings.smtp
    assert server is not None
    client = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        use_tls=server.tls == "implicit",
        start_tls=True if server.tls == "starttls" else False,
        tls_context=_tls_context(settings) if server.tls != "none" else None,
        timeout=settings.smtp_timeout,
    )
    try:
        await client.connect()
        if server.username:
            await client.login(server.username, server.password or "")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            client.close()
        # Not the messages' fault (a server down, a certificate, a password): retried, even
        # on a 5xx, so that they go once the settings or the server are mended.
        return [SendError(_describe(exc).message)] * len(messages)
    results: list[SendError | None] = []
    try:
        for message in messages:
            try:
                refused, _ = await client.send_message(message)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                results.append(_describe(exc))
                if not client.is_connected:  # the rest would fail alike: try them later
                    lost = SendError("the SMTP server closed the connection")
                    results += [lost] * (len(messages) - len(results))
                    break
                continue
            if refused:  # one recipient each: a refusal raises instead, but to be sure
                text = "; ".join(f"{r.code} {r.message}" for r in refused.values())
                permanent = all(500 <= r.code < 600 for r in refused.values())
                results.append(SendError(text[:500], permanent=permanent))
            else:
                results.append(None)
    finally:
        with contextlib.suppress(Exception):
            await client.quit()
    return results


# -- the worker's part ---------------------------------------------------------------------


def lease(settings: Settings) -> timedelta:
    """How long a claim lasts: a whole batch at the SMTP timeout per step, and a margin."""
    return timedelta(seconds=settings.smtp_timeout * (BATCH + 3) + 30)


async def _claim(ctx: Context, *, now: datetime) -> tuple[str, list[int]]:
    token = secrets.token_hex(8)
    async with ctx.sessions() as session, session.begin():
        query = (
            select(MailMessage.id)
            .where(
                MailMessage.status == MailStatus.PENDING,
                MailMessage.next_attempt_at <= now,
                or_(MailMessage.claimed_until.is_(None), MailMessage.claimed_until < now),
            )
            .order_by(MailMessage.next_attempt_at, MailMessage.id)
            .limit(BATCH)
        )
        if ctx.engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list((await session.scalars(query)).all())
        if ids:
            await session.execute(
                update(MailMessage)
                .where(MailMessage.id.in_(ids))
                .values(claimed_until=now + lease(ctx.settings), claim_token=token)
            )
    return token, ids


async def housekeeping(ctx: Context, *, now: datetime) -> None:
    """Forget what is of no further use: sent rows past KEEP_SENT, expired links, the
    rate limiter's old marks; with mail off, whatever was queued."""
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            delete(MailMessage).where(
                MailMessage.status == MailStatus.SENT, MailMessage.sent_at < now - KEEP_SENT
            )
        )
        if not ctx.settings.mail_enabled:
            await session.execute(
                delete(MailMessage).where(MailMessage.status == MailStatus.PENDING)
            )
        await accounts.forget_expired_links(session, now=now)
        await accounts.forget_old_requests(session, now=now)


async def run_once(
    ctx: Context,
    *,
    now: datetime | None = None,
    send: Send | None = None,
    scan: bool = True,
) -> int:
    """Send what is due (in batches, until nothing is left), after looking for communiqués
    whose deliveries failed (``scan``); returns how many messages were sent. Tests drive
    the worker with it."""
    now = now or ctx.clock()
    if not ctx.settings.mail_enabled:
        await housekeeping(ctx, now=now)  # drops what was queued
        return 0
    if scan:
        try:
            async with ctx.sessions() as session, session.begin():
                await notice_delivery_failures(session, now=now)
        except IntegrityError:  # another worker summed the same communiqué up just now
            log.info("delivery failures noticed by another worker")
    sent = 0
    env: Environment | None = None
    while True:
        token, ids = await _claim(ctx, now=now)
        if not ids:
            return sent
        env = env or _templates()
        sent += await _send_claimed(ctx, env, token, ids, now=now, send=send or smtp_send)


async def _send_claimed(
    ctx: Context,
    env: Environment,
    token: str,
    ids: list[int],
    *,
    now: datetime,
    send: Send,
) -> int:
    # Written (and their links minted) in one transaction, committed before the SMTP
    # server is spoken to: no transaction stays open on the network.
    ready: list[tuple[int, EmailMessage, Draft]] = []
    async with ctx.sessions() as session, session.begin():
        rows = (await session.scalars(select(MailMessage).where(MailMessage.id.in_(ids)))).all()
        for row in sorted(rows, key=lambda r: r.id):
            if row.claim_token != token:
                continue
            try:
                async with session.begin_nested():
                    draft = await _write(session, row, ctx.urls, now=now)
                    # In the addressee's language when their account has chosen one.
                    with i18n.using(await _language_of(session, row)):
                        message = compose(env, ctx.settings, ctx.urls, row, draft, now=now)
            except Drop as reason:
                log.info("mail %s (%s) dropped: %s", row.id, row.kind, reason)
                await session.delete(row)
                continue
            except Exception:  # a bug in one message must not hold the others
                log.exception("mail %s (%s) could not be written", row.id, row.kind)
                _failed(row, SendError("could not be written (see the worker's log)"), now=now)
                continue
            ready.append((row.id, message, draft))
    if not ready:
        return 0
    results = await send(ctx.settings, [message for _, message, _ in ready])
    sent = 0
    async with ctx.sessions() as session, session.begin():
        for (row_id, _, draft), error in zip(ready, results, strict=True):
            claimed = await session.get(MailMessage, row_id)
            if claimed is None or claimed.claim_token != token:
                continue  # the lease ran out and another worker took it over
            if error is None:
                claimed.status = MailStatus.SENT
                claimed.sent_at = now
                claimed.attempts += 1
                claimed.last_error = None
                claimed.claimed_until = claimed.claim_token = None
                sent += 1
                continue
            if draft.minted:  # the link never left: nobody can use it
                await session.execute(delete(AccountToken).where(AccountToken.id.in_(draft.minted)))
            _failed(claimed, error, now=now)
            log.warning(
                "mail %s (%s) not sent (try %d): %s",
                claimed.id,
                claimed.kind,
                claimed.attempts,
                error.message,
            )
    return sent


def _failed(row: MailMessage, error: SendError, *, now: datetime) -> None:
    row.attempts += 1
    row.last_error = error.message
    row.claimed_until = row.claim_token = None
    if error.permanent or row.attempts >= MAX_ATTEMPTS:
        row.status = MailStatus.PARKED
    else:
        row.next_attempt_at = now + next_delay(row.attempts)


# How often the worker looks for mail to send, and for communiqués whose deliveries failed.
MAIL_CHECK = timedelta(seconds=5)
FAILURE_CHECK = timedelta(minutes=1)
HOUSEKEEPING = timedelta(hours=1)


async def run_forever(ctx: Context, stop: asyncio.Event) -> None:
    """Send mail every MAIL_CHECK until ``stop`` (a batch being sent is finished); with
    mail off, only the hourly housekeeping (which drops what the domain queued)."""
    scanned: datetime | None = None
    kept: datetime | None = None
    while not stop.is_set():
        try:
            now = ctx.clock()
            if kept is None or now - kept >= HOUSEKEEPING:
                kept = now
                await housekeeping(ctx, now=now)
            if ctx.settings.mail_enabled:
                scan = scanned is None or now - scanned >= FAILURE_CHECK
                if scan:
                    scanned = now
                await run_once(ctx, now=now, scan=scan)
        except Exception:  # the worker must outlive a failed round (DB restart, bug)
            log.exception("mail round failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), MAIL_CHECK.total_seconds())
