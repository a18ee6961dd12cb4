"""The Alembic migrations build exactly the schema the models describe, on both engines,
and can be undone and redone.

Each test starts from an empty database of its own (not the migrated template the other
tests clone), so the first migration really runs.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from server import migrate
from server.db import create_engine
from server.models import Base
from tests.conftest import _pg_admin, _pg_url


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"interocc_mig_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f"CREATE DATABASE {name}"))
    yield _pg_url(name)
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(empty_database_url)
    yield engine
    await engine.dispose()


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        names: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return set(names)


async def schema_differences(engine: AsyncEngine) -> list[Any]:
    """What autogenerate would write to make the database match the models: nothing."""

    def compare(conn: Connection) -> list[Any]:
        # The options alembic/env.py autogenerates with (server defaults are not compared:
        # a migration may keep one to fill existing rows, e.g. 0003's mentions "[]").
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


def model_tables() -> set[str]:
    return set(Base.metadata.tables)


async def test_upgrade_downgrade_upgrade(engine: AsyncEngine) -> None:
    head = migrate.head_revision()
    assert head is not None
    assert await migrate.current_revision(engine) is None
    assert await tables(engine) == set()

    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == head
    assert await tables(engine) == model_tables() | {"alembic_version"}
    assert await schema_differences(engine) == []

    await migrate.downgrade(engine, "base")
    assert await migrate.current_revision(engine) is None
    assert await tables(engine) <= {"alembic_version"}  # every table of ours is gone

    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == head
    assert await schema_differences(engine) == []

    # Upgrading an up-to-date database changes nothing.
    await migrate.upgrade(engine)
    assert await migrate.current_revision(engine) == head


async def test_each_revision_steps_up_and_down(engine: AsyncEngine) -> None:
    """Walk the history one revision at a time: every step applies and reverts cleanly."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions[-1] == migrate.head_revision()
    for revision in revisions:
        await migrate.upgrade(engine, revision)
        assert await migrate.current_revision(engine) == revision
    assert await schema_differences(engine) == []
    for previous in [*reversed(revisions[:-1]), None]:
        await migrate.downgrade(engine, previous or "base")
        assert await migrate.current_revision(engine) == previous
    assert await tables(engine) <= {"alembic_version"}


async def test_assemblies_made_before_0011_get_a_proof_key(engine: AsyncEngine) -> None:
    """0011 gives every existing assembly its own Ed25519 key (a Multikey in its actor)."""
    import sqlalchemy as sa
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    await migrate.upgrade(engine, "0010")

    def insert(conn: Connection) -> None:
        table = sa.Table("assemblies", sa.MetaData(), autoload_with=conn)
        for handle in ("plaza", "sol"):
            row: dict[str, Any] = {}
            for column in table.columns:
                if column.primary_key or column.nullable:
                    continue
                kind = column.type
                if isinstance(kind, sa.Enum):
                    row[column.name] = kind.enums[0]
                elif isinstance(kind, sa.Boolean):
                    row[column.name] = False
                elif isinstance(kind, sa.JSON):
                    row[column.name] = []
                elif isinstance(kind, sa.DateTime):
                    row[column.name] = datetime.now(UTC)
                else:
                    row[column.name] = handle
            conn.execute(table.insert().values(**row))

    async with engine.begin() as conn:
        await conn.run_sync(insert)
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        pems = (await conn.execute(sa.text("SELECT ed25519_private_key_pem FROM assemblies"))).all()
    keys = [serialization.load_pem_private_key(p.encode(), password=None) for (p,) in pems]
    assert len(keys) == 2 and all(isinstance(k, ed25519.Ed25519PrivateKey) for k in keys)
    assert pems[0] != pems[1]  # one key each
