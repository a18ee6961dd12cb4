"""Hostile and odd spellings of the instance's address (server/address.py).

Only one spelling of each address passes, and it is exactly what INTEROCC_BASE_URL's own
parsing makes of it: nothing config refuses gets recorded through `set-address`, no other
address passes the check by being spelt like this one, and the spellings URL parsers disagree
on (user info, a backslash before an @, odd hosts and ports) are refused outright, even where
config lets them through.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from server import address
from server.config import ConfigError, load_settings
from server.db import create_engine
from server.models import Activity, InstanceSetting
from tests.conftest import SECRET
from tests.test_cli import INTEROCC, _env

HOME = "https://assemblies.example.org"

# What the address parsing refuses, whatever config makes of it.
HOSTILE = [
    # not an http(s) URL, or not only an origin (config refuses these too)
    "ftp://assemblies.example.org",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "//assemblies.example.org",
    "assemblies.example.org",
    "https://",
    "https://assemblies.example.org/path",
    "https://assemblies.example.org/?q=1",
    "https://assemblies.example.org/#top",
    "https://assemblies.example.org:99999",
    # user info: host b to some parsers, a to others; and credentials in every id
    "https://admin@assemblies.example.org",
    "https://admin:secret@assemblies.example.org",
    "https://evil.example@assemblies.example.org",
    "https://assemblies.example.org\\@evil.example",
    "https://assemblies.example.org%40evil.example",
    # a host written oddly: one server, or another, depending on who reads it
    "https://assemblies.example.org.",
    "https://ASSEMBLIES.example.org\u3002",
    "https://assemblies.éxample.org",
    "https://assemblies example.org",
    "https://assemblies_example.org",
    "https://assemblies.example.org;evil",
    "https://-assemblies.example.org",
    "https://127.1",
    "https://0x7f000001",
    "https://2130706433",
    "https://010.0.0.1",
    "https://[0:0:0:0:0:0:0:1]",
    "https://[::ffff:127.0.0.1]",
    # a port written oddly
    "https://assemblies.example.org:",
    "https://assemblies.example.org:0",
    "https://assemblies.example.org:0443",
    "https://assemblies.example.org:+443",
]

# Spellings of HOME: config makes HOME of each, and so does the address parsing.
SAME = [
    "https://assemblies.example.org",
    "https://assemblies.example.org/",
    "HTTPS://Assemblies.Example.ORG",
    "  https://assemblies.example.org/  ",
    "https://assemblies.example.org?",
    "https://assemblies.example.org#",
]

# Other addresses, however close: each mints other ids, so each is refused by the check.
OTHERS = [
    "http://assemblies.example.org",
    "https://assemblies.example.org:443",
    "https://assemblies.example.org:8443",
    "https://www.assemblies.example.org",
    "https://example.org",
    "https://assemblies.example.com",
    "https://xn--assemblies-9ua.example.org",
]


def config_base_url(raw: str) -> str:
    return load_settings({"INTEROCC_SECRET_KEY": SECRET, "INTEROCC_BASE_URL": raw}).base_url


@pytest.mark.parametrize("raw", HOSTILE)
def test_a_hostile_address_is_refused_naming_the_setting(raw: str) -> None:
    with pytest.raises(ConfigError) as refused:
        address.parse(raw)
    assert "INTEROCC_BASE_URL" in str(refused.value)
    with pytest.raises(ConfigError, match="the new address"):
        address.parse(raw, name="the new address")


@pytest.mark.parametrize("raw", SAME + OTHERS + ["http://127.0.0.1:8000", "http://[::1]:8000"])
def test_an_accepted_address_is_exactly_what_config_makes_of_it(raw: str) -> None:
    # Ids are minted from config's base_url: the recorded address must be the same string.
    assert address.parse(raw) == config_base_url(raw)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


async def _recorded_value(conn: AsyncConnection, value: Any) -> None:
    async with conn.begin():
        await conn.execute(delete(InstanceSetting).where(InstanceSetting.key == "base_url"))
        await conn.execute(insert(InstanceSetting).values(key="base_url", value=value))


async def test_no_other_address_passes_the_check_by_its_spelling(conn: AsyncConnection) -> None:
    async with conn.begin():
        await address.check(conn, HOME, record=True)
    for raw in SAME:
        async with conn.begin():
            assert (await address.check(conn, raw)).address == HOME
    for raw in OTHERS:
        async with conn.begin():
            with pytest.raises(ConfigError, match=f"this database is the instance at {HOME}"):
                await address.check(conn, config_base_url(raw))
    # What config lets through but the address parsing does not is refused too.
    for raw in ("https://admin@assemblies.example.org", "https://assemblies.example.org\\@x"):
        async with conn.begin():
            with pytest.raises(ConfigError, match="user name or password"):
                await address.check(conn, config_base_url(raw))


@pytest.mark.parametrize(
    "value",
    [
        "https://Assemblies.example.org",  # not as config writes it: compared loosely, never
        "https://assemblies.example.org/",
        "https://admin@assemblies.example.org",
        "ftp://assemblies.example.org",
        "",
        None,
        42,
        {"url": HOME},
        [HOME],
    ],
)
async def test_a_damaged_recorded_address_is_refused_not_guessed(
    conn: AsyncConnection, value: Any
) -> None:
    await _recorded_value(conn, value)
    async with conn.begin():
        with pytest.raises(ConfigError, match="damaged"):
            await address.check(conn, HOME, record=True)
    # set-address repairs it.
    async with conn.begin():
        done = await address.change(conn, HOME)
    assert done.changed and done.new == HOME
    async with conn.begin():
        assert await address.recorded(conn) == HOME


async def test_set_address_records_nothing_config_would_refuse(conn: AsyncConnection) -> None:
    async with conn.begin():
        await address.check(conn, HOME, record=True)
    for raw in HOSTILE:
        async with conn.begin():
            with pytest.raises(ConfigError, match="the new address"):
                await address.change(conn, raw, force=True)
        async with conn.begin():
            assert await address.recorded(conn) == HOME


async def test_forwarded_activities_do_not_pass_for_ours(conn: AsyncConnection) -> None:
    """Without a recorded address the check falls back on where the database's own
    activities were published. Activities forwarded for others are stored under their own
    ids; even one whose id looks like ours belongs to another server."""
    async with conn.begin():
        for public_id, uri in [
            ("ours000000000001", f"{HOME}/activities/ours000000000001"),
            ("fwd0000000000001", "https://evil.example/activities/ours000000000001"),
            ("fwd0000000000002", "https://evil.example/activities/anything"),
        ]:
            await conn.execute(
                insert(Activity).values(
                    public_id=public_id, uri=uri, type="Create", document={}, public=False
                )
            )
        assert await address.published_under(conn) == HOME
        with pytest.raises(ConfigError, match=f"published its activities as {HOME}"):
            await address.check(conn, "https://evil.example")


def test_the_cli_refuses_an_address_config_lets_through(tmp_path: Path) -> None:
    """User info in INTEROCC_BASE_URL: one line that does not repeat the password, and not
    even a database file is made."""
    database = tmp_path / "data" / "interocc.sqlite3"
    env = _env(f"sqlite+aiosqlite:///{database}")
    env["INTEROCC_BASE_URL"] = "http://admin:hunter2hunter2@127.0.0.1:8765"
    done = subprocess.run(
        [str(INTEROCC), "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr == (
        "interocc: configuration error: INTEROCC_BASE_URL must have no user name or password"
        " (user@ before the host)\n"
    )
    assert not database.parent.exists()

    # Nor can set-address record one.
    env["INTEROCC_BASE_URL"] = "http://127.0.0.1:8765"
    assert subprocess.run([str(INTEROCC), "migrate"], env=env, capture_output=True).returncode == 0
    done = subprocess.run(
        [str(INTEROCC), "instance", "set-address", "https://admin:hunter2hunter2@example.org"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert done.stderr == (
        "interocc: the new address must have no user name or password (user@ before the host)\n"
    )
