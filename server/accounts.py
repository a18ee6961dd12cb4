"""People who sign in: accounts, argon2id passwords, browser sessions and login rate limits;
single-use links mailed to an account (password reset, address confirmation) and what a
person does with their own account (password, address, sessions, deletion, export).

The messages themselves are server/mail.py's: it queues them, and mints the links' tokens
here when it sends them."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import i18n
from server.errors import BadRequest, Conflict, NotFound, TooManyRequests
from server.models import (
    AccountToken,
    Assembly,
    AssemblyStatus,
    Invitation,
    LoginFailure,
    Media,
    MemberRole,
    Membership,
    RequestMark,
    User,
    UserStatus,
    WebSession,
)

# argon2id with RFC 9106's low-memory profile (64 MiB, 3 passes, 4 lanes).
PASSWORD_PROFILE = RFC_9106_LOW_MEMORY
_hasher = PasswordHasher.from_parameters(PASSWORD_PROFILE)


@functools.cache
def _dummy_hash() -> str:
    """A real hash to verify against when the e-mail is unknown, so timing does not tell.
    Made by ``prepare_logins`` when the web app starts, not at import: every ``interocc``
    command would pay for it."""
    return _hasher.hash("interocc-no-such-account")


def prepare_logins() -> None:
    """Make the dummy hash now, so that the first login of an unknown e-mail costs one check
    like every other one (made on demand it would cost a hash more, and tell)."""
    _dummy_hash()


EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1000

# The login limiter counts failed logins within a window, per (e-mail address, client
# address) pair and per client address: an attacker at one address spends only that
# address's budget, never the account's, so it cannot lock the owner out from elsewhere.
# An account that fails from many addresses at once (ACCOUNT_STRAIN, far above what one
# address may spend) is under a distributed attack: each address then gets a single failure
# for it per window, which slows the guessing while the owner, whose own address has no
# failures, still signs in.
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_PAIR = 5
MAX_FAILURES_PER_CLIENT = 20
ACCOUNT_STRAIN = 50
MAX_FAILURES_PER_PAIR_UNDER_STRAIN = 1
LIMITED = "too many failed attempts: wait 15 minutes and try again"


def normalise_email(raw: str) -> str:
    email = raw.strip().lower()
    if len(email) > 254 or not EMAIL_RE.match(email):
        raise BadRequest("enter an e-mail address such as name@example.org", field="email")
    return email


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise BadRequest(
            f"choose a password of at least {MIN_PASSWORD} characters", field="password"
        )
    if len(password) > MAX_PASSWORD:
        raise BadRequest(f"a password is at most {MAX_PASSWORD} characters", field="password")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def find_by_email(session: AsyncSession, email: str) -> User | None:
    query = select(User).where(User.email == email.strip().lower())
    return (await session.scalars(query)).first()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    is_admin: bool = False,
    status: UserStatus = UserStatus.ACTIVE,
    confirmed_at: datetime | None = None,
) -> User:
    """A new account. ``confirmed_at``: when its address was shown to be its owner's (None
    for a sign-up, until the link mailed to it is opened)."""
    email = normalise_email(email)
    # argon2 costs tens of milliseconds of CPU: off the event loop.
    password_hash = await asyncio.to_thread(hash_password, password)
    if await find_by_email(session, email) is not None:
        raise Conflict("an account with this e-mail address already exists", field="email")
    user = User(
        email=email,
        password_hash=password_hash,
        is_admin=is_admin,
        status=status,
        email_confirmed_at=confirmed_at,
    )
    session.add(user)
    await session.flush()
    return user


async def set_password(session: AsyncSession, email: str, password: str) -> User:
    """A new password; every browser signed in as this person is signed out."""
    user = await find_by_email(session, email)
    if user is None:
        raise NotFound(f"no account with the e-mail address {email[:100]!r}")
    user.password_hash = await asyncio.to_thread(hash_password, password)
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await session.flush()
    return user


@dataclass(frozen=True)
class LoginResult:
    """``user`` on success; otherwise ``error`` says why (and ``limited`` if rate-limited)."""

    user: User | None
    error: str | None = None
    limited: bool = False


def client_network(client: str) -> str:
    """The client address as the limiter counts it: an IPv4 address as it is, an IPv6
    address by its /64, which one subscriber usually holds whole (RFC 6177) and could
    otherwise walk through for fresh budgets."""
    try:
        address = ipaddress.ip_address(client.strip())
    except ValueError:
        return client.strip()[:200]  # "unknown" (no client), or a proxy's odd value
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def limiter_keys(secret: str, *, email: str, client: str) -> tuple[str, str, str]:
    """The (pair, client, account) keys a failed login is counted under.

    Keyed hashes (HMAC-SHA256 with the instance's secret key), so the table never holds a
    client address nor a typed e-mail address (people type passwords there too), and the
    values cannot be recovered by hashing every IPv4 address without the secret.
    """
    network = client_network(client)

    def key(kind: str, *parts: str) -> str:
        message = "\x00".join((kind, *parts)).encode("utf-8", "surrogatepass")
        digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
        return f"{kind}:{digest}"

    return key("pair", email, network), key("client", network), key("account", email)


async def _failures(session: AsyncSession, key: str, since: datetime) -> int:
    query = select(func.count(LoginFailure.id)).where(
        LoginFailure.key == key, LoginFailure.attempted_at >= since
    )
    return int((await session.scalar(query)) or 0)


async def _limited(session: AsyncSession, keys: tuple[str, str, str], since: datetime) -> bool:
    pair, client, account = keys
    if await _failures(session, client, since) >= MAX_FAILURES_PER_CLIENT:
        return True
    pair_failures = await _failures(session, pair, since)
    if pair_failures >= MAX_FAILURES_PER_PAIR:
        return True
    if pair_failures < MAX_FAILURES_PER_PAIR_UNDER_STRAIN:
        return False  # a clean address is never refused for the account's sake
    return await _failures(session, account, since) >= ACCOUNT_STRAIN


async def authenticate(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    client: str,
    secret: str,
    now: datetime,
) -> LoginResult:
    """Check a login from the client address ``client``. Failures are recorded in
    ``session`` (the caller commits either way) under keys hashed with ``secret``."""
    email = email.strip().lower()[:254]
    keys = limiter_keys(secret, email=email, client=client)
    since = now - FAILURE_WINDOW
    if await _limited(session, keys, since):
        return LoginResult(None, LIMITED, limited=True)
    user = await find_by_email(session, email) if email else None
    checked = await asyncio.to_thread(
        _verify, user.password_hash if user else _dummy_hash(), password
    )
    ok = checked and user is not None
    if not ok or user is None:
        session.add_all([LoginFailure(key=k, attempted_at=now) for k in keys])
        # Old failures are of no further use: nothing is kept past its window.
        await session.execute(delete(LoginFailure).where(LoginFailure.attempted_at < since))
        return LoginResult(None, "wrong e-mail address or password")
    if user.status == UserStatus.PENDING:
        return LoginResult(None, "your account is waiting for an administrator's approval")
    if user.status != UserStatus.ACTIVE:
        return LoginResult(None, "this account is closed")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_login_at = now
    return LoginResult(user)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(
    session: AsyncSession, user: User, *, now: datetime, lifetime: timedelta
) -> str:
    """A new browser session for ``user``; returns the token the cookie carries."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(token_hash=_token_hash(token), user_id=user.id, expires_at=now + lifetime)
    )
    await session.flush()
    return token


async def session_user(session: AsyncSession, token: str, *, now: datetime) -> User | None:
    """The active person a session cookie belongs to, or None (expired, closed, unknown)."""
    if not token or len(token) > 100:
        return None
    query = (
        select(User)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.token_hash == _token_hash(token), WebSession.expires_at > now)
    )
    user = (await session.scalars(query)).first()
    if user is None or user.status != UserStatus.ACTIVE:
        return None
    return user


async def end_session(session: AsyncSession, token: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == _token_hash(token)))


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.scalars(select(User).order_by(User.created_at, User.id))).all())


async def set_status(session: AsyncSession, user_id: int, status: UserStatus) -> User:
    """Approve, reject or close an account; a closed account is signed out everywhere."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such account")
    user.status = status
    if status != UserStatus.ACTIVE:
        await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await session.flush()
    return user


# What an instance admin may do to an account: (from these statuses, to this one, in words).
ACCOUNT_ACTIONS: dict[str, tuple[set[UserStatus], UserStatus, str]] = {
    "approve": ({UserStatus.PENDING}, UserStatus.ACTIVE, "approved"),
    "reject": ({UserStatus.PENDING}, UserStatus.REJECTED, "rejected"),
    "close": ({UserStatus.ACTIVE}, UserStatus.DISABLED, "closed"),
    "reopen": ({UserStatus.DISABLED, UserStatus.REJECTED}, UserStatus.ACTIVE, "reopened"),
}


async def moderate_account(
    session: AsyncSession, *, admin_id: int, user_id: int, action: str
) -> User:
    """An admin approves, rejects, closes or reopens an account, or grants or removes admin
    rights. Nobody closes or demotes themselves: an instance always keeps an admin who can
    sign in."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such account")
    if action in {"make-admin", "remove-admin"}:
        if action == "remove-admin" and user.id == admin_id:
            raise BadRequest("you cannot remove your own administrator rights")
        if user.status != UserStatus.ACTIVE and action == "make-admin":
            raise Conflict(f"{user.email} is {user.status.value}: open the account first")
        user.is_admin = action == "make-admin"
        await session.flush()
        return user
    if action not in ACCOUNT_ACTIONS:
        raise NotFound("no such action")
    allowed, status, done = ACCOUNT_ACTIONS[action]
    if user.id == admin_id:
        raise BadRequest("you cannot change the status of your own account")
    if user.status not in allowed:
        raise Conflict(f"{user.email} is {user.status.value}: it cannot be {done}")
    return await set_status(session, user.id, status)


# -- rate limits on requests that send mail -------------------------------------------------

# Password reset requests per address (so nobody floods a mailbox) and per client (so
# nobody sends them to a list of addresses); confirmation mails per account. Counted as
# keyed hashes, like failed logins: no address is kept.
REQUEST_WINDOW = timedelta(hours=1)
MAX_RESETS_PER_ADDRESS = 3
MAX_RESETS_PER_CLIENT = 10
MAX_CONFIRMATIONS_PER_ACCOUNT = 5
TOO_MANY_REQUESTS = "too many requests: wait an hour and try again"


def request_key(secret: str, kind: str, value: str) -> str:
    message = f"{kind}\x00{value}".encode("utf-8", "surrogatepass")
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"{kind}:{digest}"


async def spend_requests(
    session: AsyncSession,
    *,
    secret: str,
    counted: Sequence[tuple[str, str, int]],
    now: datetime,
    window: timedelta = REQUEST_WINDOW,
) -> None:
    """Count one request under each (kind, value, limit) of ``counted``; TooManyRequests
    (nothing counted) if any of them has reached its limit within ``window``."""
    since = now - window
    keys = [(request_key(secret, kind, value), limit) for kind, value, limit in counted]
    for key, limit in keys:
        query = select(func.count(RequestMark.id)).where(
            RequestMark.key == key, RequestMark.at >= since
        )
        if int((await session.scalar(query)) or 0) >= limit:
            raise TooManyRequests(TOO_MANY_REQUESTS, retry_after=int(window.total_seconds()))
    session.add_all(RequestMark(key=key, at=now) for key, _ in keys)
    await session.flush()


async def forget_old_requests(session: AsyncSession, *, now: datetime) -> None:
    """Marks are of no use past their window (the worker calls this now and then)."""
    await session.execute(delete(RequestMark).where(RequestMark.at < now - REQUEST_WINDOW))


def reset_request_counts(*, email: str, client: str) -> list[tuple[str, str, int]]:
    return [
        ("reset-address", email.strip().lower()[:254], MAX_RESETS_PER_ADDRESS),
        ("reset-client", client_network(client), MAX_RESETS_PER_CLIENT),
    ]


def confirmation_counts(user: User) -> list[tuple[str, str, int]]:
    return [("confirm-account", str(user.id), MAX_CONFIRMATIONS_PER_ACCOUNT)]


# -- single-use links -------------------------------------------------------------------

RESET = "password_reset"
CONFIRM = "email_confirm"
LIFETIMES = {RESET: timedelta(hours=1), CONFIRM: timedelta(days=2)}
INVALID_LINK = (
    "this link does not work: it was used already, it expired, or a newer one replaced it"
)
MAX_LINK_TOKEN = 100
# Compared with when a link names no row, so that an unknown id costs a comparison too.
_NO_SECRET = "0" * 64


@dataclass(frozen=True)
class LinkHolder:
    """Whom a valid link belongs to, and the address it was sent to."""

    user: User
    token: AccountToken


async def mint_link_token(
    session: AsyncSession, *, user: User, purpose: str, email: str, now: datetime
) -> str:
    """A new single-use token for a link to ``email``; only its SHA-256 is stored, and the
    token names its row (``<id>.<secret>``). An earlier token of the same purpose stops
    working: only the newest link does."""
    await session.execute(
        delete(AccountToken).where(AccountToken.user_id == user.id, AccountToken.purpose == purpose)
    )
    secret = secrets.token_urlsafe(32)
    row = AccountToken(
        user_id=user.id,
        purpose=purpose,
        email=email,
        secret_hash=_token_hash(secret),
        created_at=now,
        expires_at=now + LIFETIMES[purpose],
    )
    session.add(row)
    await session.flush()
    return f"{row.id}.{secret}"


async def check_link_token(
    session: AsyncSession, token: str, *, purpose: str, now: datetime
) -> LinkHolder | None:
    """The account a link's token is valid for, or None (malformed, unknown, tampered,
    used, expired, of another purpose, or the account changed since it was sent)."""
    raw_id, dot, secret = token.partition(".")
    if not dot or not raw_id.isdigit() or len(token) > MAX_LINK_TOKEN or len(raw_id) > 18:
        return None
    row = await session.get(AccountToken, int(raw_id))
    # In constant time: how much of a guessed secret is right never shows in the timing.
    matches = hmac.compare_digest(row.secret_hash if row else _NO_SECRET, _token_hash(secret))
    if row is None or not matches or row.purpose != purpose or row.expires_at <= now:
        return None
    user = await session.get(User, row.user_id)
    if user is None or user.status != UserStatus.ACTIVE:
        return None
    # A reset link works for the address it was sent to; a confirmation for the address
    # it confirms, while that is still the account's (or the one it asked for).
    if row.email not in {user.email, user.pending_email}:
        return None
    if purpose == RESET and row.email != user.email:
        return None
    return LinkHolder(user=user, token=row)


async def _forget_links(session: AsyncSession, user: User, purpose: str) -> None:
    await session.execute(
        delete(AccountToken).where(AccountToken.user_id == user.id, AccountToken.purpose == purpose)
    )


async def forget_expired_links(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(delete(AccountToken).where(AccountToken.expires_at <= now))


async def reset_password(
    session: AsyncSession, *, token: str, password: str, now: datetime
) -> User:
    """Choose a new password with a reset link: the link is used up, and every browser
    signed in as the account is signed out (whoever knew the old password is out). The
    link came through the account's address, so that address is confirmed too."""
    holder = await check_link_token(session, token, purpose=RESET, now=now)
    if holder is None:
        raise BadRequest(INVALID_LINK)
    user = holder.user
    user.password_hash = await asyncio.to_thread(hash_password, password)
    user.email_confirmed_at = user.email_confirmed_at or now
    await _forget_links(session, user, RESET)
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await session.flush()
    return user


@dataclass(frozen=True)
class Confirmed:
    user: User
    replaced: str | None  # the previous address, when the link confirmed a new one


async def confirm_email(session: AsyncSession, *, token: str, now: datetime) -> Confirmed:
    """Open a confirmation link: the account's address is confirmed, or the new address it
    asked for replaces the old one (the caller tells the old address)."""
    holder = await check_link_token(session, token, purpose=CONFIRM, now=now)
    if holder is None:
        raise BadRequest(INVALID_LINK)
    user, address = holder.user, holder.token.email
    replaced = None
    if address != user.email:  # the new address asked for: it replaces the old one
        if await find_by_email(session, address) is not None:
            raise Conflict("another account uses this address now: ask for another change")
        replaced, user.email = user.email, address
        user.pending_email = None
    user.email_confirmed_at = now
    await session.delete(holder.token)
    await session.flush()
    return Confirmed(user=user, replaced=replaced)


# -- the account's own page -------------------------------------------------------------

WRONG_CURRENT = "this is not your current password"


async def check_current_password(
    session: AsyncSession,
    user: User,
    password: str,
    *,
    client: str,
    secret: str,
    now: datetime,
) -> None:
    """BadRequest (field ``current_password``) unless ``password`` is the account's.

    A failure counts for the login limiter like a failed login, so that a borrowed session
    cannot guess the password here faster than at the login form. The failure is written
    to ``session`` before the error is raised: the caller commits it either way."""
    keys = limiter_keys(secret, email=user.email, client=client)
    since = now - FAILURE_WINDOW
    if await _limited(session, keys, since):
        raise TooManyRequests(LIMITED, field="current_password")
    if await asyncio.to_thread(_verify, user.password_hash, password[:MAX_PASSWORD]):
        return
    session.add_all([LoginFailure(key=k, attempted_at=now) for k in keys])
    await session.flush()
    raise BadRequest(WRONG_CURRENT, field="current_password")


async def change_password(
    session: AsyncSession, *, user: User, password: str, keep_session: str
) -> int:
    """A new password (the caller checked the current one); every other browser signed in
    as the account is signed out. Returns how many were."""
    user.password_hash = await asyncio.to_thread(hash_password, password)
    await _forget_links(session, user, RESET)
    signed_out = await sign_out_others(session, user=user, keep_session=keep_session)
    await session.flush()
    return signed_out


async def sign_out_others(session: AsyncSession, *, user: User, keep_session: str) -> int:
    """End every session of ``user`` but the one whose cookie is ``keep_session``."""
    result: Any = await session.execute(
        delete(WebSession).where(
            WebSession.user_id == user.id, WebSession.token_hash != _token_hash(keep_session)
        )
    )
    return int(result.rowcount or 0)


async def other_sessions(
    session: AsyncSession, *, user: User, keep_session: str, now: datetime
) -> int:
    query = select(func.count(WebSession.id)).where(
        WebSession.user_id == user.id,
        WebSession.token_hash != _token_hash(keep_session),
        WebSession.expires_at > now,
    )
    return int((await session.scalar(query)) or 0)


async def request_email_change(session: AsyncSession, *, user: User, email: str) -> str:
    """Ask for a new address: it replaces the current one once the link mailed to it is
    opened (:func:`confirm_email`). Returns the normalised address."""
    address = normalise_email(email)
    if address == user.email:
        raise BadRequest("this is already your address", field="email")
    if await find_by_email(session, address) is not None:
        raise Conflict("an account with this e-mail address already exists", field="email")
    user.pending_email = address
    await session.flush()
    return address


@dataclass(frozen=True)
class SoleAdmin:
    """An assembly whose only admin is the account: it holds the account's deletion."""

    handle: str
    name: str
    status: AssemblyStatus


async def sole_admin_of(session: AsyncSession, user: User) -> list[SoleAdmin]:
    """The assemblies the account alone administers."""
    mine = select(Membership.assembly_id).where(
        Membership.user_id == user.id, Membership.role == MemberRole.ADMIN
    )
    others = select(Membership.assembly_id).where(
        Membership.user_id != user.id, Membership.role == MemberRole.ADMIN
    )
    rows = await session.execute(
        select(Assembly.handle, Assembly.name, Assembly.status)
        .where(Assembly.id.in_(mine), Assembly.id.not_in(others))
        .order_by(Assembly.name, Assembly.id)
    )
    return [SoleAdmin(handle=h, name=n, status=s) for h, n, s in rows]


LAST_INSTANCE_ADMIN = (
    "you are this instance's only administrator: make someone else an administrator first"
)


async def delete_account(session: AsyncSession, *, user: User) -> str:
    """Delete the account (the caller checked its password): its sessions, memberships,
    links and queued mail go with it; what it did for assemblies stays theirs (an
    invitation it sent, an image it uploaded, an assembly it requested keep no trace of
    who). Refused while it alone administers an assembly, or the instance. Returns the
    address it had."""
    # Lock the admin rows the check reads (PostgreSQL), so that two admins of one assembly
    # deleting their accounts at the same moment cannot both succeed.
    await session.execute(
        select(Membership.id).where(Membership.role == MemberRole.ADMIN).with_for_update()
    )
    blockers = await sole_admin_of(session, user)
    if blockers:
        names = ", ".join(f"@{b.handle}" for b in blockers)
        raise Conflict(f"you are the only admin of {names}: name another admin first")
    if user.is_admin:
        admins = await session.scalar(
            select(func.count(User.id)).where(
                User.is_admin.is_(True), User.status == UserStatus.ACTIVE, User.id != user.id
            )
        )
        if not admins:
            raise Conflict(LAST_INSTANCE_ADMIN)
    email = user.email
    await session.execute(delete(User).where(User.id == user.id))
    return email


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None


async def export_account(session: AsyncSession, *, user: User, now: datetime) -> dict[str, Any]:
    """The account's own records, as JSON: what it is, whom it facilitates, the invitations
    and assembly requests it made, the images it uploaded, its sessions. Nothing of anyone
    else's: not the other facilitators, not the assemblies' letters or followers (they
    are the assemblies', and no row says which facilitator wrote a letter)."""
    memberships = await session.execute(
        select(Assembly.handle, Assembly.name, Membership.role, Membership.created_at)
        .join(Assembly, Assembly.id == Membership.assembly_id)
        .where(Membership.user_id == user.id)
        .order_by(Membership.created_at, Membership.id)
    )
    invitations = await session.execute(
        select(Invitation, Assembly.handle)
        .join(Assembly, Assembly.id == Invitation.assembly_id)
        .where(Invitation.invited_by_id == user.id)
        .order_by(Invitation.created_at, Invitation.id)
    )
    requested = await session.scalars(
        select(Assembly).where(Assembly.requested_by_id == user.id).order_by(Assembly.id)
    )
    uploads = await session.execute(
        select(Media, Assembly.handle)
        .join(Assembly, Assembly.id == Media.assembly_id)
        .where(Media.uploaded_by_id == user.id)
        .order_by(Media.created_at, Media.id)
    )
    sessions = await session.scalars(
        select(WebSession).where(WebSession.user_id == user.id).order_by(WebSession.created_at)
    )
    return {
        "exported_at": _iso(now),
        "account": {
            "email": user.email,
            "email_confirmed_at": _iso(user.email_confirmed_at),
            "pending_email": user.pending_email,
            "instance_admin": user.is_admin,
            "status": user.status.value,
            "created_at": _iso(user.created_at),
            "last_login_at": _iso(user.last_login_at),
        },
        "memberships": [
            {"assembly": handle, "name": name, "role": role.value, "since": _iso(since)}
            for handle, name, role, since in memberships
        ],
        "invitations_sent": [
            {
                "assembly": handle,
                "email": invitation.email,
                "role": invitation.role.value,
                "sent_at": _iso(invitation.created_at),
                "accepted": invitation.accepted_at is not None,
            }
            for invitation, handle in invitations
        ],
        "assemblies_requested": [
            {
                "assembly": a.handle,
                "name": a.name,
                "status": a.status.value,
                "requested_at": _iso(a.created_at),
            }
            for a in requested
        ],
        "uploads": [
            {
                "assembly": handle,
                "id": m.public_id,
                "media_type": m.media_type,
                "size": m.size,
                "file_name": m.original_name,
                "alt_text": m.alt_text,
                "uploaded_at": _iso(m.created_at),
            }
            for m, handle in uploads
        ],
        "sessions": [
            {"signed_in_at": _iso(s.created_at), "expires_at": _iso(s.expires_at)} for s in sessions
        ],
    }


async def set_language(session: AsyncSession, user_id: int, language: str | None) -> None:
    """The language of the account's pages and e-mail (one of i18n.LANGUAGES, or None)."""
    if language is not None and language not in i18n.LANGUAGES:
        raise BadRequest("no such language", field="language")
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("no such account")
    user.language = language
    await session.flush()
