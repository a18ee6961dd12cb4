"""The independent peers of the interop tests as fixtures: Fedify (tests/interop/fedify-peer)
and bovine (tests/interop/bovine-peer).

Each peer is one process serving the whole session (starting the Fedify one costs about a
second: a 4096-bit RSA key is generated each time). Both print ``READY <base url>`` when
listening, exit when their stdin closes, and answer the same small control API
(``/_control/...``). They remember follows in memory, keyed by the followed actor's URI;
every test runs our app on a fresh port, so the URIs never repeat between tests. The logs
(activities, outgoing, incoming, errors) are cleared before each test with ``reset``.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

PEER_DIR = Path(__file__).parent / "fedify-peer"
READY_TIMEOUT = 30.0
CONTROL_TIMEOUT = 30.0  # follow/reply resolve handles and deliver before answering
STOP_TIMEOUT = 10.0

Json = dict[str, Any]


class ControlError(AssertionError):
    """The control API answered with an error status."""


@dataclass
class ControlledPeer:
    """A running peer process and async helpers for its control API (``/_control/``)."""

    base_url: str
    process: subprocess.Popen[bytes]
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=200)
    )
    name: str = "peer"

    @property
    def port(self) -> int:
        return int(urlsplit(self.base_url).port or 0)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    @property
    def actor(self) -> str:
        return f"{self.base_url}/users/alice"

    @property
    def key_id(self) -> str:
        return f"{self.actor}#main-key"

    @property
    def handle(self) -> str:
        return f"alice@{self.host}"

    def stderr(self) -> str:
        return "".join(self.stderr_tail)

    # -- the control API -------------------------------------------------------------------
    async def call(
        self, method: str, action: str, body: Json | None = None, *, ok: bool = True
    ) -> httpx.Response:
        """One request to ``/_control/<action>``; with ``ok`` a non-2xx answer fails the test."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=CONTROL_TIMEOUT) as http:
            response = await http.request(method, f"/_control/{action}", json=body)
        if ok and not response.is_success:
            raise ControlError(
                f"{self.name} control {method} {action} answered {response.status_code}: "
                f"{response.text[:3000]}\n{self.name} stderr:\n{self.stderr()[-3000:]}"
            )
        return response

    async def post(self, action: str, body: Json | None = None) -> Json:
        result: Json = (await self.call("POST", action, body or {})).json()
        return result

    async def get(self, action: str) -> Json:
        result: Json = (await self.call("GET", action)).json()
        return result

    async def follow(self, target: str) -> Json:
        return await self.post("follow", {"target": target})

    async def unfollow(self, target: str) -> Json:
        return await self.post("unfollow", {"target": target})

    async def reply(self, in_reply_to: str, content: str) -> Json:
        return await self.post("reply", {"inReplyTo": in_reply_to, "content": content})

    async def inbox(self, since: int = 0) -> Json:
        return await self.get(f"inbox?since={since}" if since else "inbox")

    async def state(self) -> Json:
        return await self.get("state")

    async def logs(self) -> list[Json]:
        logs: list[Json] = (await self.get("logs"))["logs"]
        return logs

    async def activities(self, activity_type: str | None = None) -> list[Json]:
        found: list[Json] = (await self.inbox())["activities"]
        return [a for a in found if activity_type is None or a["type"] == activity_type]

    async def diagnostics(self) -> str:
        """What a timed-out wait reports about the peer."""
        return f"{self.name} errors: {(await self.inbox())['errors']}"

    async def wait_for(
        self,
        check: Callable[[], Awaitable[Any]],
        what: str,
        within: float = 10.0,
    ) -> Any:
        """Poll ``check`` until it returns something truthy; fail with the peer's logs if not."""
        deadline = time.monotonic() + within
        while True:
            result = await check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {within} s waiting for {what}\n"
                    f"{await self.diagnostics()}\n"
                    f"{self.name} stderr:\n{self.stderr()[-3000:]}"
                )
            await asyncio.sleep(0.05)

    async def wait_for_activity(self, activity_type: str, within: float = 10.0) -> Json:
        async def found() -> Json | None:
            matches = await self.activities(activity_type)
            return matches[-1] if matches else None

        where = f"a {activity_type} in the {self.name}'s inbox"
        result: Json = await self.wait_for(found, where, within)
        return result

    def reset_sync(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=CONTROL_TIMEOUT) as http:
            http.post("/_control/reset", json={}).raise_for_status()


@dataclass
class FedifyPeer(ControlledPeer):
    name: str = "Fedify peer"

    async def send(self, inbox: str, activity: Json, scheme: str = "rfc9421") -> Json:
        return await self.post("send", {"inbox": inbox, "activity": activity, "scheme": scheme})


def _spawn(name: str, argv: list[str], cwd: Path) -> tuple[str, subprocess.Popen[bytes], Any]:
    """Start a peer that prints ``READY <base url>`` on stdout; its stderr goes to a tail."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.PIPE,  # the peer exits when this closes, even if we die
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    tail: collections.deque[str] = collections.deque(maxlen=200)

    def pump(stream: Any, sink: Callable[[str], None]) -> None:
        # Both pipes are drained for the whole run, so the peer never blocks on a full pipe.
        for raw in iter(stream.readline, b""):
            sink(raw.decode("utf-8", "replace"))
        stream.close()

    threading.Thread(target=pump, args=(process.stdout, lines.put), daemon=True).start()
    threading.Thread(target=pump, args=(process.stderr, tail.append), daemon=True).start()

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        try:
            line: str | None = lines.get(timeout=max(0.0, min(remaining, 0.2)))
        except queue.Empty:
            line = None
        if line is not None and line.startswith("READY "):
            return line.split()[1], process, tail
        if process.poll() is not None or remaining <= 0:
            _stop(process)
            why = (
                f"exited with {process.returncode}"
                if process.returncode is not None
                else f"printed no READY line within {READY_TIMEOUT:.0f} s"
            )
            pytest.fail(f"the {name} {why}; stderr:\n{''.join(tail)[-4000:]}", pytrace=False)


def _start() -> FedifyPeer:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the interop tests need Node.js (`node` is not on PATH)", pytrace=False)
    if not (PEER_DIR / "node_modules" / "@fedify" / "fedify").is_dir():
        pytest.fail(
            f"the Fedify peer's dependencies are not installed ({PEER_DIR / 'node_modules'} "
            "is missing): run `make test`, which installs them with `npm ci`",
            pytrace=False,
        )
    argv = [node, "server.mjs", "--port", "0", "--exit-with-stdin"]
    base_url, process, tail = _spawn("Fedify peer", argv, PEER_DIR)
    return FedifyPeer(base_url=base_url, process=process, stderr_tail=tail)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        try:
            process.stdin.close()
        except OSError:
            pass
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def _alive_and_reset(peer: ControlledPeer) -> None:
    """Before each test: the session's peer is still running, with its logs cleared."""
    if peer.process.poll() is not None:
        pytest.fail(
            f"the {peer.name} died (exit {peer.process.returncode}); stderr:\n"
            f"{peer.stderr()[-4000:]}",
            pytrace=False,
        )
    peer.reset_sync()


@pytest.fixture(scope="session")
def fedify_process() -> Iterator[FedifyPeer]:
    """The Fedify peer, started once for the session (see the module docstring)."""
    peer = _start()
    try:
        yield peer
    finally:
        _stop(peer.process)


@pytest.fixture
def fedify(fedify_process: FedifyPeer) -> FedifyPeer:
    """The shared Fedify peer with its activity/request logs cleared for this test."""
    _alive_and_reset(fedify_process)
    return fedify_process


# -- the bovine peer (tests/interop/bovine-peer) ------------------------------------------------
#
# A Python process in its own virtualenv (installed by `make test` from its hashed
# requirements.txt). It keeps no key cache (it fetches the signer's key for every request it
# verifies).

BOVINE_DIR = Path(__file__).parent / "bovine-peer"
BOVINE_PYTHON = BOVINE_DIR / ".venv" / "bin" / "python"


@dataclass
class BovinePeer(ControlledPeer):
    name: str = "bovine peer"

    async def send(self, inbox: str, activity: Json, digest: str = "digest") -> Json:
        """A raw delivery signed by bovine with one of its digest methods (or ``unsigned``)."""
        return await self.post("send", {"inbox": inbox, "activity": activity, "digest": digest})

    async def diagnostics(self) -> str:
        return f"{await super().diagnostics()}\nbovine logs: {(await self.logs())[-30:]}"


@pytest.fixture(scope="session")
def bovine_process() -> Iterator[BovinePeer]:
    """The bovine peer, started once for the session."""
    if not BOVINE_PYTHON.is_file():
        pytest.fail(
            f"the bovine peer's virtualenv is missing ({BOVINE_PYTHON}): run `make test`, "
            "which installs it from tests/interop/bovine-peer/requirements.txt",
            pytrace=False,
        )
    argv = [str(BOVINE_PYTHON), "server.py", "--port", "0", "--exit-with-stdin"]
    base_url, process, tail = _spawn("bovine peer", argv, BOVINE_DIR)
    peer = BovinePeer(base_url=base_url, process=process, stderr_tail=tail)
    try:
        yield peer
    finally:
        _stop(peer.process)


@pytest.fixture
def bovine(bovine_process: BovinePeer) -> BovinePeer:
    """The shared bovine peer with its activity/request logs cleared for this test."""
    _alive_and_reset(bovine_process)
    return bovine_process
