"""Acceptance: shared inboxes collapse deliveries; retries survive a killed worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from server import communiques, worker
from server.config import Settings
from server.context import Context
from server.models import Delivery, DeliveryAttempt, DeliveryStatus, Follower
from tests.conftest import SECRET
from tests.helpers import approved_assembly, count, post
from tests.support.peer import Peer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


async def test_fifty_followers_on_five_hosts_get_five_deliveries(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ows")
    peers = [Peer(name=f"host{i}").start() for i in range(5)]
    try:
        for peer in peers:
            for n in range(10):
                actor = peer.add_actor(f"member{n}")
                await peer.follow(actor, f"ows@{ctx.urls.host}")
        assert await count(ctx, Follower) == 50
        while await worker.run_once(ctx):  # the 50 Accepts, one per follower inbox
            pass

        published = await post(ctx, "ows", "To all the good people convening at local GAs.")
        assert published.deliveries == 5
        assert await worker.run_once(ctx) == 5
        for peer in peers:
            creates = [r for r in peer.received if r.json and r.json.get("type") == "Create"]
            assert len(creates) == 1, peer.name
            assert creates[0].path == "/inbox" and creates[0].verified
    finally:
        for peer in peers:
            peer.stop()


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    env.update(
        INTEROCC_BASE_URL=settings.base_url,
        INTEROCC_DATABASE_URL=settings.database_url,
        INTEROCC_SECRET_KEY=SECRET,
        INTEROCC_ALLOW_PRIVATE_ADDRESSES="true",
        INTEROCC_DELIVERY_TIMEOUT="5",
        # The three retries to one host go out at once (the cap is tested on its own).
        INTEROCC_DELIVERY_PER_HOST="3",
        INTEROCC_LOG_LEVEL="WARNING",
    )
    return env


async def test_retries_across_a_killed_worker_deliver_exactly_once(
    ctx: Context, settings: Settings, server: ServerThread, tmp_path: Path
) -> None:
    await approved_assembly(ctx, "ows")
    flaky = Peer(name="flaky").start()
    steady = Peer(name="steady").start()
    flaky.retry_after = "120"
    try:
        await flaky.follow(flaky.add_actor("ana"), f"ows@{ctx.urls.host}")
        await steady.follow(steady.add_actor("ben"), f"ows@{ctx.urls.host}")
        assert await worker.run_once(ctx) == 2  # the Accepts
        flaky.statuses.extend([503] * 6)  # 3 answered in the first pass, 3 in flight later

        # Posted and first attempted as if ten minutes ago: the flaky host answers 503.
        t0 = ctx.clock() - timedelta(minutes=10)
        urls = []
        for i in range(3):
            async with ctx.sessions() as session, session.begin():
                published = await communiques.publish(
                    session, ctx.urls, handle="ows", source=f"Communiqué number {i}.", now=t0
                )
                urls.append(published.url)
        assert await worker.run_once(ctx, now=t0) == 6
        async with ctx.sessions() as session:
            pending = (
                await session.scalars(
                    select(Delivery).where(Delivery.status == DeliveryStatus.PENDING)
                )
            ).all()
            attempts = (await session.scalars(select(DeliveryAttempt))).all()
        assert len(pending) == 3
        for row in pending:
            assert row.attempts == 1 and row.last_status == 503
            # Retry-After (120 s) is longer than the first backoff (about 1 min): it wins.
            assert row.next_attempt_at == t0 + timedelta(seconds=120)
        assert sorted(a.outcome for a in attempts if a.status_code == 503) == ["retry"] * 3

        # A real worker process picks the due retries up; it is killed while the flaky host
        # is still answering (slowly, with 503), so none of these attempts is acknowledged.
        flaky.delay = 3.0
        seen = len(flaky.received)
        log = (tmp_path / "worker.log").open("wb")
        proc = subprocess.Popen(  # noqa: ASYNC220 - a real worker process, started once
            [sys.executable, "-m", "server.cli", "worker"],
            env=_worker_env(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 20
            while len(flaky.received) < seen + 3 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert len(flaky.received) == seen + 3, (tmp_path / "worker.log").read_text()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            log.close()
        async with ctx.sessions() as session:
            claimed = (
                await session.scalars(select(Delivery).where(Delivery.claim_token.is_not(None)))
            ).all()
        assert len(claimed) == 3  # leased by the dead worker, not lost

        # Restarted after the lease ran out: everything ends delivered, each exactly once.
        flaky.delay = 0.0
        later = ctx.clock() + worker.lease(ctx) + timedelta(seconds=1)
        assert await worker.run_once(ctx, now=later) == 3
        assert await worker.run_once(ctx, now=later + timedelta(days=7)) == 0

        async with ctx.sessions() as session:
            rows = (await session.scalars(select(Delivery))).all()
        assert {r.status for r in rows} == {DeliveryStatus.DELIVERED}
        for peer in (flaky, steady):
            acked = [
                r.json["object"]["id"]
                for r in peer.received
                if r.json and r.json.get("type") == "Create" and 200 <= r.status < 300
            ]
            assert sorted(acked) == sorted(urls), peer.name  # each once, none twice
    finally:
        flaky.stop()
        steady.stop()
