"""People who sign in: accounts, argon2id passwords, browser sessions and login rate limits."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import BadRequest, Conflict, NotFound
from server.models import LoginFailure, User, UserStatus, WebSession

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
) -> User:
    email = normalise_email(email)
    # argon2 costs tens of milliseconds of CPU: off the event loop.
    password_hash = await asyncio.to_thread(hash_password, password)
    if await find_by_email(session, email) is not None:
        raise Conflict("an account with this e-mail address already exists", field="email")
    user = User(email=email, password_hash=password_hash, is_admin=is_admin, status=status)
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
