"""Acceptance: `make run` serves WebFinger and the actor of an assembly made with the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support.peer import Peer
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "interocc")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    # `make run` is the embedded default: SQLite only, whatever the backend matrix says.
    return f"sqlite+aiosqlite:///{tmp_path / 'run.sqlite3'}"


def test_make_run_serves_an_assembly_created_with_the_cli(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEROCC_", "MAKE"))}
    env.update(
        INTEROCC_DATABASE_URL=sqlite_url,
        INTEROCC_SECRET_KEY=SECRET,
        INTEROCC_ALLOW_PRIVATE_ADDRESSES="true",  # the follower is on loopback
    )
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            try:
                if httpx.get(f"{base}/.well-known/nodeinfo", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)

        cli_env = {**env, "INTEROCC_BASE_URL": base}
        for args in (
            ["assembly", "create", "libertyplaza", "--name", "Liberty Plaza General Assembly"],
            ["assembly", "approve", "libertyplaza"],
        ):
            done = subprocess.run([CLI, *args], env=cli_env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr

        finger = httpx.get(
            f"{base}/.well-known/webfinger",
            params={"resource": f"acct:libertyplaza@127.0.0.1:{port}"},
        )
        assert finger.status_code == 200
        self_link = next(link for link in finger.json()["links"] if link["rel"] == "self")
        assert self_link["href"] == f"{base}/actors/libertyplaza"
        actor = httpx.get(self_link["href"], headers={"Accept": "application/activity+json"})
        assert actor.status_code == 200
        assert actor.json()["id"] == self_link["href"]
        assert actor.json()["type"] == "Group"
        assert actor.json()["name"] == "Liberty Plaza General Assembly"

        # The delivery worker runs in the same process: a follower gets its Accept and the
        # communiqué without anyone driving a worker.
        with Peer(name="follower") as peer:
            alice = peer.add_actor("alice")
            asyncio.run(peer.follow(alice, f"libertyplaza@127.0.0.1:{port}"))
            asyncio.run(peer.wait_for(lambda got: any(r.verified for r in got), timeout=30))
            done = subprocess.run(
                [CLI, "post", "libertyplaza", "--text", "First communiqué."],
                env=cli_env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
            asyncio.run(peer.wait_for(lambda got: len([r for r in got if r.verified]) >= 2))
            kinds = [r.json["type"] for r in peer.received if r.verified and r.json]
            assert kinds == ["Accept", "Create"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
