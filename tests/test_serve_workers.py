"""``interocc serve --workers N``: several HTTP processes on one PostgreSQL database.

The real command, started as a person would start it, answering from more than one process;
and the refusals (SQLite, or an in-process delivery worker in every process) in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.support.servers import free_port

INTEROCC = Path(sys.executable).parent / "interocc"


def _env(database_url: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    return env | {
        "INTEROCC_DATABASE_URL": database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": base_url,
    }


@pytest.mark.parametrize(
    ("backend", "extra", "says"),
    [
        ("sqlite", (), "--workers above 1 needs PostgreSQL"),
        ("postgresql", ("--with-worker",), "runs no delivery worker"),
    ],
    indirect=["backend"],
)
def test_refusals_are_one_line(
    database_url: str, extra: tuple[str, ...], says: str, backend: str
) -> None:
    port = free_port()
    run = subprocess.run(
        [str(INTEROCC), "serve", "--workers", "2", "--port", str(port), *extra],
        env=_env(database_url, f"http://127.0.0.1:{port}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interocc: ") and says in lines[0], run.stderr


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_processes_answer(database_url: str, backend: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(INTEROCC), "serve", "--workers", "2", "--port", str(port)],
        env=_env(database_url, base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        answered = None
        while time.monotonic() < deadline and answered is None:
            try:
                answered = httpx.get(f"{base}/.well-known/nodeinfo", timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.2)
        assert answered is not None and answered.status_code == 200
        with httpx.Client(timeout=5.0) as http:
            answers = [http.get(f"{base}/nodeinfo/2.1") for _ in range(20)]
        assert {a.status_code for a in answers} == {200}
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2, children  # uvicorn's supervisor and its two workers
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
