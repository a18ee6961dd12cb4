"""Acceptance: one instance, one address. The database records INTEROCC_BASE_URL at the first
`interocc migrate`; every process that works on it with another address stops with one line
and stores nothing; `interocc instance set-address` changes it before the instance federates.

Commands run as real processes, as an admin runs them from a shell (tests/test_cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server import accounts, address, assemblies
from server.app import create_app
from server.config import ConfigError
from server.context import create_context
from server.db import create_engine
from server.models import (
    Activity,
    Communique,
    Delivery,
    Follower,
    InstanceSetting,
    RemoteActor,
)
from tests.conftest import make_settings
from tests.helpers import approved_assembly, post
from tests.support.servers import free_port
from tests.test_cli import BASE_URL, INTEROCC, Run, _env, query, snapshot

ELSEWHERE = "http://127.0.0.1:9999"
NEW_HOME = "https://assemblies.example.org"


def start(
    database_url: str, *args: str, base_url: str = BASE_URL, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(INTEROCC), *args],
        env={**_env(database_url), "INTEROCC_BASE_URL": base_url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], args: tuple[str, ...]) -> Run:
    stdout, stderr = proc.communicate(timeout=60)
    return Run(args, proc.returncode, stdout, stderr)


def run(database_url: str, *args: str, base_url: str = BASE_URL, **env: str) -> Run:
    return finish(start(database_url, *args, base_url=base_url, **env), args)


def ok(database_url: str, *args: str, base_url: str = BASE_URL, **env: str) -> Run:
    done = run(database_url, *args, base_url=base_url, **env)
    assert done.returncode == 0, str(done)
    return done


def refused(done: Run, *says: str, code: int = 2) -> None:
    """One line on stderr, nothing on stdout, the exit code of a configuration error."""
    assert done.returncode == code, str(done)
    assert len(done.stderr_lines) == 1, str(done)
    assert done.stderr_lines[0].startswith("interocc: "), str(done)
    for text in says:
        assert text in done.stderr, f"expected {text!r} in\n{done}"
    assert done.stdout == "", str(done)


def all_refused(database_url: str, commands: list[tuple[str, ...]], *says: str) -> None:
    """Commands run side by side with ELSEWHERE: each refused, the database unchanged."""
    before = snapshot(database_url)
    procs = [(start(database_url, *args, base_url=ELSEWHERE), args) for args in commands]
    for proc, args in procs:
        refused(finish(proc, args), *says)
    assert snapshot(database_url) == before


def recorded(database_url: str) -> object:
    rows = query(
        database_url, select(InstanceSetting.value).where(InstanceSetting.key == "base_url")
    )
    return rows[0][0] if rows else None


def counts(database_url: str) -> tuple[int, int, int]:
    def n(model: type[object]) -> int:
        [(value,)] = query(database_url, select(func.count()).select_from(model))
        return int(value)

    return n(Communique), n(Activity), n(Delivery)


async def _follower(database_url: str, handle: str = "libertyplaza") -> None:
    """An approved assembly with one remote follower: a communiqué makes one delivery."""
    ctx = await create_context(make_settings(database_url, BASE_URL))
    try:
        await approved_assembly(ctx, handle)
        async with ctx.sessions() as session, session.begin():
            actor = RemoteActor(
                uri="https://remote.example/users/alice",
                domain="remote.example",
                inbox_uri="https://remote.example/users/alice/inbox",
            )
            session.add(actor)
            await session.flush()
            assembly = await assemblies.get(session, handle)
            session.add(
                Follower(
                    assembly_id=assembly.id,
                    actor_id=actor.id,
                    follow_uri="https://remote.example/follows/1",
                )
            )
    finally:
        await ctx.aclose()


# ---- the acceptance test -----------------------------------------------------------------


def test_a_command_run_with_another_address_stops_with_one_line_and_stores_nothing(
    database_url: str,
) -> None:
    done = ok(database_url, "migrate")
    assert f"recorded the instance's address, {BASE_URL}" in done.stdout
    assert recorded(database_url) == BASE_URL
    asyncio.run(_follower(database_url))
    done = ok(database_url, "post", "libertyplaza", "--text", "Asamblea a las 7.")
    assert done.stdout.startswith(f"{BASE_URL}/actors/libertyplaza/communiques/")
    assert counts(database_url) == (1, 1, 1)

    # The admin's shell has the default address, not the server's.
    before = snapshot(database_url)
    done = run(database_url, "post", "libertyplaza", "--text", "Lost.", base_url=ELSEWHERE)
    refused(
        done,
        f"INTEROCC_BASE_URL is {ELSEWHERE}, but this database is the instance at {BASE_URL}",
        f"set INTEROCC_BASE_URL={BASE_URL}",
        f"`interocc instance set-address {ELSEWHERE}`",
    )
    assert counts(database_url) == (1, 1, 1)
    assert snapshot(database_url) == before

    # Every other process refuses the same way: the server, the worker, a migration, and a
    # command that mints nothing.
    all_refused(
        database_url,
        [
            ("serve", "--port", str(free_port())),
            ("worker",),
            ("migrate",),
            ("assembly", "list"),
            ("deliveries",),
            ("backup", "--out", "/nonexistent/never-written.tar.gz"),
        ],
        f"INTEROCC_BASE_URL is {ELSEWHERE}",
    )

    # The same address spelt another way is the same address.
    done = ok(
        database_url, "post", "libertyplaza", "--text", "Bien.", base_url="HTTP://127.0.0.1:8765/"
    )
    assert done.stdout.startswith(f"{BASE_URL}/actors/libertyplaza/communiques/")
    assert counts(database_url) == (2, 2, 2)


# ---- a database migrated before addresses were recorded ---------------------------------


async def _publish(database_url: str, base_url: str) -> None:
    ctx = await create_context(make_settings(database_url, base_url))
    try:
        await approved_assembly(ctx)
        await post(ctx, "libertyplaza", "Published before the upgrade.")
    finally:
        await ctx.aclose()


@pytest.mark.sqlite_walkthrough
def test_a_database_from_before_adopts_its_address_at_the_next_migrate(database_url: str) -> None:
    # The tests' databases are migrated without an address, as every database was before.
    assert ok(database_url, "instance", "address").stdout == (
        f"none recorded yet: `interocc migrate` records {BASE_URL}\n"
    )
    asyncio.run(_publish(database_url, BASE_URL))

    # A command records nothing...
    before = snapshot(database_url)
    assert "libertyplaza" in ok(database_url, "assembly", "list").stdout
    assert snapshot(database_url) == before
    # ...but refuses an address other than the one its activities were published under.
    all_refused(
        database_url,
        [("assembly", "list"), ("migrate",)],
        f"this database published its activities as {BASE_URL}",
    )

    # The next migrate records it, and says so once.
    assert "recorded the instance's address" in ok(database_url, "migrate").stdout
    assert recorded(database_url) == BASE_URL
    assert ok(database_url, "migrate").stdout == "database is up to date\n"
    assert ok(database_url, "instance", "address").stdout == f"{BASE_URL}\n"


# ---- changing the address ----------------------------------------------------------------


@pytest.mark.sqlite_walkthrough
def test_set_address_changes_it_before_the_instance_federates(database_url: str) -> None:
    ok(database_url, "migrate")
    done = ok(database_url, "instance", "set-address", "HTTPS://Assemblies.Example.org/")
    assert done.stdout.splitlines() == [
        f"the instance's address is now {NEW_HOME} (it was {BASE_URL})",
        "actor, key, communiqué and activity ids start with it from now on, and handles end "
        "in @assemblies.example.org",
        f"set INTEROCC_BASE_URL={NEW_HOME} for every interocc process (serve, worker and these "
        "commands): one with another address stops at start",
    ]
    assert recorded(database_url) == NEW_HOME
    refused(run(database_url, "assembly", "list"), f"the instance at {NEW_HOME}")
    ok(database_url, "assembly", "list", base_url=NEW_HOME)
    done = ok(database_url, "instance", "set-address", NEW_HOME)
    assert done.stdout == f"the instance's address is already {NEW_HOME}\n"

    # Once something was published under it, other servers may know it: refused…
    asyncio.run(_publish(database_url, NEW_HOME))
    before = snapshot(database_url)
    refused(
        run(database_url, "instance", "set-address", BASE_URL),
        f"this instance already federated as {NEW_HOME} (1 activities published)",
        "add --force",
        code=1,
    )
    assert snapshot(database_url) == before
    # …unless the admin insists, and is told what keeps the old address.
    done = ok(database_url, "instance", "set-address", BASE_URL, "--force")
    assert done.stdout.splitlines()[-1] == (
        "warning: 1 activities published keep the old address: servers that know the "
        f"instance by it will not recognise it at {BASE_URL}"
    )
    assert recorded(database_url) == BASE_URL


@pytest.mark.sqlite_walkthrough
def test_restore_into_a_migrated_database_keeps_its_address(
    database_url: str, second_database_url: str, tmp_path: Path
) -> None:
    a = {"INTEROCC_MEDIA_DIR": str(tmp_path / "a-media")}
    b = {"INTEROCC_MEDIA_DIR": str(tmp_path / "b-media")}
    ok(database_url, "migrate", **a)
    ok(database_url, "assembly", "create", "libertyplaza", "--name", "Liberty Plaza", **a)
    archive = tmp_path / "instance.tar.gz"
    ok(database_url, "backup", "--out", str(archive), **a)
    ok(second_database_url, "migrate", **b)  # records the address: a row in the new database
    done = ok(second_database_url, "restore", str(archive), **b)
    assert done.stdout.startswith(f"restored the backup of {BASE_URL}")
    assert recorded(second_database_url) == BASE_URL
    assert ok(second_database_url, "assembly", "list").stdout.startswith("libertyplaza\tpending")


# ---- the web app ---------------------------------------------------------------------------


async def _record(database_url: str, base_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await address.check(conn, base_url, record=True)
    finally:
        await engine.dispose()


async def test_the_app_does_not_start_on_another_address(database_url: str) -> None:
    await _record(database_url, NEW_HOME)
    app = create_app(make_settings(database_url, BASE_URL))
    with pytest.raises(ConfigError, match=f"this database is the instance at {NEW_HOME}"):
        async with app.router.lifespan_context(app):
            pass


async def test_at_start_up_one_line_says_where_it_serves_and_what_next(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, BASE_URL)
    caplog.set_level(logging.INFO, logger="server.app")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("InterOcc is")]
    assert line == (
        f"InterOcc is serving {BASE_URL}: no administrator yet; create the first one with "
        "`interocc admin create EMAIL` (with this server's INTEROCC_* settings), then log in "
        f"at {BASE_URL}/login"
    )

    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session, session.begin():
            await accounts.create_user(
                session, email="root@example.org", password="a long passphrase", is_admin=True
            )
    finally:
        await ctx.aclose()
    caplog.clear()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("InterOcc is")]
    assert line == f"InterOcc is serving {BASE_URL}: log in at {BASE_URL}/login"


def test_serve_records_the_address_and_says_where_it_serves(
    database_url: str, tmp_path: Path
) -> None:
    """A database from before addresses were recorded: `interocc serve` records its own."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(INTEROCC), "serve", "--port", str(port)],
            env={**_env(database_url), "INTEROCC_BASE_URL": base},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "InterOcc is serving" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert f"recorded the instance's address, {base}" in text
    assert f"InterOcc is serving {base}: no administrator yet" in text
    assert recorded(database_url) == base
