"""Async engine and session factory. Built at start-up, never at import time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, make_url
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

Sessions = async_sessionmaker[AsyncSession]


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_setup(sync_engine: Engine) -> None:
    """The pragmas and the BEGIN IMMEDIATE of every SQLite connection we open."""

    @event.listens_for(sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # WAL lets the web process read while the worker writes; busy_timeout makes a
        # second writer wait instead of failing with "database is locked".
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # In WAL mode NORMAL is still crash-safe for the database; it only skips the
        # fsync on every commit.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        # Take over transaction control so that every transaction starts with
        # BEGIN IMMEDIATE: two deferred transactions that both upgrade to writing can
        # deadlock, and SQLite then fails one at once instead of waiting.
        dbapi_conn.isolation_level = None

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_setup(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def create_sqlite_writer(url: str) -> Engine | None:
    """A synchronous engine (the sqlite3 driver) on the same SQLite file, for a writer that
    runs a whole transaction in one call on a thread of its own; None for a database that
    is not a SQLite file (PostgreSQL, or SQLite in memory, which another connection would
    not see)."""
    if not is_sqlite(url):
        return None
    parsed = make_url(url)
    if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
        return None
    engine = sa_create_engine(
        parsed.set(drivername="sqlite"), connect_args={"timeout": 30, "check_same_thread": False}
    )
    _sqlite_setup(engine)
    return engine


def create_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)
