"""Two ``interocc worker`` processes on one PostgreSQL database fan a communiqué out to 400
inboxes on eight servers; one worker is killed (SIGKILL) in the middle.

Nothing is lost, the duplicates are no more than the requests that could be in flight when
it died, and no server ever has more than its cap of requests in flight at once, counted
over both processes (the caps live in the database, not in either worker's memory).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.context import create_context
from server.models import Delivery, DeliveryStatus
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly, post
from tests.support.sinks import Sinks
from tests.test_delivery_slots import follow_from

pytestmark = pytest.mark.e2e

INTEROCC = Path(sys.executable).parent / "interocc"
HOSTS = 8
EACH = 50
CAP = 2


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(INTEROCC), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_workers_one_killed_mid_fan_out(
    database_url: str, backend: str, port: int, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{port}"
    ctx = await create_context(make_settings(database_url, base))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")} | {
        "INTEROCC_DATABASE_URL": database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": base,
        "INTEROCC_ALLOW_PRIVATE_ADDRESSES": "true",
        "INTEROCC_DELIVERY_PER_HOST": str(CAP),
        # A killed worker's claims come back after 4 × this + 10 s.
        "INTEROCC_DELIVERY_TIMEOUT": "1",
        "INTEROCC_LOG_LEVEL": "WARNING",
    }
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with Sinks() as sinks:
            servers = [sinks.live(delay=0.05) for _ in range(HOSTS)]
            inboxes = [s.inbox(n) for n in range(EACH) for s in servers]
            await approved_assembly(ctx, "plaza")
            await follow_from(ctx, "plaza", inboxes)
            published = await post(ctx, "plaza", "Every occupation, one assembly.")
            assert published.deliveries == HOSTS * EACH

            workers = [_spawn(env, tmp_path / f"worker{i}.log") for i in range(2)]
            deadline = time.monotonic() + 60

            def received() -> int:
                return sum(len(s.received) for s in servers)

            while received() < 100:
                assert time.monotonic() < deadline, (tmp_path / "worker0.log").read_text()
                await asyncio.sleep(0.01)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)
            in_flight_at_kill = sum(s.in_flight for s in servers)
            at_kill = received()

            while time.monotonic() < deadline:
                async with ctx.sessions() as session:
                    delivered = await session.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .where(Delivery.status == DeliveryStatus.DELIVERED)
                    )
                if delivered == len(inboxes):
                    break
                await asyncio.sleep(0.2)
            got = {s.port: sinks.received_objects(s) for s in servers}
            per_inbox: dict[tuple[int, str], int] = {}
            for s in servers:
                for r in s.received:
                    per_inbox[(s.port, r.path)] = per_inbox.get((s.port, r.path), 0) + 1
            most = {s.port: s.most_in_flight for s in servers}
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)
        await ctx.aclose()

    assert delivered == len(inboxes), (tmp_path / "worker1.log").read_text()[-3000:]
    assert 100 <= at_kill < len(inboxes)  # killed in the middle, not after the end
    # Nothing lost: every inbox got the communiqué, and it is the communiqué.
    assert len(per_inbox) == len(inboxes)
    assert all(set(objects) == {published.url} for objects in got.values())
    # Duplicates only of what the dead worker had sent and not yet recorded: at most what
    # could be in flight at once (the cap on every server).
    duplicates = sum(per_inbox.values()) - len(inboxes)
    assert duplicates <= CAP * HOSTS, (duplicates, in_flight_at_kill)
    # The cap held across both processes, and was reached.
    assert max(most.values()) == CAP, most
