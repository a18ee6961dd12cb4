"""Fast federation reads: an in-process cache of GET answers, dropped on commit, with ETags.

Other servers fetch the same few documents over and over (an assembly's actor, a new
communiqué and its author right after it is delivered to every follower's server), and each
answer was rebuilt from the database. :class:`ReadCache` keeps the rendered bytes of a
``200`` answer under a key naming everything the answer depends on (the route's path, the
query parameters the route reads, the negotiated media type); a request runs every check
that depends on who asks (authorized fetch, blocked domains) before it is answered from the
cache, and HTML pages (which vary with the visitor) are never kept.

Invalidation, without a list to keep up to date. While an answer is rendered, every SQL
statement it runs is seen by a SQLAlchemy ``before_cursor_execute`` listener (through a
context variable, which SQLAlchemy's greenlets share with the task), and the tables the
statement names become the entry's dependencies. Every write statement of the process
(ORM flushes, bulk ``update()``/``delete()``, Core on ``engine.begin()``, raw SQL) is seen by
the same listener, which notes the tables it names on its connection; at commit those
tables, and the tables their ``ON DELETE`` rules reach, drop every entry that read one of
them, in every cache of the process. A rollback forgets the noted tables. Tables no answer
reads (the inbox queue, deliveries, sessions, login failures…) never drop anything, because
no entry depends on them. A statement whose tables cannot be told (DDL, a write naming no
known table) drops everything.

Two races are closed. The ``commit`` event fires before the database has committed, so an
answer rendered in between could still read the old rows: the tables are dropped again
once the connection is back in the pool (or begins its next transaction), after the commit.
And an answer whose rendering overlapped an invalidation of a table it read is not kept
(per-table versions), so a slow render never stores what it read before a change.

The listeners are registered once for the whole process on SQLAlchemy's ``Engine`` and
``Pool`` classes, so no engine (the web app's, the in-process worker's, the CLI's, the
inbox's SQLite writer) can write past them. :class:`Memo` keeps loaded values (the inbox's
domain blocks and signing keys) by the same rules. Other processes cannot be heard:
entries live ``INTEROCC_READ_CACHE_SECONDS`` (default 5), which bounds how stale another
web process or ``interocc worker`` can make an answer here; 0 turns the cache off (ETags and
304s stay).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool
from starlette.requests import Request
from starlette.responses import Response

from server.models import Base

__all__ = ["Answer", "Memo", "ReadCache", "cache_of", "etag_matches", "invalidate", "respond"]

MAX_ENTRIES = 4096
MAX_ENTRY_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 64 * 1024 * 1024
# Headers a 304 carries over from the 200 it stands for (RFC 9110 §15.4.5), and CORS.
VALIDATOR_HEADERS = frozenset(
    {
        b"etag",
        b"vary",
        b"cache-control",
        b"content-location",
        b"expires",
        b"access-control-allow-origin",
    }
)
ALL = "*"  # "every table": a write whose tables cannot be told

Key = tuple[Hashable, ...]


# --- What a statement reads or writes --------------------------------------------------------

# Statements that change no row: transaction control, SQLite pragmas, PostgreSQL settings.
_NOT_WRITES = ("SELECT", "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "SHOW")
_ROW_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "TRUNCATE")
_WRITE_WORD = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


@dataclass
class _Schema:
    """The table names to look for in SQL, and which tables a write to one may change
    through the database's own ``ON DELETE``/``ON UPDATE`` rules (CASCADE, SET NULL)."""

    names: re.Pattern[str]
    reaches: dict[str, frozenset[str]]


_schema: _Schema | None = None


def _load_schema() -> _Schema:
    global _schema
    if _schema is None:
        tables = Base.metadata.tables
        children: dict[str, set[str]] = {name: set() for name in tables}
        for table in tables.values():
            for fk in table.foreign_keys:
                rules = {(fk.ondelete or "").upper(), (fk.onupdate or "").upper()}
                if rules & {"CASCADE", "SET NULL", "SET DEFAULT"}:
                    children.setdefault(fk.column.table.name, set()).add(table.name)
        reaches: dict[str, frozenset[str]] = {}
        for name in children:
            seen, todo = {name}, [name]
            while todo:
                for child in children.get(todo.pop(), ()):
                    if child not in seen:
                        seen.add(child)
                        todo.append(child)
            reaches[name] = frozenset(seen)
        alternatives = "|".join(sorted((re.escape(n) for n in tables), key=len, reverse=True))
        _schema = _Schema(re.compile(rf"\b({alternatives})\b"), reaches)
    return _schema


def tables_named(statement: str) -> set[str]:
    """The known tables a SQL statement names anywhere (more than it touches, never fewer:
    a column named like a table only adds a dependency)."""
    return set(_load_schema().names.findall(statement))


def _head(statement: str) -> str:
    return statement.lstrip(" \t\r\n(").upper()


def written_tables(statement: str) -> set[str] | None:
    """The tables a statement may change, ``{ALL}`` if that cannot be told, None for a
    statement that changes no row."""
    head = _head(statement)
    if head.startswith(_NOT_WRITES) or head.startswith("SET "):
        return None
    if head.startswith("WITH") and not _WRITE_WORD.search(statement):
        return None
    if head.startswith(_ROW_WRITES) or head.startswith("WITH"):
        schema = _load_schema()
        named = tables_named(statement)
        reached: set[str] = set()
        for name in named:
            reached |= schema.reaches.get(name, frozenset((name,)))
        return reached or {ALL}
    return {ALL}  # CREATE, ALTER, DROP, anything unknown


# --- The process-wide record of changes ------------------------------------------------------

# Everything below is guarded by _LOCK: a process serves from one event loop, but tests run
# the app in a thread beside the loop that writes.
_LOCK = threading.RLock()
_caches: weakref.WeakSet[_Keeper[Any]] = weakref.WeakSet()
_tick = 0
_dropped_at: dict[str, int] = {}  # table → tick of its last invalidation (ALL included)
_reads: ContextVar[set[str] | None] = ContextVar("interocc_read_cache_reads", default=None)

_PENDING = "interocc_read_cache_pending"  # tables written in the connection's transaction
_COMMITTED = "interocc_read_cache_committed"  # tables to drop again once the commit is done


def invalidate(tables: set[str] | frozenset[str]) -> None:
    """Drop the entries that read any of ``tables`` (all of them for ``ALL``) in every cache
    of the process, and mark the tables changed for renders under way."""
    global _tick
    if not tables:
        return
    with _LOCK:
        _tick += 1
        for table in tables:
            _dropped_at[table] = _tick
        for cache in list(_caches):
            cache._drop(tables)


def _before_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    written = None if _head(statement).startswith("SELECT") else written_tables(statement)
    if written is not None:
        conn.info.setdefault(_PENDING, set()).update(written)
        return
    reads = _reads.get()
    if reads is not None:
        reads.update(tables_named(statement))


def _on_begin(conn: Connection) -> None:
    committed = conn.info.pop(_COMMITTED, None)
    conn.info.pop(_PENDING, None)
    if committed:
        invalidate(committed)


def _on_commit(conn: Connection) -> None:
    written = conn.info.pop(_PENDING, None)
    if written:
        invalidate(written)  # before the commit: no entry is served from now on…
        conn.info.setdefault(_COMMITTED, set()).update(written)  # …nor kept from before it


def _on_rollback(conn: Connection) -> None:
    conn.info.pop(_PENDING, None)


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    if record is None:
        return
    record.info.pop(_PENDING, None)
    committed = record.info.pop(_COMMITTED, None)
    if committed:
        invalidate(committed)  # the commit has completed: drop what was read meanwhile


def _install() -> None:
    """Listen to every engine and pool of the process (once, however often imported)."""
    if event.contains(Engine, "before_cursor_execute", _before_cursor_execute):
        return
    event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(Engine, "begin", _on_begin)
    event.listen(Engine, "commit", _on_commit)
    event.listen(Engine, "rollback", _on_rollback)
    event.listen(Pool, "checkin", _on_checkin)


_install()


# --- Answers ---------------------------------------------------------------------------------


def etag_of(content_type: str, body: bytes) -> str:
    """A strong validator: the representation's bytes and media type (two media types with
    the same bytes are two representations, RFC 9110 §8.8.3)."""
    digest = hashlib.sha256(content_type.encode("latin-1") + b"\n" + body).hexdigest()
    return f'"{digest[:32]}"'


_ENTITY_TAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match field value (all its lines joined by commas) names ``etag``.

    RFC 9110 §13.1.2: ``*`` matches any current representation; otherwise a list of entity
    tags compared weakly (``W/"x"`` matches ``"x"``). A malformed member matches nothing.
    """
    value = if_none_match.strip()
    if not value:
        return False
    if value == "*":
        return True
    position = 0
    while position < len(value):
        found = _ENTITY_TAG.match(value, position)
        if found is None:
            # Skip a malformed member up to the next comma.
            comma = value.find(",", position)
            if comma < 0:
                return False
            position = comma + 1
            continue
        if found.group(1) == etag:
            return True
        position = found.end()
    return False


@dataclass(frozen=True)
class Answer:
    """A ``200`` answer as bytes and headers, with its ETag: what the cache keeps."""

    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]  # as sent, content-length aside, ETag included
    etag: str

    @classmethod
    def of(cls, response: Response) -> Answer | None:
        """The answer of a rendered response, or None if it must not be kept: not a 200,
        an HTML page (it varies with the visitor), one that sets a cookie, a streamed body."""
        body = getattr(response, "body", None)
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not isinstance(body, bytes):
            return None
        if content_type.startswith(("text/html", "application/xhtml+xml")):
            return None
        if "set-cookie" in response.headers:
            return None
        etag = etag_of(content_type, body)
        headers = tuple(
            (name, value)
            for name, value in response.raw_headers
            if name not in {b"content-length", b"etag"}
        )
        return cls(body=body, headers=(*headers, (b"etag", etag.encode("latin-1"))), etag=etag)

    def respond(self, request: Request) -> Response:
        """The answer, or ``304 Not Modified`` with no body if the requester holds it."""
        conditions = ",".join(request.headers.getlist("if-none-match"))
        if request.method in {"GET", "HEAD"} and etag_matches(conditions, self.etag):
            response = Response(status_code=304)
            response.raw_headers = [(n, v) for n, v in self.headers if n in VALIDATOR_HEADERS]
            return response
        response = Response(self.body, status_code=200)  # content-length only
        response.raw_headers.extend(self.headers)
        return response


def respond(request: Request, answer: Answer | Response) -> Response:
    """An answer with its conditional request applied; any other response as it is."""
    return answer.respond(request) if isinstance(answer, Answer) else answer


# --- The cache -------------------------------------------------------------------------------


V = TypeVar("V")
T = TypeVar("T")


@dataclass
class _Entry(Generic[V]):
    value: V
    reads: frozenset[str]
    expires: float
    size: int


@dataclass
class Stats:
    """Counters for tests and for measuring (per cache)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    dropped: int = 0


@dataclass(eq=False)  # compared and hashed by identity (a member of a WeakSet)
class _Keeper(Generic[V]):
    """Values by key, each with the tables its loading read: least recently used first out,
    at most ``max_entries`` entries and ``max_total_bytes`` bytes (as ``_size`` counts them),
    each kept ``ttl`` seconds at most (0: nothing is kept), and dropped by :func:`invalidate`
    when a table it read is written."""

    ttl: float
    max_entries: int = MAX_ENTRIES
    max_total_bytes: int = MAX_TOTAL_BYTES
    clock: Callable[[], float] = time.monotonic
    stats: Stats = field(default_factory=Stats)
    _entries: OrderedDict[Hashable, _Entry[V]] = field(default_factory=OrderedDict, repr=False)
    _by_table: dict[str, set[Hashable]] = field(default_factory=dict, repr=False)
    _bytes: int = 0

    def __post_init__(self) -> None:
        with _LOCK:
            _caches.add(self)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    @property
    def size(self) -> int:
        """How many values are kept."""
        return len(self._entries)

    def _size(self, value: V) -> int:
        return 0

    def _lookup(self, key: Hashable) -> _Entry[V] | None:
        if not self.enabled:
            return None
        with _LOCK:
            entry = self._entries.get(key)
            if entry is not None and entry.expires <= self.clock():
                self._remove(key)
                entry = None
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry

    @staticmethod
    async def _loaded(load: Callable[[], Awaitable[T]]) -> tuple[T, frozenset[str], int]:
        """``load()``'s value, the tables it read, and the tick it started at."""
        start = _tick
        reads: set[str] = set()
        token = _reads.set(reads)
        try:
            value = await load()
        finally:
            _reads.reset(token)
        return value, frozenset(reads), start

    def _put(self, key: Hashable, value: V, reads: frozenset[str], start: int) -> None:
        if not self.enabled:
            return
        size = self._size(value)
        with _LOCK:
            if _dropped_at.get(ALL, 0) > start or any(_dropped_at.get(t, 0) > start for t in reads):
                return  # a table it read changed while it was loaded
            self._remove(key)
            self._entries[key] = _Entry(value, reads, self.clock() + self.ttl, size)
            self._bytes += size
            for table in reads:
                self._by_table.setdefault(table, set()).add(key)
            self.stats.stores += 1
            while self._entries and (
                len(self._entries) > self.max_entries or self._bytes > self.max_total_bytes
            ):
                self._remove(next(iter(self._entries)))

    def _remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for table in entry.reads:
            keys = self._by_table.get(table)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_table[table]

    def _drop(self, tables: set[str] | frozenset[str]) -> None:
        """Called by :func:`invalidate` under the lock."""
        if ALL in tables:
            doomed: set[Hashable] = set(self._entries)
        else:
            doomed = set()
            for table in tables:
                doomed |= self._by_table.get(table, set())
        for key in doomed:
            self._remove(key)
        self.stats.dropped += len(doomed)

    def clear(self) -> None:
        with _LOCK:
            self._drop({ALL})


@dataclass(eq=False)
class ReadCache(_Keeper[Answer]):
    """Rendered federation answers by key: least recently used first out, at most
    ``max_entries`` entries and ``max_total_bytes`` bytes, none over ``max_entry_bytes``;
    each lives ``ttl`` seconds at most (0: nothing is kept)."""

    max_entry_bytes: int = MAX_ENTRY_BYTES

    def _size(self, value: Answer) -> int:
        return len(value.body)

    def get(self, key: Key) -> Answer | None:
        entry = self._lookup(key)
        return entry.value if entry is not None else None

    async def answer(
        self, key: Key | None, render: Callable[[], Awaitable[Response]]
    ) -> Answer | Response:
        """The kept answer for ``key``, else ``render()``'s, kept if it may be. ``render``
        must do only what the answer depends on (the database reads); every check on the
        requester must have been made before. A ``None`` key renders without keeping (the
        answer still gets its ETag)."""
        if key is not None:
            found = self.get(key)
            if found is not None:
                return found
        response, reads, start = await self._loaded(render)
        answer = Answer.of(response)
        if answer is None:
            return response
        if key is not None and len(answer.body) <= self.max_entry_bytes:
            self._put(key, answer, reads, start)
        return answer


@dataclass(eq=False)
class Memo(_Keeper[V]):
    """Values loaded from the database, kept like the read cache keeps answers: dropped when
    a table their loading read is written in this process, and after ``ttl`` seconds at most
    (what another process wrote). The inbox keeps the domain blocks and the signers' keys in
    one, so that a verified POST reads nothing from the database before it is queued."""

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        entry = self._lookup(key)
        if entry is not None:
            return entry.value
        value, reads, start = await self._loaded(load)
        self._put(key, value, reads, start)
        return value


@contextlib.contextmanager
def reading() -> Iterator[set[str]]:
    """The tables the statements run inside the block read (for tests and diagnostics)."""
    reads: set[str] = set()
    token = _reads.set(reads)
    try:
        yield reads
    finally:
        _reads.reset(token)


_OFF = ReadCache(ttl=0)


def cache_of(request: Request) -> ReadCache:
    """The app's cache (``create_app`` makes one per app); a cache that keeps nothing for an
    app built without it."""
    cache = getattr(request.app.state, "read_cache", None)
    return cache if isinstance(cache, ReadCache) else _OFF
