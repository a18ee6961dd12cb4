"""Acceptance: the delivery pages, driven as a browser drives them.

A facilitator sees where a communiqué's deliveries stand, server by server; the instance's
admin sees every server's health and resets a failing one. Our app runs under uvicorn on
loopback; rows are made directly in the database (tests/support/deliveries.py).
Who may not see these pages: tests/security/test_delivery_visibility.py.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from server.context import Context
from server.models import Delivery, DeliveryAttempt, DeliveryHost, HostState
from server.web.pages import duration, relative
from tests.helpers import approved_assembly, post
from tests.helpers_web import add_member, create_user, log_in, submit
from tests.support import deliveries as scene
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

HANDLE = "libertyplaza"
FACILITATOR = "facilitator@example.org"
ADMIN = "admin@example.org"


@dataclass(frozen=True)
class World:
    page: str  # the delivery page of the communiqué with the scene
    quiet_page: str  # that of a communiqué nobody received
    scene: scene.Scene


@pytest.fixture
async def world(ctx: Context, server: ServerThread) -> World:
    await approved_assembly(ctx, HANDLE)
    facilitator = await create_user(ctx, FACILITATOR)
    await add_member(ctx, facilitator, HANDLE)
    await create_user(ctx, ADMIN, is_admin=True)
    published = await post(ctx, HANDLE, "The general strike is on Thursday.")
    quiet = await post(ctx, HANDLE, "Nobody follows us yet.")
    async with ctx.sessions() as session, session.begin():
        made = await scene.add_scene(session, published.activity.id, now=ctx.clock())
        attempt = DeliveryAttempt(
            delivery_id=made.held[0],
            attempted_at=ctx.clock() - timedelta(hours=1),
            outcome="retry",
            error=scene.DOWN_ERROR,
        )
        session.add(attempt)
    base = f"/manage/{HANDLE}/communiques"
    return World(
        page=f"{base}/{published.communique.public_id}/delivery",
        quiet_page=f"{base}/{quiet.communique.public_id}/delivery",
        scene=made,
    )


@pytest.fixture
async def browser(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, follow_redirects=False) as client:
        yield client


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def tally(page: str) -> dict[str, int]:
    """The page's numbers at a glance: {label: number}."""
    found = re.findall(
        r'<span class="tally-number">(\d+)</span>\s*<span class="tally-label">([^<]+)</span>',
        page,
    )
    return {label: int(n) for n, label in found}


def table_rows(page: str) -> list[list[str]]:
    """The cells' text of each row of the page's (first) table body."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [[text_of(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)] for r in rows]


async def test_the_facilitator_sees_the_delivery_server_by_server(
    browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, FACILITATOR)
    response = await browser.get(world.page)
    assert response.status_code == 200
    page = response.text
    assert tally(page) == {"Delivered": 2, "Waiting": 1, "Held": 5, "Failed": 1, "Skipped": 1}
    rows = table_rows(page)
    # Server, health, delivered, pending, failed or skipped, last error, next try.
    assert [r[:5] for r in rows] == [
        ["gone.example", "Unavailable", "0", "1 held", "1 (1 skipped)"],
        ["down.example", "Failing", "0", "4 held", "0"],
        ["up.example", "Available", "2", "1", "0"],
        ["refuse.example", "Available", "0", "0", "1"],
    ]
    assert [r[5] for r in rows] == [scene.GONE_ERROR, scene.DOWN_ERROR, "—", scene.REFUSED]
    # down.example has a delivery in flight; the others' next tries are human times.
    assert [r[6] for r in rows] == ["in 6 hours", "sending now", "in 5 minutes", "—"]
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"[^>]*>in 6 hours', page)
    # It is one of the assembly's pages, and links to the communiqué.
    assert '<nav class="tabs" aria-label="Manage Liberty Plaza General Assembly">' in page
    assert f'href="/manage/{HANDLE}/communiques/' in page and "View it" in page
    # No inbox is shown, only servers.
    assert "someone-at-risk" not in page


async def test_the_delivery_page_is_linked_from_the_facilitators_pages(
    browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, FACILITATOR)
    manage = (await browser.get(f"/manage/{HANDLE}")).text
    assert f'href="{world.page}"' in manage
    edit = (await browser.get(world.page.replace("/delivery", "/edit"))).text
    assert f'href="{world.page}"' in edit


async def test_a_communique_nobody_received_says_so(
    browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, FACILITATOR)
    page = (await browser.get(world.quiet_page)).text
    assert "Nothing to deliver." in page
    assert "<tbody>" not in page and 'class="tally"' not in page


async def test_an_instance_admin_may_look_without_being_a_member(
    browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, ADMIN)
    response = await browser.get(world.page)
    assert response.status_code == 200
    assert tally(response.text)["Delivered"] == 2
    assert 'aria-label="Manage ' not in response.text  # the assembly's tabs are not theirs


async def test_the_federation_page_lists_servers_by_health(
    browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, ADMIN)
    page = (await browser.get("/admin/federation")).text
    assert tally(page) == {
        "Pending": 6,
        "Held": 5,
        "Failed attempts": 1,
        "Servers in trouble": 2,
    }
    assert "1 failing, 1 unavailable" in page
    rows = table_rows(page)
    # Server, health, queue, oldest pending, last error, next try, actions.
    assert [r[0] for r in rows] == ["gone.example", "down.example", "up.example"]
    assert rows[0][1] == "Unavailable for 1 day, failing for 8 days 40 failed attempts in a row"
    assert rows[1][1] == "Failing for 2 hours 6 failed attempts in a row"
    assert [r[2] for r in rows] == ["1 held", "4 held", "1"]
    assert [r[3] for r in rows] == ["1 hour ago", "1 hour ago", "1 hour ago"]
    assert [r[4] for r in rows] == [scene.GONE_ERROR, scene.DOWN_ERROR, "—"]
    assert [r[5] for r in rows] == ["probe in 6 hours", "probe in 10 minutes", "in 5 minutes"]
    # A reset for each server with a health record, none for the healthy one.
    assert [r[6] for r in rows] == ["Reset", "Reset", ""]
    assert 'aria-label="Reset gone.example"' in page
    assert "At most 500 are listed" in page
    assert '<a href="/admin/federation" aria-current="page">Federation</a>' in page


async def test_the_admin_overview_shows_the_queue(browser: httpx.AsyncClient, world: World) -> None:
    await log_in(browser, ADMIN)
    page = text_of((await browser.get("/admin")).text)
    assert (
        "6 deliveries pending, 5 held. 1 failed attempt in the last 24 hours."
        " Servers: 1 failing, 1 unavailable." in page
    )
    assert 'href="/admin/federation"' in (await browser.get("/admin")).text


async def test_reset_makes_a_failing_server_available_and_releases_what_it_held(
    ctx: Context, browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, ADMIN)
    before = ctx.clock()
    response = await submit(
        browser, "/admin/federation", {"host": scene.DOWN}, action="/admin/federation/reset"
    )
    after = ctx.clock()
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/federation"
    async with ctx.sessions() as session:
        host = await session.get(DeliveryHost, scene.DOWN)
        assert host is not None
        assert (host.state, host.failures, host.failing_since, host.next_probe_at) == (
            HostState.AVAILABLE,
            0,
            None,
            None,
        )
        held = (
            await session.scalars(
                select(Delivery).where(Delivery.id.in_(world.scene.held)).order_by(Delivery.id)
            )
        ).all()
        in_flight = await session.get(Delivery, world.scene.in_flight)
    # Released oldest first, spread at host_release_per_minute (120: one every 0.5 s).
    times = [d.next_attempt_at for d in held]
    assert before - timedelta(seconds=1) <= times[0] <= after + timedelta(seconds=1)
    step = timedelta(minutes=1) / ctx.settings.host_release_per_minute
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [step, step]
    # The delivery a worker holds is left to that worker.
    assert in_flight is not None and in_flight.next_attempt_at > after + timedelta(hours=2)

    shown = await browser.get("/admin/federation")
    assert "down.example is marked available; 3 held deliveries are sent again." in (
        html.unescape(shown.text)
    )
    rows = table_rows(shown.text)
    down = next(r for r in rows if r[0] == scene.DOWN)
    assert down[1] == "Available" and down[6] == ""


async def test_resetting_a_server_with_no_health_record_is_a_404(
    ctx: Context, browser: httpx.AsyncClient, world: World
) -> None:
    await log_in(browser, ADMIN)
    response = await submit(
        browser, "/admin/federation", {"host": scene.UP}, action="/admin/federation/reset"
    )
    assert response.status_code == 404
    async with ctx.sessions() as session:
        assert await session.get(DeliveryHost, scene.UP) is None


NOON = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "said"),
    [
        (timedelta(seconds=59), "now"),
        (timedelta(seconds=-59), "now"),
        (timedelta(seconds=60), "in 1 minute"),
        (timedelta(minutes=-5), "5 minutes ago"),
        (timedelta(minutes=59), "in 59 minutes"),
        (timedelta(minutes=59, seconds=40), "in 1 hour"),
        (timedelta(hours=-23), "23 hours ago"),
        (timedelta(hours=23, minutes=40), "in 1 day"),
        (timedelta(days=-1), "1 day ago"),
        (timedelta(days=8, hours=3), "in 8 days"),
    ],
)
def test_times_near_now_are_said_as_people_say_them(offset: timedelta, said: str) -> None:
    assert relative(NOON + offset, NOON) == said
    assert relative(None, NOON) == "" and duration(None, NOON) == ""
