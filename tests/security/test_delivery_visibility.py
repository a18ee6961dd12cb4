"""Which servers follow an assembly, and what they answer, is not the public's business.

A communiqué's delivery page is for its assembly's facilitators and the instance's admins;
the federation page and its reset are for the admins alone, and the reset needs the form's
CSRF token. The public pages show none of it: no server, no inbox, no error. What a remote
server answered is shown escaped and cut short. Our app runs under uvicorn on loopback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select

from server.context import Context
from server.models import Delivery, DeliveryHost, DeliveryStatus
from server.web.session import FORM_FIELD
from tests.helpers import approved_assembly, post
from tests.helpers_web import add_member, create_user, csrf_token, log_in
from tests.support import deliveries as scene
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

HANDLE = "libertyplaza"
OTHER = "kitchen"
FACILITATOR = "facilitator@example.org"
BYSTANDER = "bystander@example.org"  # signed in, facilitates another assembly
ADMIN = "admin@example.org"
HOSTILE = "<script>alert('pwned')</script>" + "x" * 400


@dataclass(frozen=True)
class World:
    page: str  # the communiqué's delivery page
    permalink: str  # its public page
    other_public_id: str  # a communiqué of another assembly


@pytest.fixture
async def world(ctx: Context, server: ServerThread) -> World:
    await approved_assembly(ctx, HANDLE)
    await approved_assembly(ctx, OTHER, name="Kitchen Working Group")
    await add_member(ctx, await create_user(ctx, FACILITATOR), HANDLE)
    await add_member(ctx, await create_user(ctx, BYSTANDER), OTHER)
    await create_user(ctx, ADMIN, is_admin=True)
    published = await post(ctx, HANDLE, "The general strike is on Thursday.")
    elsewhere = await post(ctx, OTHER, "The kitchen needs onions.")
    async with ctx.sessions() as session, session.begin():
        await scene.add_scene(session, published.activity.id, now=ctx.clock())
        session.add(
            Delivery(
                activity_id=published.activity.id,
                inbox_uri="https://hostile.example/inbox",
                host="hostile.example",
                status=DeliveryStatus.FAILED,
                attempts=1,
                last_error=HOSTILE,
                next_attempt_at=ctx.clock(),
                created_at=ctx.clock(),
            )
        )
    return World(
        page=f"/manage/{HANDLE}/communiques/{published.communique.public_id}/delivery",
        permalink=published.url,
        other_public_id=elsewhere.communique.public_id,
    )


async def hosts_state(ctx: Context) -> list[tuple[str, str, int]]:
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(DeliveryHost).order_by(DeliveryHost.host))).all()
        return [(h.host, h.state.value, h.failures) for h in rows]


async def reset_with_token(client: httpx.AsyncClient, host: str) -> httpx.Response:
    """POST the reset as a page of ours would: with the token every form carries."""
    page = await client.get("/login", follow_redirects=True)
    return await client.post(
        "/admin/federation/reset", data={FORM_FIELD: csrf_token(page.text), "host": host}
    )


def assert_tells_nothing(page: str) -> None:
    for secret in (*scene.HOSTS, *scene.ERRORS, "someone-at-risk", "hostile.example"):
        assert secret not in page, secret
    assert "/delivery" not in page and "tally" not in page


async def test_anonymous_visitors_are_sent_to_login(
    ctx: Context, browser: Callable[[], httpx.AsyncClient], world: World
) -> None:
    visitor = browser()
    before = await hosts_state(ctx)
    for url in (world.page, "/admin/federation"):
        response = await visitor.get(url, headers={"Accept": "text/html"})
        assert response.status_code == 303, url
        assert response.headers["location"].startswith("/login?next="), url
        assert_tells_nothing(response.text)
    refused = await reset_with_token(visitor, scene.DOWN)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    assert await hosts_state(ctx) == before


async def test_the_public_pages_show_nothing_of_the_delivery(
    browser: Callable[[], httpx.AsyncClient], world: World
) -> None:
    visitor = browser()
    for url in (world.permalink, f"/actors/{HANDLE}", "/", f"/actors/{HANDLE}/feed.atom"):
        response = await visitor.get(url, headers={"Accept": "text/html"})
        assert response.status_code == 200, url
        assert_tells_nothing(response.text)
    # Nor to someone signed in who is not one of the assembly's facilitators.
    bystander = browser()
    await log_in(bystander, BYSTANDER)
    assert_tells_nothing((await bystander.get(world.permalink)).text)


async def test_someone_elses_communique_is_refused(
    ctx: Context, browser: Callable[[], httpx.AsyncClient], world: World
) -> None:
    bystander = browser()
    await log_in(bystander, BYSTANDER)
    response = await bystander.get(world.page)
    assert response.status_code == 403
    assert "not a facilitator of this assembly" in response.text
    assert_tells_nothing(response.text)
    # A facilitator of one assembly cannot reach another's communiqué through their own.
    facilitator = browser()
    await log_in(facilitator, FACILITATOR)
    crossed = await facilitator.get(
        f"/manage/{HANDLE}/communiques/{world.other_public_id}/delivery"
    )
    assert crossed.status_code == 404
    assert (
        await facilitator.get(f"/manage/{OTHER}/communiques/{world.other_public_id}/delivery")
    ).status_code == 403


async def test_the_federation_page_and_reset_refuse_non_admins(
    ctx: Context, browser: Callable[[], httpx.AsyncClient], world: World
) -> None:
    before = await hosts_state(ctx)
    facilitator = browser()
    await log_in(facilitator, FACILITATOR)
    page = await facilitator.get("/admin/federation")
    assert page.status_code == 403
    assert "only the instance's administrators" in page.text
    assert_tells_nothing(page.text)
    refused = await reset_with_token(facilitator, scene.DOWN)
    assert refused.status_code == 403
    assert await hosts_state(ctx) == before


async def test_a_reset_without_its_csrf_token_is_refused(
    ctx: Context, browser: Callable[[], httpx.AsyncClient], world: World
) -> None:
    before = await hosts_state(ctx)
    admin = browser()
    await log_in(admin, ADMIN)
    for data in ({"host": scene.DOWN}, {"host": scene.DOWN, FORM_FIELD: "forged-token-" * 3}):
        response = await admin.post("/admin/federation/reset", data=data)
        assert response.status_code == 403, data
    assert (
        await hosts_state(ctx)
        == before
        == [
            (scene.DOWN, "failing", 6),
            (scene.GONE, "unavailable", 40),
        ]
    )


async def test_a_remote_servers_error_is_escaped_and_cut_short(
    browser: Callable[[], httpx.AsyncClient], world: World
) -> None:
    facilitator = browser()
    await log_in(facilitator, FACILITATOR)
    page = (await facilitator.get(world.page)).text
    assert "<script>alert" not in page
    shown = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"
    assert shown in page
    cut = page.split(shown, 1)[1].split("</span>", 1)[0]
    assert cut.endswith("…") and len(cut) < 160
    # The facilitator sees servers, never their inboxes.
    assert "someone-at-risk" not in page and "hostile.example/inbox" not in page
