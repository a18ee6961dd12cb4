"""A person's own account, in the browser (httpx against the loopback server, mail through
a real SMTP server on loopback): the account page, changing the password and the address,
signing out elsewhere, resetting a forgotten password by mail, exporting one's data and
deleting the account.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server import accounts, assemblies, mail, memberships
from server.config import Settings
from server.context import Context
from server.models import (
    Invitation,
    LoginFailure,
    MemberRole,
    Membership,
    User,
    WebSession,
)
from tests.conftest import make_settings
from tests.helpers import approved_assembly, count
from tests.helpers_web import PASSWORD, field_error, form_error, log_in, submit
from tests.support.servers import ServerThread
from tests.support.smtp import MailServer, mail_server, with_mail

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
BOB = "bob@example.org"
NEW_PASSWORD = "a brand new passphrase for alice"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailServer]:
    yield from mail_server(tmp_path / "smtp")


@pytest.fixture
def settings(database_url: str, port: int, smtp: MailServer) -> Settings:
    return with_mail(make_settings(database_url, f"http://127.0.0.1:{port}"), smtp)


@pytest.fixture
async def browsers(server: ServerThread) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Three browsers (cookie jars) on the server."""
    opened = [
        httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=20) for _ in range(3)
    ]
    yield opened
    for client in opened:
        await client.aclose()


async def user(ctx: Context, email: str, *, confirmed: bool = True, admin: bool = False) -> int:
    async with ctx.sessions() as session, session.begin():
        created = await accounts.create_user(
            session,
            email=email,
            password=PASSWORD,
            is_admin=admin,
            confirmed_at=ctx.clock() if confirmed else None,
        )
        return created.id


async def find(ctx: Context, email: str) -> User | None:
    async with ctx.sessions() as session:
        return await accounts.find_by_email(session, email)


async def test_the_account_page_is_linked_from_the_header_and_needs_a_login(
    ctx: Context, browsers: list[httpx.AsyncClient]
) -> None:
    [browser, *_] = browsers
    await user(ctx, ALICE)
    anonymous = await browser.get("/account")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    await log_in(browser, ALICE)
    page = await browser.get("/dashboard")
    assert 'href="/account"' in page.text
    account = await browser.get("/account")
    assert account.status_code == 200 and ALICE in account.text
    assert account.headers["cache-control"] == "no-store"
    assert "confirmed" in account.text


async def test_changing_the_password_needs_the_current_one_and_signs_out_elsewhere(
    ctx: Context, browsers: list[httpx.AsyncClient], smtp: MailServer
) -> None:
    here, elsewhere, _ = browsers
    await user(ctx, ALICE)
    await log_in(here, ALICE)
    await log_in(elsewhere, ALICE)

    wrong = await submit(
        here,
        "/account",
        {"current_password": "not my password", "password": NEW_PASSWORD},
        action="/account/password",
    )
    assert wrong.status_code == 400
    assert field_error(wrong.text, "current_password") == accounts.WRONG_CURRENT
    assert await count(ctx, LoginFailure) == 3  # counted like a failed login
    short = await submit(
        here,
        "/account",
        {"current_password": PASSWORD, "password": "short"},
        action="/account/password",
    )
    assert short.status_code == 400 and "at least 10" in (field_error(short.text, "password") or "")

    done = await submit(
        here,
        "/account",
        {"current_password": PASSWORD, "password": NEW_PASSWORD},
        action="/account/password",
    )
    assert done.status_code == 303
    assert "1 other browser signed out" in (await here.get("/account")).text
    # This browser stays in, the other is out.
    assert (await elsewhere.get("/account")).status_code == 303
    assert await count(ctx, WebSession) == 1
    # The account's address is told.
    assert await mail.run_once(ctx) == 1
    [notice] = smtp.received
    assert notice.to == ALICE and "password was changed" in notice.subject
    await log_in(elsewhere, ALICE, NEW_PASSWORD)


async def test_signing_out_every_other_browser(
    ctx: Context, browsers: list[httpx.AsyncClient]
) -> None:
    here, second, third = browsers
    await user(ctx, ALICE)
    for browser in browsers:
        await log_in(browser, ALICE)
    assert "2 other browsers are signed in" in (await here.get("/account")).text
    response = await submit(here, "/account", {}, action="/account/sessions")
    assert response.status_code == 303
    assert "2 other browsers are signed out" in (await here.get("/account")).text
    assert (await second.get("/account")).status_code == 303
    assert (await third.get("/dashboard")).status_code == 303
    assert (await here.get("/account")).status_code == 200


async def test_a_new_address_replaces_the_old_once_confirmed(
    ctx: Context, browsers: list[httpx.AsyncClient], smtp: MailServer
) -> None:
    [browser, other, _] = browsers
    await user(ctx, ALICE)
    await user(ctx, BOB)
    await log_in(browser, ALICE)

    taken = await submit(
        browser,
        "/account",
        {"email": BOB, "email_current_password": PASSWORD},
        action="/account/email",
    )
    assert taken.status_code == 409 and "already exists" in (field_error(taken.text, "email") or "")
    no_password = await submit(
        browser,
        "/account",
        {"email": "alice@new.example", "email_current_password": "wrong"},
        action="/account/email",
    )
    assert no_password.status_code == 400
    assert field_error(no_password.text, "email_current_password") == accounts.WRONG_CURRENT

    asked = await submit(
        browser,
        "/account",
        {"email": "Alice@New.Example", "email_current_password": PASSWORD},
        action="/account/email",
    )
    assert asked.status_code == 303
    page = await browser.get("/account")
    assert "alice@new.example" in page.text and "Your address stays alice@example.org" in page.text
    # Not changed yet: she still logs in with the old address.
    alice = await find(ctx, ALICE)
    assert alice is not None and alice.pending_email == "alice@new.example"

    assert await mail.run_once(ctx) == 1
    [confirm] = smtp.received
    assert confirm.to == "alice@new.example" and "new e-mail address" in confirm.subject
    link = confirm.link("/account/confirm/")
    # Opened in another browser (the person is not signed in there): one click confirms.
    opened = await other.get(link)
    assert opened.status_code == 200 and "alice@new.example" in opened.text
    confirmed = await submit(other, link, {})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/login"

    assert await find(ctx, ALICE) is None
    moved = await find(ctx, "alice@new.example")
    assert moved is not None and moved.email_confirmed_at is not None
    assert moved.pending_email is None
    # The old address is told.
    assert await mail.run_once(ctx) == 1
    told = smtp.to(ALICE)[-1]
    assert "address was changed" in told.subject and "alice@new.example" in told.text
    # The link is used up.
    assert (await other.get(link)).status_code == 400
    await log_in(other, "alice@new.example")


async def test_forgotten_password_by_mail(
    ctx: Context, browsers: list[httpx.AsyncClient], smtp: MailServer
) -> None:
    before, visitor, _ = browsers
    await user(ctx, ALICE, confirmed=False)
    await log_in(before, ALICE)

    login = await visitor.get("/login")
    assert 'href="/password/forgot"' in login.text
    asked = await submit(visitor, "/password/forgot", {"email": ALICE})
    assert asked.status_code == 200 and mail.__name__ and "is on its way" in asked.text
    assert smtp.received == []  # the request sends nothing itself

    assert await mail.run_once(ctx) == 1
    [message] = smtp.received
    assert message.to == ALICE and "Choose a new password" in message.subject
    link = message.link("/password/reset/")
    page = await visitor.get(link)
    assert page.status_code == 200 and ALICE in page.text
    assert page.headers["referrer-policy"] == "no-referrer"

    too_short = await submit(visitor, link, {"password": "short"})
    assert too_short.status_code == 400 and field_error(too_short.text, "password")
    done = await submit(visitor, link, {"password": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/login"

    # Every session of the account is over; the new password works, the old does not.
    assert (await before.get("/account")).status_code == 303
    assert await count(ctx, WebSession) == 0
    await log_in(visitor, ALICE, NEW_PASSWORD)
    alice = await find(ctx, ALICE)
    assert alice is not None and alice.email_confirmed_at is not None  # the link proved it


async def test_export_holds_ones_own_records_only(
    ctx: Context, browsers: list[httpx.AsyncClient]
) -> None:
    [browser, *_] = browsers
    alice = await user(ctx, ALICE)
    bob = await user(ctx, BOB)
    await approved_assembly(ctx, "libertyplaza")
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        session.add(Membership(assembly_id=assembly.id, user_id=alice, role=MemberRole.ADMIN))
        session.add(Membership(assembly_id=assembly.id, user_id=bob, role=MemberRole.ADMIN))
        me = await session.get(User, alice)
        assert me is not None
        await memberships.invite(
            session,
            assembly=assembly,
            email="carol@example.org",
            role="facilitator",
            invited_by=me,
            now=ctx.clock(),
        )
    await log_in(browser, ALICE)
    response = await browser.get("/account/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["cache-control"] == "no-store"
    data = json.loads(response.text)
    assert data["account"]["email"] == ALICE
    assert [m["assembly"] for m in data["memberships"]] == ["libertyplaza"]
    assert [i["email"] for i in data["invitations_sent"]] == ["carol@example.org"]
    assert len(data["sessions"]) == 1
    # Nobody else's: not the other admin, no password hash, no token.
    assert BOB not in response.text
    assert "argon2" not in response.text and "token" not in response.text


async def test_deleting_the_account(ctx: Context, browsers: list[httpx.AsyncClient]) -> None:
    [browser, *_] = browsers
    alice = await user(ctx, ALICE)
    bob = await user(ctx, BOB)
    await approved_assembly(ctx, "libertyplaza")
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        session.add(Membership(assembly_id=assembly.id, user_id=alice, role=MemberRole.ADMIN))
        bobs = Membership(assembly_id=assembly.id, user_id=bob, role=MemberRole.FACILITATOR)
        session.add(bobs)
        me = await session.get(User, alice)
        assert me is not None
        await memberships.invite(
            session,
            assembly=assembly,
            email="carol@example.org",
            role="facilitator",
            invited_by=me,
            now=ctx.clock(),
        )
    await log_in(browser, ALICE)

    # The only admin of an assembly: refused, and the page says why and what to do.
    page = await browser.get("/account/delete")
    assert page.status_code == 200
    assert "You are the only admin" in page.text
    assert 'href="/manage/libertyplaza/facilitators"' in page.text
    refused = await submit(
        browser, "/account/delete", {"current_password": PASSWORD}, action="/account/delete"
    )
    assert refused.status_code == 409 and "@libertyplaza" in (form_error(refused.text) or "")
    assert await find(ctx, ALICE) is not None

    # Bob is made admin: now it can go, with the right password only.
    async with ctx.sessions() as session, session.begin():
        row = await session.scalar(select(Membership).where(Membership.user_id == bob))
        assert row is not None
        row.role = MemberRole.ADMIN
    wrong = await submit(browser, "/account/delete", {"current_password": "nope"})
    assert wrong.status_code == 400
    assert field_error(wrong.text, "current_password") == accounts.WRONG_CURRENT
    assert await find(ctx, ALICE) is not None

    done = await submit(browser, "/account/delete", {"current_password": PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert await find(ctx, ALICE) is None
    assert await count(ctx, WebSession, WebSession.user_id == alice) == 0
    assert await count(ctx, Membership) == 1  # Bob's
    # What she did for the assembly stays its own, without her.
    async with ctx.sessions() as session:
        invitation = await session.scalar(select(Invitation))
        assert invitation is not None and invitation.invited_by_id is None
    assert (await browser.get("/account")).status_code == 303


async def test_the_last_instance_admin_stays(
    ctx: Context, browsers: list[httpx.AsyncClient]
) -> None:
    [browser, *_] = browsers
    await user(ctx, ALICE, admin=True)
    await log_in(browser, ALICE)
    refused = await submit(browser, "/account/delete", {"current_password": PASSWORD})
    assert refused.status_code == 409
    assert form_error(refused.text) == accounts.LAST_INSTANCE_ADMIN


async def test_unconfirmed_addresses_claim_no_invitation_from_the_dashboard(
    ctx: Context, browsers: list[httpx.AsyncClient]
) -> None:
    """Mail on: an address nobody confirmed may be someone else's; the invitation's link,
    mailed to the address, still works."""
    [browser, *_] = browsers
    await user(ctx, "admin@example.org")
    await approved_assembly(ctx, "libertyplaza")
    await user(ctx, BOB, confirmed=False)
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        admin = await accounts.find_by_email(session, "admin@example.org")
        assert admin is not None
        invited = await memberships.invite(
            session,
            assembly=assembly,
            email=BOB,
            role="facilitator",
            invited_by=admin,
            now=ctx.clock(),
        )
    await log_in(browser, BOB)
    dashboard = await browser.get("/dashboard")
    assert "libertyplaza" not in dashboard.text.split("<main", 1)[1]
    refused = await submit(
        browser,
        "/dashboard",
        {},
        action=f"/dashboard/invitations/{invited.invitation.id}/accept",
    )
    assert refused.status_code == 403
    assert await count(ctx, Membership) == 0
