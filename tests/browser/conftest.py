"""Browser tests: Debian's chromium, driven by Playwright, against our app on loopback.

They run on SQLite only: what a browser sees does not depend on the database engine, and
the httpx tests of the same pages run on both engines. ``backend`` is narrowed to sqlite
here (whatever INTEROCC_TEST_BACKENDS says), so they run under every ``make test*``.

Nothing is skipped: without /usr/bin/chromium or axe-core the tests fail and say how to
install them (``make test`` does both). Playwright never downloads a browser here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from server import accounts
from server.app import create_app
from server.config import Settings
from server.context import create_context
from tests.browser.audit import Auditor
from tests.conftest import make_settings
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread, free_port

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_SCRIPT = HERE / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "artifacts"  # git-ignored: screenshots/ and axe/
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "correct horse battery staple, admin"

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a coroutine to completion on a fresh event loop in a helper thread.

    Playwright's sync API keeps an event loop of its own on the test's thread, so our
    async helpers (database set-up, the peer's follow) get a thread of their own.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout)


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Browser tests run on SQLite only (see the module docstring)."""
    return str(request.param)


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not (CHROMIUM.is_file() and CHROMIUM.stat().st_mode & 0o111):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium. Install it with"
            " `make chromium` (or `apt-get install chromium`); never `playwright install`.",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def axe_script() -> Path:
    if not AXE_SCRIPT.is_file():
        pytest.fail(
            f"{AXE_SCRIPT.relative_to(ROOT)} is missing: run `make test` or"
            " `cd tests/browser && npm ci --no-audit --no-fund`.",
            pytrace=False,
        )
    return AXE_SCRIPT


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module scope: Playwright's event loop must be gone before other modules' async tests.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium: Path) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@dataclass
class Site:
    """Our app (with its delivery worker) and a Mastodon-like peer, both on loopback."""

    settings: Settings
    server: ServerThread
    peer: Peer
    member: PeerActor  # the peer's account that follows assemblies

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.port}"


async def _create_admin(settings: Settings) -> None:
    ctx = await create_context(settings)
    try:
        async with ctx.sessions() as session, session.begin():
            await accounts.create_user(
                session, email=ADMIN_EMAIL, password=ADMIN_PASSWORD, is_admin=True
            )
    finally:
        await ctx.aclose()


@pytest.fixture(scope="module")
def site(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    database = root / "interocc.sqlite3"
    shutil.copy(sqlite_template, database)
    port = free_port()
    settings = dataclasses.replace(
        make_settings(f"sqlite+aiosqlite:///{database}", f"http://127.0.0.1:{port}"),
        media_dir=root / "media",
        max_upload_bytes=1_000_000,  # small, so the oversized-upload check stays quick
    )
    run_async(_create_admin(settings))
    server = ServerThread(create_app(settings, run_worker=True), port=port).start()
    peer = Peer(name="mastodon").start()
    try:
        yield Site(settings, server, peer, peer.add_actor("ana"))
    finally:
        peer.stop()
        server.stop()


@pytest.fixture(scope="module")
def auditor(browser: Browser, site: Site, axe_script: Path) -> Iterator[Auditor]:
    auditor = Auditor(browser, base_url=site.base_url, axe_script=axe_script, artifacts=ARTIFACTS)
    yield auditor
    auditor.close()
