"""Acceptance: the instance admin's screens, driven through their HTML forms.

Our app runs under uvicorn on loopback; an httpx client plays the browser (cookies, CSRF
token from the page). Every refusal must leave the database as it was.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from server import assemblies, instance
from server.context import Context
from server.models import Assembly, AssemblyStatus, DomainBlock, Report, User, UserStatus
from server.web.session import FORM_FIELD
from tests.helpers import approved_assembly, count
from tests.helpers_web import create_user, csrf_token, field_error, form_error, log_in, submit
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

ADMIN = "admin@example.org"
MEMBER = "member@example.org"

GET_ROUTES = [
    "/admin",
    "/admin/assemblies",
    "/admin/assemblies/pendingga/reject",
    "/admin/accounts",
    "/admin/settings",
    "/admin/domains",
    "/admin/follows",
    "/admin/reports",
]


def post_routes(ids: dict[str, int]) -> list[tuple[str, dict[str, str]]]:
    return [
        ("/admin/assemblies/pendingga/approve", {}),
        ("/admin/assemblies/pendingga/reject", {"reason": "not an assembly"}),
        ("/admin/assemblies/liveoak/suspend", {}),
        ("/admin/assemblies/sleepy/unsuspend", {}),
        (f"/admin/accounts/{ids['waiting']}/approve", {}),
        (f"/admin/accounts/{ids['waiting']}/reject", {}),
        (f"/admin/accounts/{ids['admin']}/close", {}),
        (f"/admin/accounts/{ids['admin']}/remove-admin", {}),
        (f"/admin/accounts/{ids['member']}/make-admin", {}),
        (
            "/admin/settings",
            {"name": "Taken over", "registration_mode": "open", "follow_approval": "on"},
        ),
        ("/admin/domains", {"domain": "social.example", "reason": "spite"}),
        (f"/admin/domains/{ids['block']}/delete", {}),
        ("/admin/follows/1/approve", {}),
        ("/admin/follows/1/reject", {}),
        (f"/admin/reports/{ids['report']}/resolve", {}),
    ]


@pytest.fixture
async def world(ctx: Context, server: ServerThread) -> dict[str, int]:
    """An admin, a plain member, an account waiting for approval, assemblies in every
    state, one domain block and one report."""
    ids = {
        "admin": await create_user(ctx, ADMIN, is_admin=True),
        "member": await create_user(ctx, MEMBER),
        "waiting": await create_user(ctx, "waiting@example.org", status=UserStatus.PENDING),
    }
    await approved_assembly(ctx, "liveoak", name="Live Oak Assembly")
    await approved_assembly(ctx, "sleepy", name="Sleepy Hollow Assembly")
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(session, handle="pendingga", name="Pending General Assembly")
        await assemblies.suspend(session, "sleepy", now=ctx.clock())
        block = DomainBlock(domain="blocked.example", reason="spam", created_at=ctx.clock())
        report = Report(
            uri="https://remote.example/reports/1",
            actor_uri="https://remote.example/actor",
            targets=[ctx.urls.actor("liveoak")],
            comment="spam",
            document={},
            received_at=ctx.clock(),
        )
        session.add_all([block, report])
        await session.flush()
        ids |= {"block": block.id, "report": report.id}
    return ids


@pytest.fixture
async def browser(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, follow_redirects=False) as client:
        yield client


@pytest.fixture
async def admin(browser: httpx.AsyncClient, world: dict[str, int]) -> httpx.AsyncClient:
    await log_in(browser, ADMIN)
    return browser


async def snapshot(ctx: Context) -> dict[str, object]:
    """Everything an admin action could change."""
    async with ctx.sessions() as session:
        states = {a.handle: a.status for a in (await session.scalars(select(Assembly))).all()}
        users = {
            u.email: (u.status, u.is_admin) for u in (await session.scalars(select(User))).all()
        }
        blocks = sorted((await session.scalars(select(DomainBlock.domain))).all())
        resolved = [r.resolved_at for r in (await session.scalars(select(Report))).all()]
        info = await instance.load(session, ctx.settings)
    return {
        "assemblies": states,
        "users": users,
        "blocks": blocks,
        "reports": resolved,
        "info": info,
    }


async def post_form(
    client: httpx.AsyncClient, url: str, data: dict[str, str] | None = None
) -> httpx.Response:
    """POST like a browser that has a page of ours open (the login form for visitors, the
    log-out button for anyone signed in: every form carries the same token)."""
    page = await client.get("/login", follow_redirects=True)
    return await client.post(url, data={FORM_FIELD: csrf_token(page.text), **(data or {})})


async def test_anonymous_visitors_are_sent_to_login(
    ctx: Context, browser: httpx.AsyncClient, world: dict[str, int]
) -> None:
    before = await snapshot(ctx)
    for url in GET_ROUTES:
        response = await browser.get(url, headers={"Accept": "text/html"})
        assert response.status_code == 303, url
        assert response.headers["location"].startswith("/login?next="), url
    for url, data in post_routes(world):
        response = await post_form(browser, url, data)
        assert response.status_code == 303, url
        assert response.headers["location"].startswith("/login"), url
    assert await snapshot(ctx) == before


async def test_non_admins_get_403_and_change_nothing(
    ctx: Context, browser: httpx.AsyncClient, world: dict[str, int]
) -> None:
    await log_in(browser, MEMBER)
    before = await snapshot(ctx)
    for url in GET_ROUTES:
        response = await browser.get(url, headers={"Accept": "text/html"})
        assert response.status_code == 403, url
        assert "only the instance's administrators" in html.unescape(response.text).lower()
    for url, data in post_routes(world):
        response = await post_form(browser, url, data)
        assert response.status_code == 403, url
    assert await snapshot(ctx) == before
    # And the admin menu is not offered to them.
    assert 'href="/admin"' not in (await browser.get("/about")).text


async def test_overview_counts_and_tabs(admin: httpx.AsyncClient) -> None:
    page = (await admin.get("/admin")).text
    # Assemblies: pendingga of three; accounts: waiting@ of three.
    assert page.count("1 waiting for approval, 3 in all.") == 2
    assert "1 unresolved." in page and "1 blocked." in page
    assert '<nav class="tabs" aria-label="Administration">' in page
    assert '<a href="/admin" aria-current="page">Overview</a>' in page
    for href in ("/admin/assemblies", "/admin/accounts", "/admin/follows", "/admin/reports"):
        assert f'href="{href}"' in page
    assert 'href="/admin/domains"' in page and 'href="/admin/settings"' in page
    assert (
        '<a href="/admin/reports" aria-current="page">' in (await admin.get("/admin/reports")).text
    )


async def status_of(ctx: Context, handle: str) -> AssemblyStatus:
    async with ctx.sessions() as session:
        return (await assemblies.get(session, handle)).status


async def test_approve_suspend_unsuspend(ctx: Context, admin: httpx.AsyncClient) -> None:
    page = (await admin.get("/admin/assemblies")).text
    assert page.index("Waiting for approval") < page.index("Pending General Assembly")
    assert page.index("Pending General Assembly") < page.index("All assemblies")

    response = await submit(
        admin, "/admin/assemblies", action="/admin/assemblies/pendingga/approve"
    )
    assert response.status_code == 303 and response.headers["location"] == "/admin/assemblies"
    assert await status_of(ctx, "pendingga") == AssemblyStatus.APPROVED
    shown = (await admin.get("/admin/assemblies")).text
    assert "Pending General Assembly (@pendingga) is approved: it federates." in shown
    assert "No assembly is waiting for approval." in shown

    await submit(admin, "/admin/assemblies", action="/admin/assemblies/pendingga/suspend")
    assert await status_of(ctx, "pendingga") == AssemblyStatus.SUSPENDED
    await submit(admin, "/admin/assemblies", action="/admin/assemblies/pendingga/unsuspend")
    assert await status_of(ctx, "pendingga") == AssemblyStatus.APPROVED

    # Suspending twice is refused on the page, with the reason, and changes nothing.
    await submit(admin, "/admin/assemblies", action="/admin/assemblies/liveoak/suspend")
    again = await submit(admin, "/admin/assemblies", action="/admin/assemblies/liveoak/suspend")
    assert again.status_code == 409
    assert form_error(again.text) == "liveoak is already suspended"
    unknown = await submit(admin, "/admin/assemblies", action="/admin/assemblies/nosuch/approve")
    assert unknown.status_code == 404


async def test_reject_needs_a_reason(ctx: Context, admin: httpx.AsyncClient) -> None:
    form = "/admin/assemblies/pendingga/reject"
    response = await submit(admin, form, {"reason": "   "})
    assert response.status_code == 400
    assert field_error(response.text, "reason") == "say why, so the requester can do better"
    assert await status_of(ctx, "pendingga") == AssemblyStatus.PENDING

    response = await submit(admin, form, {"reason": "This is a sandwich shop, not an assembly."})
    assert response.status_code == 303
    async with ctx.sessions() as session:
        rejected = await assemblies.get(session, "pendingga")
    assert rejected.status == AssemblyStatus.REJECTED
    assert rejected.rejection_reason == "This is a sandwich shop, not an assembly."
    listing = (await admin.get("/admin/assemblies")).text
    assert "This is a sandwich shop, not an assembly." in listing
    # The reject form is for pending requests only.
    assert (await admin.get(form)).status_code == 404


async def account(ctx: Context, email: str) -> tuple[UserStatus, bool]:
    async with ctx.sessions() as session:
        user = (await session.scalars(select(User).where(User.email == email))).one()
        return user.status, user.is_admin


async def test_accounts(ctx: Context, admin: httpx.AsyncClient, world: dict[str, int]) -> None:
    page = "/admin/accounts"
    assert "waiting@example.org" in (await admin.get(page)).text
    response = await submit(admin, page, action=f"/admin/accounts/{world['waiting']}/approve")
    assert response.status_code == 303
    assert await account(ctx, "waiting@example.org") == (UserStatus.ACTIVE, False)

    await submit(admin, page, action=f"/admin/accounts/{world['member']}/make-admin")
    assert await account(ctx, MEMBER) == (UserStatus.ACTIVE, True)
    await submit(admin, page, action=f"/admin/accounts/{world['member']}/remove-admin")
    await submit(admin, page, action=f"/admin/accounts/{world['member']}/close")
    assert await account(ctx, MEMBER) == (UserStatus.DISABLED, False)
    await submit(admin, page, action=f"/admin/accounts/{world['member']}/reopen")
    assert await account(ctx, MEMBER) == (UserStatus.ACTIVE, False)

    # No admin closes or demotes themselves; approving an active account is refused.
    for verb in ("close", "remove-admin"):
        refused = await submit(admin, page, action=f"/admin/accounts/{world['admin']}/{verb}")
        assert refused.status_code == 400, verb
        assert "your own" in (form_error(refused.text) or "")
    assert await account(ctx, ADMIN) == (UserStatus.ACTIVE, True)
    twice = await submit(admin, page, action=f"/admin/accounts/{world['member']}/approve")
    assert twice.status_code == 409
    assert form_error(twice.text) == f"{MEMBER} is active: it cannot be approved"


async def test_rejected_account_cannot_log_in(
    ctx: Context, admin: httpx.AsyncClient, world: dict[str, int], server: ServerThread
) -> None:
    await submit(admin, "/admin/accounts", action=f"/admin/accounts/{world['waiting']}/reject")
    assert await account(ctx, "waiting@example.org") == (UserStatus.REJECTED, False)
    async with httpx.AsyncClient(base_url=server.base_url) as other:
        response = await submit(
            other, "/login", {"email": "waiting@example.org", "password": "x" * 12}
        )
        assert response.status_code != 303


async def test_settings(ctx: Context, admin: httpx.AsyncClient) -> None:
    page = (await admin.get("/admin/settings")).text
    assert 'name="registration_mode" value="open" checked' in page
    data = {
        "name": "Assemblies of the Commons",
        "description": "Where the assemblies of the commons publish.",
        "rules": "Be kind\r\n\r\nNo ads\r\n",
        "registration_mode": "approval",
        "follow_approval": "on",
    }
    response = await submit(admin, "/admin/settings", data)
    assert response.status_code == 303
    async with ctx.sessions() as session:
        info = await instance.load(session, ctx.settings)
    assert info.name == "Assemblies of the Commons"
    assert info.rules_list == ["Be kind", "No ads"]
    assert info.registration_mode == "approval" and info.follow_approval is True
    shown = (await admin.get("/admin/settings")).text
    assert 'value="approval" checked' in shown and "Assemblies of the Commons" in shown

    refused = await submit(admin, "/admin/settings", {**data, "name": " ", "rules": "Changed"})
    assert refused.status_code == 400
    assert field_error(refused.text, "name") == "the name is 1 to 100 characters"
    assert "Changed" in refused.text  # what was typed is kept
    bad_mode = await submit(admin, "/admin/settings", {**data, "registration_mode": "party"})
    assert field_error(bad_mode.text, "registration_mode") == "choose open, approval or closed"
    async with ctx.sessions() as session:
        assert await instance.load(session, ctx.settings) == info


async def test_domain_blocks(ctx: Context, admin: httpx.AsyncClient) -> None:
    page = "/admin/domains"
    response = await submit(
        admin, page, {"domain": "https://Spam.Example/@someone", "reason": "spam"}
    )
    assert response.status_code == 303
    assert "spam.example is blocked." in (await admin.get(page)).text
    response = await submit(admin, page, {"domain": "bücher.example", "reason": ""})
    assert response.status_code == 303
    async with ctx.sessions() as session:
        domains = sorted((await session.scalars(select(DomainBlock.domain))).all())
    assert domains == ["blocked.example", "spam.example", "xn--bcher-kva.example"]

    refusals = {
        "": "enter a domain name such as social.example, without https:// or a path",
        "spam.example/path": "enter a domain name such as social.example, without https://"
        " or a path",
        "bad_domain.example": "'bad_domain.example' is not a valid domain name",
        "SPAM.example.": "spam.example is already blocked",
        ctx.urls.host: "that is this instance's own domain",
        ctx.urls.base: "that is this instance's own domain",
    }
    for domain, message in refusals.items():
        refused = await submit(admin, page, {"domain": domain, "reason": "typed"})
        assert refused.status_code in {400, 409}, domain
        assert field_error(refused.text, "domain") == message, domain
        assert 'value="typed"' in refused.text
    assert await count(ctx, DomainBlock) == 3

    async with ctx.sessions() as session:
        block = (
            await session.scalars(select(DomainBlock).where(DomainBlock.domain == "spam.example"))
        ).one()
    response = await submit(admin, page, action=f"/admin/domains/{block.id}/delete")
    assert response.status_code == 303
    assert await count(ctx, DomainBlock) == 2
    gone = await submit(admin, page, action=f"/admin/domains/{block.id}/delete")
    assert gone.status_code == 404


async def test_reports_list_and_resolve(
    ctx: Context, admin: httpx.AsyncClient, world: dict[str, int]
) -> None:
    page = (await admin.get("/admin/reports")).text
    assert "https://remote.example/actor" in page
    assert f'<a href="{ctx.urls.actor("liveoak")}">' in page
    assert "<blockquote>spam</blockquote>" in page
    response = await submit(
        admin, "/admin/reports", action=f"/admin/reports/{world['report']}/resolve"
    )
    assert response.status_code == 303
    async with ctx.sessions() as session:
        report = await session.get(Report, world["report"])
        assert report is not None and report.resolved_at is not None
    assert "resolved" in (await admin.get("/admin/reports")).text
    again = await submit(
        admin, "/admin/reports", action=f"/admin/reports/{world['report']}/resolve"
    )
    assert again.status_code == 409


async def test_forms_without_csrf_token_are_refused(ctx: Context, admin: httpx.AsyncClient) -> None:
    before = await snapshot(ctx)
    response = await admin.post("/admin/domains", data={"domain": "evil.example"})
    assert response.status_code == 403
    assert await snapshot(ctx) == before
