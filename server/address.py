"""The instance's address (INTEROCC_BASE_URL), recorded in the database it belongs to.

Every id we publish (actors, keys, communiqués, activities) starts with the address, so every
process that works on one database must use the same one: a command run from a shell with
another INTEROCC_BASE_URL would publish ids nobody can fetch. `interocc migrate` records the
address (the ``base_url`` row of ``instance_settings``); `serve`, `worker` and every other
command compare their own with it before they touch anything, and stop with one line when they
differ. `interocc instance set-address` changes it, and refuses once the instance federated.

A database migrated before addresses were recorded has none: `migrate`, `serve` and `worker`
record theirs (and say so); other commands record nothing but still refuse an address other
than the one the database's own activities were published under.

These functions work on a connection, not a session: they run before any session exists, and
inside `interocc migrate`'s own transaction (server/migrate.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

# config's own parsing, so that nothing it refuses passes here (it is private to config.py:
# only this module needs the raw rules)
from server.config import ConfigError, _base_url
from server.errors import Conflict
from server.models import Activity, Follower, Following, InboxActivity, InboxItem, InstanceSetting

__all__ = [
    "KEY",
    "Change",
    "Checked",
    "change",
    "check",
    "check_before_migrating",
    "describe",
    "footprint",
    "forget",
    "parse",
    "published_under",
    "recorded",
    "refusal",
    "replace",
]

KEY = "base_url"
SETTING = "INTEROCC_BASE_URL"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")


def parse(raw: str, *, name: str = SETTING) -> str:
    """``raw`` as the address ids are minted from: what INTEROCC_BASE_URL's own parsing makes
    of it (scheme and host lower-cased, no trailing slash), refused where that parsing is
    lenient. Only one spelling of each server passes, so no two spellings of one address can
    be told apart, and none can be read as another server by another URL parser: no user
    name or password (``http://a@b`` is host b to some, a to others), nothing but the ASCII
    letters, digits, dots and hyphens of a host name (IDNs in their xn-- form), a canonical
    IP address, and a port written plainly (no ``:`` alone, no leading zero)."""
    try:
        address = _base_url(raw)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(SETTING, name, 1)) from None
    netloc = address.split("://", 1)[1]
    if "@" in netloc:
        # Not repeated: it may hold a password, and this line goes to logs.
        raise ConfigError(f"{name} must have no user name or password (user@ before the host)")
    host, port = _split_port(netloc)
    if port is not None and (not _PORT.fullmatch(port) or int(port) > 65535):
        raise ConfigError(f"{name} has a bad port: {raw!r}")
    if not _canonical_host(host):
        raise ConfigError(
            f"{name} must name its host plainly (a DNS name in ASCII, xn-- for international "
            f"names, or an IP address written the usual way), not {raw!r}"
        )
    return address


def _split_port(netloc: str) -> tuple[str, str | None]:
    host, colon, port = netloc.rpartition(":")
    if not colon or "]" in port:  # no port (an IPv6 literal's colons are inside brackets)
        return netloc, None
    return host, port


def _canonical_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed == host[1:-1]
        except ValueError:
            return False
    labels = host.split(".")
    # A host whose last label is a number is an IPv4 address to WHATWG URL parsers (browsers,
    # Node): 127.1, 010.0.0.1, 0x7f000001 and 2130706433 are all 127.0.0.1 there.
    if _NUMBER.fullmatch(labels[-1]):
        try:
            return str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            return False
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def _origin(uri: str, public_id: str) -> str | None:
    """The address an activity of ours was minted under (``{address}/activities/{id}``)."""
    tail = f"/activities/{public_id}"
    return uri.removesuffix(tail) if public_id and uri.endswith(tail) else None


# -- reading --------------------------------------------------------------------------------


async def recorded(conn: AsyncConnection) -> str | None:
    """The recorded address; None when none is. Raises ConfigError if the row is damaged."""
    query = select(InstanceSetting.value).where(InstanceSetting.key == KEY)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    value = row[0]
    try:
        if isinstance(value, str) and parse(value) == value:
            return value
    except ConfigError:
        pass
    raise ConfigError(
        f"the instance's address recorded in this database ({value!r}) is damaged: record "
        "the right one with `interocc instance set-address URL`"
    )


async def published_under(conn: AsyncConnection) -> str | None:
    """The address of the newest activity this database published, if it published any.
    (Activities forwarded for others keep their own ids, which end otherwise.)"""
    query = select(Activity.uri, Activity.public_id).order_by(Activity.id.desc()).limit(50)
    for uri, public_id in (await conn.execute(query)).all():
        origin = _origin(uri, public_id)
        if origin is not None:
            return origin
    return None


def refusal(current: str, *, recorded: str | None, published: str | None) -> str | None:
    """Why a process with the address ``current`` must not work on this database; None when
    it may. ``recorded`` wins; without it, the address activities were published under."""
    if recorded is not None:
        if recorded == current:
            return None
        return (
            f"{SETTING} is {current}, but this database is the instance at {recorded}: set "
            f"{SETTING}={recorded}, or change the instance's address with `interocc instance "
            f"set-address {current}` (before it federates)"
        )
    if published is not None and published != current:
        return (
            f"{SETTING} is {current}, but this database published its activities as "
            f"{published}: set {SETTING}={published}"
        )
    return None


@dataclass(frozen=True)
class Checked:
    address: str
    recorded_now: bool  # the database had none: this process recorded its own


async def check(
    conn: AsyncConnection, current: str, *, record: bool = False, recorded_only: bool = False
) -> Checked:
    """Refuse (ConfigError, one line) a ``current`` address that is not this database's;
    with ``record``, record it if the database has none. Changes nothing when it refuses.
    ``recorded_only`` compares with a recorded address only, never with the activities'."""
    current = parse(current)
    found = await recorded(conn)
    published = await published_under(conn) if found is None and not recorded_only else None
    reason = refusal(current, recorded=found, published=published)
    if reason is not None:
        raise ConfigError(reason)
    if found is not None or not record:
        return Checked(current, recorded_now=False)
    try:
        # A savepoint: two processes starting together on PostgreSQL may both insert.
        async with conn.begin_nested():
            await conn.execute(insert(InstanceSetting).values(key=KEY, value=current))
    except IntegrityError:
        again = await recorded(conn)
        reason = refusal(current, recorded=again, published=None)
        if reason is not None:
            raise ConfigError(reason) from None
        return Checked(current, recorded_now=False)
    return Checked(current, recorded_now=True)


async def check_before_migrating(conn: AsyncConnection, current: str) -> None:
    """:func:`check` on a database at any schema revision (or none), without recording: what
    it reads is read where its table exists yet."""
    names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    found = await recorded(conn) if InstanceSetting.__tablename__ in names else None
    published = None
    if found is None and Activity.__tablename__ in names:
        published = await published_under(conn)
    reason = refusal(parse(current), recorded=found, published=published)
    if reason is not None:
        raise ConfigError(reason)


# -- changing -------------------------------------------------------------------------------


async def footprint(conn: AsyncConnection) -> dict[str, int]:
    """What other servers may hold of the instance under its present address, by kind."""
    counts = {
        "activities published": await _count(conn, Activity),
        "followers": await _count(conn, Follower),
        "follows": await _count(conn, Following),
        "activities received": await _count(conn, InboxActivity) + await _count(conn, InboxItem),
    }
    return {kind: n for kind, n in counts.items() if n}


async def _count(conn: AsyncConnection, model: type[object]) -> int:
    return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


def describe(found: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in found.items())


@dataclass(frozen=True)
class Change:
    old: str | None  # None: no address was recorded (nor any activity published)
    new: str
    changed: bool
    footprint: dict[str, int]  # what still carries the old address (only with force)


async def change(conn: AsyncConnection, new: str, *, force: bool = False) -> Change:
    """Record ``new`` as the instance's address. Refused (ConfigError naming the URL) for an
    address INTEROCC_BASE_URL would refuse, and (Conflict) once anything was published or
    exchanged under the old one, unless ``force``: other servers know the instance's ids,
    and nothing we can send makes them take other ones."""
    new = parse(new, name="the new address")
    old = await _recorded_or_none(conn)
    if old is None:
        old = await published_under(conn)
    if old == new:
        return Change(old, new, changed=False, footprint={})
    found = await footprint(conn)
    if found and not force:
        was = f"as {old}" if old else "under its present address"
        raise Conflict(
            f"this instance already federated {was} ({describe(found)}): other servers know "
            f"its ids, and would not recognise it at {new}; add --force to change it anyway"
        )
    await forget(conn)
    await conn.execute(insert(InstanceSetting).values(key=KEY, value=new))
    return Change(old, new, changed=True, footprint=found)


async def _recorded_or_none(conn: AsyncConnection) -> str | None:
    """The recorded address, or None when none is or when it is damaged (being replaced)."""
    try:
        return await recorded(conn)
    except ConfigError:
        return None


async def forget(conn: AsyncConnection) -> str | None:
    """Remove the recorded address (for a restore, which needs an empty database and
    records it again); the one removed, if any."""
    old = await _recorded_or_none(conn)
    await conn.execute(delete(InstanceSetting).where(InstanceSetting.key == KEY))
    return old


async def replace(conn: AsyncConnection, address: str) -> None:
    """Record ``address`` whatever was recorded (after a restore: the instance restored runs
    at this address)."""
    address = parse(address)
    done = await conn.execute(
        update(InstanceSetting).where(InstanceSetting.key == KEY).values(value=address)
    )
    if not done.rowcount:
        await conn.execute(insert(InstanceSetting).values(key=KEY, value=address))
