"""``interocc deliveries``: the outgoing queue from the shell, filtered by server and status.

The real console script in its own process, on the scene of tests/support/deliveries.py
(a communiqué's deliveries in every state, on four servers).
"""

from __future__ import annotations

import asyncio

import pytest

from server.context import create_context
from tests.conftest import make_settings
from tests.helpers import approved_assembly, post
from tests.support import deliveries as scene
from tests.test_cli import BASE_URL, interocc, ok


async def _scene(database_url: str) -> scene.Scene:
    ctx = await create_context(make_settings(database_url, BASE_URL))
    try:
        await approved_assembly(ctx, "plaza")
        published = await post(ctx, "plaza", "The general strike is on Thursday.")
        async with ctx.sessions() as session, session.begin():
            return await scene.add_scene(session, published.activity.id, now=ctx.clock())
    finally:
        await ctx.aclose()


def _table(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if not line.startswith("#")]
    assert lines[0].split("\t")[:3] == ["id", "status", "host"]
    return [line.split("\t") for line in lines[1:]]


# The command only prints what server/deliveries.py reads (tested on both engines in
# tests/test_deliveries_read.py): one engine is enough here.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_deliveries_by_host_and_status(database_url: str) -> None:
    made = asyncio.run(_scene(database_url))

    run = ok(database_url, "deliveries")
    rows = _table(run.stdout)
    assert len(rows) == 10  # up 3, down 4, gone 2, refuse 1 (nobody follows: none of its own)
    assert run.stdout.startswith("# queue: 6 pending (5 held), ")
    assert "1 servers failing, 1 unavailable" in run.stdout

    run = ok(database_url, "deliveries", "--host", scene.DOWN)
    assert f"# {scene.DOWN}: failing, 6 failures since " in run.stdout
    rows = _table(run.stdout)
    assert sorted(int(r[0]) for r in rows) == sorted([*made.held, made.in_flight])
    assert {r[1] for r in rows} == {"pending"} and {r[2] for r in rows} == {scene.DOWN}

    run = ok(database_url, "deliveries", "--host", scene.UP, "--status", "delivered")
    assert f"# {scene.UP}: available (never failed)" in run.stdout
    rows = _table(run.stdout)
    assert len(rows) == 2 and {r[1] for r in rows} == {"delivered"}
    assert {r[5] for r in rows} == {"-"}  # no next try for what is delivered

    run = ok(database_url, "deliveries", "--status", "failed")
    [refused] = _table(run.stdout)
    assert refused[2] == scene.REFUSE and refused[7] == scene.REFUSED

    run = ok(database_url, "deliveries", "--limit", "3")
    assert len(_table(run.stdout)) == 3
    assert "# the newest 3 only: --limit N for more" in run.stdout

    # Usage mistakes: argparse's usage and one error line, exit 2, nothing changed.
    for args, says in (
        (("--status", "lost"), "invalid choice: 'lost'"),
        (("--limit", "0"), "a number from 1 to 10000, not '0'"),
    ):
        run = interocc(database_url, "deliveries", *args)
        assert run.returncode == 2 and says in run.stderr_lines[-1], str(run)
