"""Acceptance: `make run` serves WebFinger and the actor of an assembly made with the CLI, says
where it serves and what to do next, and installs what running needs, not the test extras."""

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

        # One line says where the server is and what to do next; the database records the
        # address `make run` gave it.
        started = (tmp_path / "run.log").read_text()
        assert f"recorded the instance's address, {base}" in started
        assert (
            f"InterOcc is serving {base}: no administrator yet; create the first one with "
            "`interocc admin create EMAIL`"
        ) in started

        # A shell without the server's INTEROCC_BASE_URL (http://127.0.0.1:8000 by default)
        # cannot publish under the wrong address: one line, nothing stored.
        done = subprocess.run(
            [CLI, "assembly", "create", "elsewhere", "--name", "Wrong address"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and done.stdout == "", done.stderr
        assert done.stderr.splitlines() == [
            "interocc: configuration error: INTEROCC_BASE_URL is http://127.0.0.1:8000, but "
            f"this database is the instance at {base}: set INTEROCC_BASE_URL={base}, or "
            "change the instance's address with `interocc instance set-address "
            "http://127.0.0.1:8000` (before it federates)"
        ]

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


# ---- what `make run` installs ----------------------------------------------------------


def fake_venv(folder: Path) -> Path:
    """A virtualenv whose pip only notes what it is asked to install (no network)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    log = folder / "pip.log"
    (bin_dir / "pip").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    for script in ("pip", "python"):
        (bin_dir / script).chmod(0o755)
    log.touch()
    return log


def make(*args: str, venv: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTEROCC_", "MAKE"))}
    done = subprocess.run(
        ["make", "--no-print-directory", *args, f"VENV={venv}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def installs(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "--upgrade pip" not in line]


def test_make_run_installs_no_test_extras_and_make_test_still_does(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    log = fake_venv(venv)
    make("install-run", venv=venv)
    assert installs(log) == ["install --quiet -e ."]
    # `make run` now has all it needs: nothing more to install.
    planned = make("-n", "run", venv=venv)
    assert "pip install" not in planned and "interocc serve" in planned
    # `make test` after it installs the test extras.
    assert "pip install --quiet -e '.[test]'" in make("-n", "test", venv=venv)
    make("install", venv=venv)
    assert installs(log) == ["install --quiet -e .", "install --quiet -e .[test]"]
    make("install-run", venv=venv)
    make("install", venv=venv)
    assert len(installs(log)) == 2  # both up to date

    # The other way round: the full install holds what running needs.
    other = tmp_path / "other"
    log = fake_venv(other)
    make("install", venv=other)
    make("install-run", venv=other)
    assert "pip install" not in make("-n", "run", venv=other)
    assert installs(log) == ["install --quiet -e .[test]"]
