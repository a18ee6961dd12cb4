"""Apply the Alembic migrations to a database (used by `interocc migrate`, start-up and tests)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from server import address

# The migrations live beside the package in the source tree (alembic/ at the top level).
ROOT = Path(__file__).resolve().parent.parent


def alembic_config() -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    return cfg


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, base_url: str | None = None
) -> bool:
    """Upgrade to ``revision``. With ``base_url`` (`interocc migrate`), in the same transaction,
    check it against the instance's recorded address and record it if none is (see
    server/address.py): a database that belongs to another address is refused with a
    ConfigError and left as it was, schema included. True when the address was recorded now.
    """

    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        if base_url is not None:
            # Before Alembic starts (and logs that it does): a refusal is one line.
            await address.check_before_migrating(conn, base_url)
        await conn.run_sync(run)
        if base_url is None:
            return False
        return (await address.check(conn, base_url, record=True)).recorded_now


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(read)
