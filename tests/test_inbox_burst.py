"""A burst of signed activities on PostgreSQL with two workers, one killed in the middle:
every activity is applied exactly once, in each actor's order, and none is lost.

Real processes, as an operator runs them: ``interocc serve`` and two ``interocc worker``
on one PostgreSQL database, fed by 50 actors of a loopback peer posting 100 replies each.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from server.context import Context, create_context
from server.models import InboxActivity, InboxItem, Reply
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly, post
from tests.support import httpsig
from tests.support.peer import AP_JSON, Peer
from tests.test_replies import reply_create

pytestmark = pytest.mark.e2e

INTEROCC = Path(sys.executable).parent / "interocc"
ACTORS = 50
EACH = 100
TOTAL = ACTORS * EACH
KILL_AFTER = 1_000  # processed activities before one worker is killed
DEADLINE = 300.0


def _env(database_url: str, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    return env | {
        "INTEROCC_DATABASE_URL": database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": base_url,
        "INTEROCC_ALLOW_PRIVATE_ADDRESSES": "true",
        "INTEROCC_INBOX_PER_HOST_PER_MINUTE": "1000000",
        "INTEROCC_INBOX_PER_ACTOR_PER_MINUTE": "100000",
        # A killed worker's claims return to the queue after this long.
        "INTEROCC_INBOX_LEASE_SECONDS": "5",
        "INTEROCC_LOG_LEVEL": "WARNING",
    }


def _spawn(*argv: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Output goes to a file: a pipe nobody reads would stall the process once it fills.
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(INTEROCC), *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-4000:]


def _logs(folder: Path) -> dict[str, str]:
    return {log.name: _tail(log) for log in sorted(folder.glob("*.log"))}


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="burst") as p:
        yield p


async def _processed(ctx: Context) -> int:
    async with ctx.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(InboxActivity)) or 0)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_burst_with_a_worker_killed_midway(
    database_url: str, backend: str, port: int, peer: Peer, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{port}"
    ctx = await create_context(make_settings(database_url, base))
    env = _env(database_url, base)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await approved_assembly(ctx, "ga")
        published = await post(ctx, "ga", "A communiqué many answer at once.")
        actors = [peer.add_actor(f"a{i}") for i in range(ACTORS)]
        inbox = ctx.urls.shared_inbox()

        def signed(n: int) -> tuple[bytes, dict[str, str]]:
            actor = actors[n % ACTORS]
            activity = reply_create(actor, published.url, n // ACTORS, f"<p>reply {n}</p>")
            body = json.dumps(activity).encode()
            headers = {"Content-Type": AP_JSON, "Accept": AP_JSON}
            headers |= httpsig.sign(
                "POST", inbox, headers, body, key_id=actor.key_id, private_key=actor.private_key
            )
            return body, headers

        # Every request signed before the clock starts (sign in threads: RSA releases the GIL).
        requests = await asyncio.gather(*(asyncio.to_thread(signed, n) for n in range(TOTAL)))

        web = _spawn("serve", "--port", str(port), env=env, log=tmp_path / "web.log")
        processes.append(web)
        workers = [_spawn("worker", env=env, log=tmp_path / f"worker{i}.log") for i in range(2)]
        processes.extend(workers)
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=30.0, trust_env=False) as http:
            while True:
                try:
                    if (await http.get(f"{base}/.well-known/nodeinfo")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, _tail(tmp_path / "web.log")
                await asyncio.sleep(0.2)

            statuses: list[int] = []

            async def stream(first: int) -> None:
                # One actor's activities one after another: their arrival order is known.
                for n in range(first, TOTAL, ACTORS):
                    body, headers = requests[n]
                    answer = await http.post(inbox, content=body, headers=headers)
                    statuses.append(answer.status_code)

            senders = asyncio.gather(*(stream(i) for i in range(ACTORS)))
            killed = False
            started = time.monotonic()
            while True:
                done = await _processed(ctx)
                if not killed and done >= KILL_AFTER:
                    os.killpg(workers[0].pid, signal.SIGKILL)
                    workers[0].wait(10)
                    killed = True
                if done >= TOTAL or time.monotonic() - started > DEADLINE:
                    break
                await asyncio.sleep(0.25)
            await senders
        logs = _logs(tmp_path)
        assert killed, "the burst was processed before a worker could be killed"
        assert statuses.count(202) == TOTAL, {s: statuses.count(s) for s in set(statuses)}

        async with ctx.sessions() as session:
            applied = int(await session.scalar(select(func.count()).select_from(InboxActivity)))
            replies = int(await session.scalar(select(func.count()).select_from(Reply)))
            distinct = int(await session.scalar(select(func.count(func.distinct(Reply.uri)))))
            left = (await session.scalars(select(InboxItem))).all()
            order = (
                await session.execute(
                    select(InboxActivity.actor_uri, InboxActivity.uri).order_by(InboxActivity.id)
                )
            ).all()
        assert (applied, replies, distinct) == (TOTAL, TOTAL, TOTAL), logs
        assert left == [], [(i.status, i.last_error) for i in left[:5]]
        # Each actor's replies were applied in the order that actor sent them.
        for actor in actors:
            mine = [uri for actor_uri, uri in order if actor_uri == actor.id]
            sequence = [int(uri.split("/statuses/")[1].split("/")[0]) for uri in mine]
            assert sequence == sorted(sequence) and len(sequence) == EACH
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        await ctx.aclose()
