"""Shared fixtures: databases on both engines, settings, contexts and loopback servers.

Every database test runs twice, on a fresh SQLite file and on a fresh PostgreSQL database
(each cloned from a template migrated once per session). INTEROCC_TEST_BACKENDS=sqlite or
=postgresql narrows the run to one engine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server import accounts, migrate
from server.app import create_app
from server.config import Settings
from server.context import Context, create_context, instance_key
from server.db import create_engine, create_sessions
from tests.support.inbox import ProcessInboxNow
from tests.support.servers import ServerThread, free_port

pytest_plugins = ["tests.support.rig"]  # frozen_clock, fixed keys
PG_ADMIN_URL = os.environ.get(
    "INTEROCC_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = [
    b.strip() for b in os.environ.get("INTEROCC_TEST_BACKENDS", "sqlite,postgresql").split(",")
]
SECRET = "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count()


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def _pg_admin(*statements: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        # The instance key too (as `interocc migrate` makes it): generating an RSA key for
        # every test's context would cost a tenth of a second each.
        await instance_key(create_sessions(engine))
    finally:
        await engine.dispose()


class _PostgresPool:
    """Fresh databases cloned from the template a few at a time ahead, in a background
    thread, so that no test waits for CREATE DATABASE (about 0.4 s each); dropped in the
    background too."""

    AHEAD = 2

    def __init__(self, template: str) -> None:
        self.template = template
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-pool")
        self.pending: deque[tuple[str, Future[None]]] = deque()

    def _clone(self) -> None:
        name = f"interocc_t_{os.getpid()}_{next(_counter)}"
        statement = f"CREATE DATABASE {name} TEMPLATE {self.template}"
        self.pending.append((name, self.executor.submit(asyncio.run, _pg_admin(statement))))

    def take(self) -> str:
        while len(self.pending) <= self.AHEAD:
            self._clone()
        name, future = self.pending.popleft()
        future.result()
        return name

    def give_back(self, name: str) -> None:
        statement = f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        self.executor.submit(asyncio.run, _pg_admin(statement))

    def close(self) -> None:
        while self.pending:
            name, future = self.pending.popleft()
            future.result()
            self.give_back(name)
        self.executor.shutdown(wait=True)


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    """Passwords hashed and checked in the test process with argon2's cheapest parameters.

    At production cost (RFC 9106 low-memory: 64 MiB, 3 passes) each hash or check takes about
    0.15 s here, and the web tests sign up and log in hundreds of times. What is tested is
    the same: a hash records its parameters, so hashes of either cost verify either way. The
    processes the tests start (``interocc`` commands, servers) hash at production cost, and
    tests/test_cli.py checks what they store."""
    production = accounts._hasher
    accounts._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    accounts._dummy_hash.cache_clear()
    yield
    accounts._hasher = production
    accounts._dummy_hash.cache_clear()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    name = f"interocc_tpl_{os.getpid()}"
    asyncio.run(
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    )
    asyncio.run(_migrate(_pg_url(name)))
    yield name
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def postgres_pool(postgres_template: str) -> Iterator[_PostgresPool]:
    pool = _PostgresPool(postgres_template)
    yield pool
    pool.close()


@pytest.fixture(params=[b for b in ("sqlite", "postgresql") if b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fresh_database(
    backend: str, request: pytest.FixtureRequest, sqlite_path: Path
) -> Iterator[str]:
    """A fresh, fully migrated database (cloned from the session's template) while the
    generator is open; dropped afterwards on PostgreSQL."""
    if backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        shutil.copy(template, sqlite_path)
        yield f"sqlite+aiosqlite:///{sqlite_path}"
        return
    pool: _PostgresPool = request.getfixturevalue("postgres_pool")
    name = pool.take()
    yield _pg_url(name)
    pool.give_back(name)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, fully migrated database for one test."""
    yield from fresh_database(backend, request, tmp_path / "interocc.sqlite3")


def make_settings(
    database_url: str, base_url: str = "http://127.0.0.1:8000", **kw: object
) -> Settings:
    return Settings(
        base_url=base_url,
        database_url=database_url,
        secret_key=SECRET,
        allow_private_addresses=True,
        fetch_timeout=5.0,
        delivery_timeout=5.0,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(database_url: str, port: int) -> Settings:
    return make_settings(database_url, f"http://127.0.0.1:{port}")


@pytest.fixture
async def ctx(settings: Settings) -> AsyncIterator[Context]:
    context = await create_context(settings)
    yield context
    await context.aclose()


@pytest.fixture
def server(settings: Settings, port: int) -> Iterator[ServerThread]:
    """Our app under uvicorn on its own loopback port (no in-process worker: tests drive it;
    an activity its inbox accepts is processed before the 202 reaches the test)."""
    thread = ServerThread(ProcessInboxNow(create_app(settings)), port=port).start()
    yield thread
    thread.stop()


# -- a second instance, for tests between two InterOcc instances --------------------------


@pytest.fixture
def second_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """Instance B's own database, migrated like the first."""
    yield from fresh_database(backend, request, tmp_path / "instance-b.sqlite3")


@pytest.fixture
def port_b() -> int:
    return free_port()


@pytest.fixture
async def ctx_b(second_database_url: str, port_b: int) -> AsyncIterator[Context]:
    context = await create_context(make_settings(second_database_url, f"http://127.0.0.1:{port_b}"))
    yield context
    await context.aclose()


@pytest.fixture
def server_b(ctx_b: Context, port_b: int) -> Iterator[ServerThread]:
    thread = ServerThread(ProcessInboxNow(create_app(ctx_b.settings)), port=port_b).start()
    yield thread
    thread.stop()


@pytest.fixture
async def browser(server: ServerThread) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """Opens as many browsers (cookie jars) on ``server`` as a web test needs; all closed at
    the end. (tests/browser has its own ``browser``: a real Chromium.)"""
    opened: list[httpx.AsyncClient] = []

    def new() -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=20)
        opened.append(client)
        return client

    yield new
    for client in opened:
        await client.aclose()


# Under `--dist loadgroup`, tests are spread one by one over the workers, except those that
# share costly module or session fixtures: a browser and its site, the interop peers (node
# processes), a module's keys or archive. Each such group runs on one worker, so that its
# fixtures are made once. (The Makefile runs `--dist loadfile`, which was as fast on two
# cores; the groups are ignored there.)
_GROUPED = (
    "tests/browser/",
    "tests/interop/",
    "tests/security/test_archive.py",
    "tests/test_client_guard.py",
    "tests/test_signatures.py",
    "tests/test_ld_signatures.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A walk through many `interocc` subprocesses (about 0.8 s each) runs on SQLite only when
    # marked so: the commands' database work is tested on both engines in-process elsewhere.
    walkthroughs = [
        item
        for item in items
        if item.get_closest_marker("sqlite_walkthrough") is not None
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("backend") == "postgresql"
    ]
    if walkthroughs:
        config.hook.pytest_deselected(items=walkthroughs)
        items[:] = [item for item in items if item not in walkthroughs]
    for item in items:
        for prefix in _GROUPED:
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(prefix))
                break
