"""Acceptance: the admin drives InterOcc with the real `interocc` console script.

Each command runs in its own process against the test database (both engines). Success
prints what the admin needs on stdout; every failure is a non-zero exit, exactly one line
on stderr, and a database left exactly as it was.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import selectors
import signal
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

from server import accounts, cli
from server.context import create_context
from server.db import create_engine
from server.migrate import head_revision
from server.models import (
    Activity,
    Assembly,
    AssemblyStatus,
    Communique,
    User,
    UserStatus,
    WebSession,
)
from tests.conftest import SECRET, _pg_admin, _pg_url, make_settings

INTEROCC = Path(sys.executable).parent / "interocc"
SEED = Path(__file__).resolve().parent.parent / "docs" / "founding-communique.txt"
BASE_URL = "http://127.0.0.1:8765"
PASSWORD_TYPED = "correct horse battery staple"


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def __str__(self) -> str:
        return f"interocc {' '.join(self.args)} → {self.returncode}\n{self.stdout}{self.stderr}"


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    env |= {
        "INTEROCC_DATABASE_URL": database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": BASE_URL,
    }
    return env


def _start(database_url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(INTEROCC), *args],
        env=_env(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], args: tuple[str, ...]) -> Run:
    stdout, stderr = proc.communicate(timeout=60)
    return Run(args, proc.returncode, stdout, stderr)


def interocc(database_url: str, *args: str) -> Run:
    return _finish(_start(database_url, *args), args)


def ok(database_url: str, *args: str) -> Run:
    run = interocc(database_url, *args)
    assert run.returncode == 0, str(run)
    return run


def fails(database_url: str, *args: str, says: str) -> Run:
    """Runs a command that must fail cleanly and leave the database exactly as it was."""
    before = snapshot(database_url)
    run = interocc(database_url, *args)
    check_failure(run, says)
    assert snapshot(database_url) == before, f"database changed by {run}"
    return run


def all_fail(database_url: str, cases: list[tuple[tuple[str, ...], str]]) -> None:
    """Several commands that must each fail cleanly, run side by side (each is ~0.7 s of
    start-up), then the database compared with its state before them all."""
    before = snapshot(database_url)
    procs = [(_start(database_url, *args), args, says) for args, says in cases]
    runs = [(_finish(proc, args), says) for proc, args, says in procs]
    for run, says in runs:
        check_failure(run, says)
    assert snapshot(database_url) == before, "database changed by a failing command"


def check_failure(run: Run, says: str) -> None:
    assert run.returncode != 0, str(run)
    assert len(run.stderr_lines) == 1, str(run)
    assert run.stderr_lines[0].startswith("interocc: "), str(run)
    assert says.lower() in run.stderr.lower(), f"expected {says!r} in\n{run}"
    assert run.stdout == "", str(run)


# ---- the database, read directly ---------------------------------------------------------


async def _read(database_url: str, fn: Any) -> Any:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def snapshot(database_url: str) -> dict[str, list[str]]:
    """Every row of every table (alembic_version too), as sorted text."""

    def read(conn: Connection) -> dict[str, list[str]]:
        out = {}
        for table in sorted(inspect(conn).get_table_names()):
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
            out[table] = sorted(repr(tuple(row)) for row in rows)
        return out

    result: dict[str, list[str]] = asyncio.run(_read(database_url, read))
    return result


def query(database_url: str, statement: Any) -> list[Any]:
    def read(conn: Connection) -> list[Any]:
        return list(conn.execute(statement).all())

    rows: list[Any] = asyncio.run(_read(database_url, read))
    return rows


def communique_rows(database_url: str) -> list[Any]:
    return query(
        database_url,
        select(
            Communique.public_id,
            Communique.source,
            Communique.language,
            Communique.updated_at,
            Communique.deleted_at,
        ).order_by(Communique.id),
    )


def communique_url(public_id: str, handle: str = "libertyplaza") -> str:
    return f"{BASE_URL}/actors/{handle}/communiques/{public_id}"


def seed_file() -> Path:
    assert SEED.is_file(), f"no seed text at {SEED}"
    return SEED


# ---- tests -------------------------------------------------------------------------------


@pytest.mark.sqlite_walkthrough
def test_assembly_lifecycle_posting_and_every_mistake(database_url: str) -> None:
    run = ok(database_url, "migrate")  # already migrated: a no-op that says so
    assert "up to date" in run.stdout

    run = ok(
        database_url,
        "assembly", "create", "libertyplaza",
        "--name", "Liberty Plaza GA",
        "--summary", "The people of Liberty Plaza, in General Assembly.",
    )  # fmt: skip
    assert "libertyplaza" in run.stdout and "pending" in run.stdout
    rows = query(database_url, select(Assembly.handle, Assembly.name, Assembly.status))
    assert [tuple(r) for r in rows] == [
        ("libertyplaza", "Liberty Plaza GA", AssemblyStatus.PENDING)
    ]
    run = ok(database_url, "assembly", "list")
    assert run.stdout.splitlines() == ["libertyplaza\tpending\tLiberty Plaza GA"]

    # A pending assembly cannot publish.
    fails(database_url, "post", "libertyplaza", "--text", "Too early.", says="pending")
    assert communique_rows(database_url) == []

    run = ok(database_url, "assembly", "approve", "libertyplaza")
    assert f"{BASE_URL}/actors/libertyplaza" in run.stdout
    [(status,)] = query(database_url, select(Assembly.status))
    assert status == AssemblyStatus.APPROVED

    # Post: stdout is exactly the communiqué's URL.
    run = ok(
        database_url, "post", "libertyplaza", "--text", "¡Asamblea a las 7!", "--language", "es"
    )
    [(public_id, source, language, updated, deleted)] = communique_rows(database_url)
    assert run.stdout == communique_url(public_id) + "\n"
    assert (source, language, updated, deleted) == ("¡Asamblea a las 7!", "es", None, None)

    # Post from a file: the seed communiqué.
    seed = seed_file()
    run = ok(database_url, "post", "libertyplaza", "--file", str(seed))
    rows = communique_rows(database_url)
    assert len(rows) == 2
    assert run.stdout == communique_url(rows[1].public_id) + "\n"
    assert rows[1].source == seed.read_text(encoding="utf-8")
    assert rows[1].language == "en"

    # Edit the first one.
    first_url = communique_url(public_id)
    run = ok(database_url, "edit", first_url, "--text", "Asamblea a las 8.")
    assert run.stdout.strip() == first_url
    rows = communique_rows(database_url)
    assert rows[0].source == "Asamblea a las 8." and rows[0].updated_at is not None
    assert rows[1].updated_at is None

    # Delete it.
    run = ok(database_url, "delete", first_url)
    assert first_url in run.stdout
    rows = communique_rows(database_url)
    assert rows[0].deleted_at is not None and rows[1].deleted_at is None

    # Each change was recorded as the activity followers are sent.
    types = query(database_url, select(Activity.type).order_by(Activity.id))
    assert [t for (t,) in types] == ["Create", "Create", "Update", "Delete"]

    # Every mistake an admin can make: one clear line each, nothing changed.
    all_fail(
        database_url,
        [
            (("assembly", "create", "Bad Handle!", "--name", "Bad"), "invalid handle"),
            (("assembly", "create", "libertyplaza", "--name", "Again"), "already exists"),
            (("assembly", "approve", "libertyplaza"), "already approved"),
            (("post", "nowhere", "--text", "Hello."), "no assembly"),
            (("edit", communique_url("doesnotexist0000"), "--text", "New."), "no such"),
            (("delete", "https://elsewhere.example/notes/1"), "not the URL of a communiqu"),
            (("delete", first_url), "already deleted"),
            (("post", "libertyplaza", "--text", "   \n"), "needs some text"),
            (
                ("post", "libertyplaza", "--text", "Hi.", "--language", "not a language"),
                "invalid language",
            ),
        ],
    )

    # A suspended assembly cannot publish any more.
    ok(database_url, "assembly", "suspend", "libertyplaza")
    fails(database_url, "post", "libertyplaza", "--text", "Still here?", says="suspended")
    assert len(communique_rows(database_url)) == 2


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database that was never migrated: a path with no file yet, or an empty database."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'interocc.sqlite3'}"
        return
    name = f"interocc_empty_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f"CREATE DATABASE {name}"))
    yield _pg_url(name)
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_commands_refuse_an_unmigrated_database(empty_database_url: str) -> None:
    sqlite_path = (
        Path(empty_database_url.split(":///", 1)[1])
        if empty_database_url.startswith("sqlite")
        else None
    )
    run = interocc(empty_database_url, "post", "libertyplaza", "--text", "Hello.")
    check_failure(run, "run `interocc migrate`")
    if sqlite_path is not None:
        assert not sqlite_path.parent.exists()  # nothing was created
    else:
        assert snapshot(empty_database_url) == {}  # not even alembic_version

    # `migrate` makes it (creating the SQLite file's folder too) and is then at head.
    ok(empty_database_url, "migrate")
    assert "alembic_version" in snapshot(empty_database_url)
    assert query(empty_database_url, text("SELECT version_num FROM alembic_version")) == [
        (head_revision(),)
    ]


# ---- administrators' accounts ------------------------------------------------------------

NEW_PASSWORD = "a brand new passphrase"


def with_input(database_url: str, *args: str, stdin: str) -> Run:
    proc = subprocess.run(
        [str(INTEROCC), *args],
        env=_env(database_url),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Run(args, proc.returncode, proc.stdout, proc.stderr)


def fails_with_input(database_url: str, *args: str, stdin: str, says: str) -> None:
    before = snapshot(database_url)
    run = with_input(database_url, *args, stdin=stdin)
    check_failure(run, says)
    assert snapshot(database_url) == before, f"database changed by {run}"


def password_hash(database_url: str, email: str) -> str:
    [(value,)] = query(database_url, select(User.password_hash).where(User.email == email))
    return str(value)


async def _sign_in_somewhere(database_url: str, email: str) -> None:
    ctx = await create_context(make_settings(database_url, BASE_URL))
    try:
        async with ctx.sessions() as session, session.begin():
            user = await accounts.find_by_email(session, email)
            assert user is not None
            await accounts.start_session(session, user, now=ctx.clock(), lifetime=timedelta(days=1))
    finally:
        await ctx.aclose()


@pytest.mark.sqlite_walkthrough
def test_admin_accounts_from_the_command_line(database_url: str) -> None:
    # The password comes from standard input when it is not a terminal.
    run = with_input(
        database_url, "admin", "create", "Root@Example.org", stdin=PASSWORD_TYPED + "\n"
    )
    assert run.returncode == 0, str(run)
    assert run.stdout == "created the administrator root@example.org\n"
    rows = query(database_url, select(User.email, User.is_admin, User.status))
    assert [tuple(r) for r in rows] == [("root@example.org", True, UserStatus.ACTIVE)]
    # The operator gave the address: confirmed, so that notices reach it from the start.
    (confirmed,) = query(database_url, select(User.email_confirmed_at))
    assert confirmed[0] is not None
    stored = password_hash(database_url, "root@example.org")
    assert PasswordHasher().verify(stored, PASSWORD_TYPED)
    # Hashed at production cost: argon2id, RFC 9106's low-memory profile. (The test process
    # itself hashes cheaply, see tests/conftest.py; a real command never does.)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored

    # --password-stdin says so explicitly (and works at a terminal too).
    run = with_input(
        database_url,
        "admin", "create", "second@example.org", "--password-stdin",
        stdin=PASSWORD_TYPED + "\r\n",
    )  # fmt: skip
    assert run.returncode == 0, str(run)
    assert PasswordHasher().verify(
        password_hash(database_url, "second@example.org"), PASSWORD_TYPED
    )

    # Every mistake: one line, nothing changed.
    for args, stdin, says in [
        (("admin", "create", "root@example.org"), PASSWORD_TYPED, "already exists"),
        (("admin", "create", "ROOT@example.org"), PASSWORD_TYPED, "already exists"),
        (("admin", "create", "not an address"), PASSWORD_TYPED, "e-mail address"),
        (("admin", "create", "third@example.org"), "short\n", "at least 10 characters"),
        (("admin", "create", "third@example.org"), "", "no password given"),
        (("admin", "reset-password", "nobody@example.org"), NEW_PASSWORD, "no account"),
        (("admin", "reset-password", "root@example.org"), "short\n", "at least 10"),
    ]:
        fails_with_input(database_url, *args, stdin=stdin, says=says)

    # A new password signs the person out everywhere.
    asyncio.run(_sign_in_somewhere(database_url, "root@example.org"))
    asyncio.run(_sign_in_somewhere(database_url, "second@example.org"))
    assert len(query(database_url, select(WebSession.id))) == 2
    run = with_input(
        database_url, "admin", "reset-password", "root@example.org", stdin=NEW_PASSWORD + "\n"
    )
    assert run.returncode == 0, str(run)
    assert "root@example.org" in run.stdout and "signed out" in run.stdout
    assert PasswordHasher().verify(password_hash(database_url, "root@example.org"), NEW_PASSWORD)
    [(left,)] = query(
        database_url,
        select(User.email).join(WebSession, WebSession.user_id == User.id),
    )
    assert left == "second@example.org"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_the_password_is_asked_twice(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in _env(database_url).items():
        if name.startswith("INTEROCC_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdin", _Terminal())
    prompts: list[str] = []

    def typed(answers: list[str]) -> Any:
        def getpass(prompt: str = "") -> str:
            prompts.append(prompt)
            return answers.pop(0)

        return getpass

    monkeypatch.setattr(cli.getpass, "getpass", typed([PASSWORD_TYPED, "a different one!"]))
    assert cli.main(["admin", "create", "root@example.org"]) == cli.EXIT_ERROR
    assert capsys.readouterr().err == "interocc: the two passwords differ\n"
    assert query(database_url, select(User.id)) == []

    monkeypatch.setattr(cli.getpass, "getpass", typed([PASSWORD_TYPED, PASSWORD_TYPED]))
    assert cli.main(["admin", "create", "root@example.org"]) == 0
    assert capsys.readouterr().out == "created the administrator root@example.org\n"
    assert prompts[-2:] == ["Password: ", "Password again: "]
    assert PasswordHasher().verify(password_hash(database_url, "root@example.org"), PASSWORD_TYPED)


@pytest.mark.sqlite_walkthrough
def test_follow_and_unfollow_from_the_command_line(database_url: str) -> None:
    ok(database_url, "migrate")
    for handle in ("sol", "plaza"):
        ok(database_url, "assembly", "create", handle, "--name", f"Assembly {handle}")
        ok(database_url, "assembly", "approve", handle)
    target = "@plaza@127.0.0.1:8765"
    run = ok(database_url, "follow", "sol", target)
    assert run.stdout.strip() == f"follow request sent to {BASE_URL}/actors/plaza"
    all_fail(
        database_url,
        [
            (("follow", "sol", target), "already follows"),
            (("follow", "sol", "@sol@127.0.0.1:8765"), "cannot follow itself"),
            (("follow", "sol", "not a handle"), "neither a handle"),
            (("follow", "nobody", target), "no assembly"),
            (("follow", "sol", "@ghost@127.0.0.1:8765"), "no assembly @ghost"),
            (("unfollow", "plaza", target), "does not follow"),
        ],
    )
    run = ok(database_url, "unfollow", "sol", target)
    assert run.stdout.strip() == f"unfollowed {BASE_URL}/actors/plaza"
    fails(database_url, "unfollow", "sol", target, says="does not follow")


# ---- prompts end cleanly -----------------------------------------------------------------


def _controlling_terminal() -> None:
    """In the child: a session of its own whose terminal is the pty on its stdin, so that
    getpass reads /dev/tty and Ctrl-C typed there interrupts it (never the test's terminal)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def at_a_terminal(database_url: str, *args: str, typed: list[tuple[str, bytes]]) -> Run:
    """Runs a command whose stdin is a terminal; for each (prompt, keys), waits for the prompt
    on the terminal, then types the keys. stdout and stderr are pipes, read apart."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(INTEROCC), *args],
        env=_env(database_url),
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_controlling_terminal,  # noqa: PLW1509 - the child needs its own terminal
    )
    os.close(slave)
    try:
        shown = b""
        with selectors.DefaultSelector() as terminal:
            terminal.register(master, selectors.EVENT_READ)
            for prompt, keys in typed:
                deadline = time.monotonic() + 60
                while not shown.endswith(prompt.encode()):
                    assert time.monotonic() < deadline, f"no prompt {prompt!r}, only {shown!r}"
                    if terminal.select(timeout=0.5):
                        shown += os.read(master, 1024)
                os.write(master, keys)
        return _finish(proc, args)
    finally:
        os.close(master)


@pytest.mark.parametrize(
    ("keys", "code", "says"),
    [
        (b"\x04", cli.EXIT_ERROR, "interocc: no password given: the input ended"),  # Ctrl-D
        (b"\x03", 130, "interocc: interrupted: no password given, nothing was changed"),  # Ctrl-C
    ],
    ids=["ctrl-d", "ctrl-c"],
)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # no database work to compare
def test_ctrl_d_and_ctrl_c_at_a_prompt_end_with_one_line(
    database_url: str, keys: bytes, code: int, says: str
) -> None:
    before = snapshot(database_url)
    for typed in (
        [("Password: ", keys)],
        [("Password: ", PASSWORD_TYPED.encode() + b"\n"), ("Password again: ", keys)],
    ):
        run = at_a_terminal(database_url, "admin", "create", "root@example.org", typed=typed)
        assert (run.returncode, run.stderr, run.stdout) == (code, says + "\n", ""), str(run)
    passphrase = [("Passphrase: ", keys)]
    run = at_a_terminal(
        database_url, "assembly", "import", str(SEED), "--handle", "plaza", typed=passphrase
    )
    assert run.returncode == code and run.stderr == says.replace("password", "passphrase") + "\n"
    assert snapshot(database_url) == before


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_ctrl_c_while_reading_standard_input_ends_with_one_line(database_url: str) -> None:
    """`--password-stdin` waiting on a pipe that stays open: SIGINT stops it at once."""
    proc = subprocess.Popen(
        [str(INTEROCC), "admin", "create", "root@example.org", "--password-stdin"],
        env=_env(database_url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wchan = Path(f"/proc/{proc.pid}/wchan")
    deadline = time.monotonic() + 60
    while "pipe_read" not in wchan.read_text():  # blocked reading its stdin
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    run = _finish(proc, ("admin", "create"))
    assert run.returncode == 130, str(run)
    assert run.stderr == "interocc: interrupted: no password given, nothing was changed\n"
    assert query(database_url, select(User.id)) == []
