"""Who may give an assembly other identities or move it from the web: its admins and the
instance's administrators, with our CSRF token, and (for a move) a ticked confirmation.

Everyone else is refused before the form is read, and nothing changes: not the assembly's
aliases, not where it lives, and no activity is queued for its followers. The target always
names the assembly back, so any of these requests would succeed if the check were missing.
Our app runs under uvicorn on loopback.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from server import moving
from server.context import Context
from server.models import Activity, MemberRole
from tests.helpers import approved_assembly, count
from tests.helpers_web import add_member, create_user, csrf_token, field_error, log_in
from tests.support.servers import ServerThread
from tests.test_web_assemblies import assembly_row

pytestmark = pytest.mark.e2e

OLD, NEW, ELSEWHERE = "libertyplaza", "plazaexile", "tahrir"
ADMIN = "admin@example.org"  # an admin of libertyplaza
FACILITATOR = "facilitator@example.org"  # a facilitator of libertyplaza, not an admin
NEIGHBOUR = "neighbour@example.org"  # an admin of another assembly
Client = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def browser(server: ServerThread) -> AsyncIterator[Client]:
    opened: list[httpx.AsyncClient] = []

    def new() -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=20)
        opened.append(client)
        return client

    yield new
    for client in opened:
        await client.aclose()


@pytest.fixture
async def scene(ctx: Context, server: ServerThread) -> str:
    """Three assemblies; the new identity names the old one, which already has an alias
    (the third assembly). Returns the old one's alias."""
    for handle in (OLD, NEW, ELSEWHERE):
        await approved_assembly(ctx, handle)
    async with ctx.sessions() as session, session.begin():
        here = ctx.urls.host
        await moving.add_alias(session, ctx, handle=NEW, target=f"@{OLD}@{here}")
        await moving.add_alias(session, ctx, handle=OLD, target=f"@{ELSEWHERE}@{here}")
    for email, handle, role in (
        (ADMIN, OLD, MemberRole.ADMIN),
        (FACILITATOR, OLD, MemberRole.FACILITATOR),
        (NEIGHBOUR, ELSEWHERE, MemberRole.ADMIN),
    ):
        await add_member(ctx, await create_user(ctx, email), handle, role)
    return ctx.urls.actor(ELSEWHERE)


async def signed_in(browser: Client, email: str) -> httpx.AsyncClient:
    client = browser()
    await log_in(client, email)
    return client


def forms(ctx: Context, alias: str) -> dict[str, dict[str, str]]:
    """Each form a refused person might send, filled so that it would change something."""
    return {
        f"/manage/{OLD}/aliases": {"alias": f"@{NEW}@{ctx.urls.host}"},
        f"/manage/{OLD}/aliases/remove": {"alias": alias},
        f"/manage/{OLD}/move": {"target": f"@{NEW}@{ctx.urls.host}", "confirm": "on"},
    }


async def unchanged(ctx: Context, alias: str, activities: int) -> None:
    old = await assembly_row(ctx, OLD)
    assert old.also_known_as == [alias]
    assert (old.moved_to, old.moved_at) == (None, None)
    assert await count(ctx, Activity) == activities


@pytest.mark.parametrize(
    ("email", "says"),
    [
        (FACILITATOR, "only this assembly's admins"),
        (NEIGHBOUR, "not a facilitator of this assembly"),
    ],
)
async def test_only_its_admins_change_its_identities(
    ctx: Context, scene: str, browser: Client, email: str, says: str
) -> None:
    before = await count(ctx, Activity)
    client = await signed_in(browser, email)
    page = await client.get(f"/manage/{OLD}/settings", headers={"Accept": "text/html"})
    assert page.status_code == 403 and says in html.unescape(page.text).lower()
    token = csrf_token(page.text)  # a valid token of their own
    for path, data in forms(ctx, scene).items():
        response = await client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 403, path
        assert says in html.unescape(response.text).lower(), path
    await unchanged(ctx, scene, before)


async def test_an_anonymous_visitor_is_sent_to_log_in(
    ctx: Context, scene: str, browser: Client
) -> None:
    before = await count(ctx, Activity)
    visitor = browser()
    token = csrf_token((await visitor.get("/login")).text)
    for path, data in forms(ctx, scene).items():
        response = await visitor.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/login?next={path}"
    await unchanged(ctx, scene, before)


async def test_a_form_without_our_csrf_token_is_refused(
    ctx: Context, scene: str, browser: Client
) -> None:
    before = await count(ctx, Activity)
    admin = await signed_in(browser, ADMIN)
    other = browser()  # another visitor's token: it matches another cookie
    foreign = csrf_token((await other.get("/login")).text)
    for path, data in forms(ctx, scene).items():
        for sent in (data, {"csrf_token": foreign, **data}):
            response = await admin.post(path, data=sent)
            assert response.status_code == 403, path
            assert "did not come from this site" in response.text
        # A form from another site, with a token that would otherwise pass.
        token = csrf_token((await admin.get(f"/manage/{OLD}/settings")).text)
        response = await admin.post(
            path, data={"csrf_token": token, **data}, headers={"Origin": "https://evil.example"}
        )
        assert response.status_code == 403 and "another site" in response.text, path
    await unchanged(ctx, scene, before)


async def test_a_move_needs_its_confirmation(ctx: Context, scene: str, browser: Client) -> None:
    before = await count(ctx, Activity)
    admin = await signed_in(browser, ADMIN)
    token = csrf_token((await admin.get(f"/manage/{OLD}/settings")).text)
    target = f"@{NEW}@{ctx.urls.host}"
    for confirm in ({}, {"confirm": ""}, {"confirm": "off"}):
        response = await admin.post(
            f"/manage/{OLD}/move", data={"csrf_token": token, "target": target, **confirm}
        )
        assert response.status_code == 400
        assert "tick the box to confirm" in (field_error(response.text, "confirm") or "")
    await unchanged(ctx, scene, before)
    # Ticked, the same move goes through: the refusals above were for the box alone.
    response = await admin.post(
        f"/manage/{OLD}/move", data={"csrf_token": token, "target": target, "confirm": "on"}
    )
    assert response.status_code == 303
    assert (await assembly_row(ctx, OLD)).moved_to == ctx.urls.actor(NEW)
