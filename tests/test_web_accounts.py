"""Acceptance: signing up, logging in and out in a browser, and the CSRF wall.

Our app runs under uvicorn on loopback and an httpx client plays the browser: it keeps the
cookies, takes the CSRF token from the page and posts the form. The https case runs the
app in process (httpx.ASGITransport), since cookies marked Secure only travel over https.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import httpx
import pytest
from sqlalchemy import select

from server import accounts, instance
from server.app import create_app
from server.config import Settings
from server.context import Context, create_context
from server.models import LoginFailure, User, UserStatus, WebSession
from tests.conftest import SECRET
from tests.helpers import count
from tests.helpers_web import (
    PASSWORD,
    create_user,
    csrf_token,
    field_error,
    form_error,
    input_value,
    log_in,
    submit,
)
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
THIRTY_DAYS = 30 * 24 * 3600


def limiter_key(kind: str, email: str = ALICE, client: str = "127.0.0.1") -> str:
    """The login limiter's key of a kind ("pair", "client" or "account")."""
    pair, by_client, account = accounts.limiter_keys(SECRET, email=email, client=client)
    return {"pair": pair, "client": by_client, "account": account}[kind]


@pytest.fixture
async def client(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=20) as c:
        yield c


async def set_registration(ctx: Context, mode: str) -> None:
    async with ctx.sessions() as session, session.begin():
        await instance.save(
            session,
            name="Test instance",
            description="",
            rules="",
            registration_mode=mode,
            follow_approval=False,
        )


def set_cookies(response: httpx.Response) -> dict[str, dict[str, str | bool]]:
    """Each Set-Cookie of a response, by cookie name: its value and attributes."""
    found: dict[str, dict[str, str | bool]] = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            found[name] = {"value": morsel.value, **{k: v for k, v in morsel.items() if v}}
    return found


async def users(ctx: Context) -> list[tuple[str, UserStatus]]:
    async with ctx.sessions() as session:
        rows = await session.execute(select(User.email, User.status).order_by(User.id))
        return [(email, status) for email, status in rows]


# ---- sign up -----------------------------------------------------------------------------


async def test_open_sign_up_signs_in_at_once(ctx: Context, client: httpx.AsyncClient) -> None:
    page = await client.get("/signup")
    assert page.status_code == 200
    assert 'autocomplete="new-password"' in page.text and 'autocomplete="email"' in page.text

    response = await submit(
        client, "/signup", {"email": " Alice@Example.org ", "password": PASSWORD}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    assert "interocc_session" in set_cookies(response)
    assert await users(ctx) == [(ALICE, UserStatus.ACTIVE)]

    dashboard = await client.get("/dashboard")
    assert dashboard.status_code == 200
    assert ALICE in dashboard.text and "Welcome" in dashboard.text  # the flash

    # The same address again, from another browser: refused beside the e-mail field.
    async with httpx.AsyncClient(base_url=client.base_url, trust_env=False) as other:
        again = await submit(other, "/signup", {"email": ALICE, "password": PASSWORD})
        assert again.status_code == 409
        assert "already exists" in (field_error(again.text, "email") or "")
        assert input_value(again.text, "email") == ALICE
        assert input_value(again.text, "password") is None  # never sent back

        short = await submit(other, "/signup", {"email": "bob@example.org", "password": "short"})
        assert short.status_code == 400
        assert "at least 10 characters" in (field_error(short.text, "password") or "")
        assert input_value(short.text, "email") == "bob@example.org"
    assert await users(ctx) == [(ALICE, UserStatus.ACTIVE)]


async def test_sign_up_keeps_where_the_person_was_going(
    ctx: Context, client: httpx.AsyncClient
) -> None:
    page = await client.get("/signup?next=/invitations/abc")
    assert input_value(page.text, "next") == "/invitations/abc"
    body = {"email": ALICE, "password": PASSWORD, "next": "/invitations/abc"}
    response = await client.post("/signup", data={"csrf_token": csrf_token(page.text), **body})
    assert response.headers["location"] == "/invitations/abc"


async def test_sign_up_waiting_for_approval(ctx: Context, client: httpx.AsyncClient) -> None:
    await set_registration(ctx, "approval")
    page = await client.get("/signup")
    assert "approves each new account" in page.text

    response = await submit(client, "/signup", {"email": ALICE, "password": PASSWORD})
    assert response.status_code == 200
    assert "must approve it" in response.text
    assert "interocc_session" not in set_cookies(response)
    assert await users(ctx) == [(ALICE, UserStatus.PENDING)]
    assert await count(ctx, WebSession) == 0

    # Not before an admin approves it.
    login = await submit(client, "/login", {"email": ALICE, "password": PASSWORD})
    assert login.status_code == 400
    assert "waiting for an administrator" in (form_error(login.text) or "")


async def test_sign_up_closed(ctx: Context, client: httpx.AsyncClient) -> None:
    await set_registration(ctx, "closed")
    page = await client.get("/signup")
    assert page.status_code == 403
    assert "Sign-ups are closed" in page.text
    assert 'name="email"' not in page.text

    token = csrf_token((await client.get("/login")).text)
    body = {"csrf_token": token, "email": ALICE, "password": PASSWORD}
    response = await client.post("/signup", data=body)
    assert response.status_code == 403
    assert "Sign-ups are closed" in response.text
    assert await users(ctx) == []
    # Nobody is invited to a page that refuses them.
    assert 'href="/signup' not in (await client.get("/login")).text


# ---- log in and out ----------------------------------------------------------------------


async def test_login_sets_a_session_cookie_and_a_new_csrf_cookie(
    ctx: Context, client: httpx.AsyncClient
) -> None:
    await create_user(ctx, ALICE)
    page = await client.get("/login?next=/assemblies/new")
    assert 'autocomplete="current-password"' in page.text
    old_csrf = client.cookies["interocc_csrf"]
    body = {"email": ALICE, "password": PASSWORD, "next": input_value(page.text, "next")}
    response = await client.post("/login", data={"csrf_token": csrf_token(page.text), **body})
    assert response.status_code == 303
    assert response.headers["location"] == "/assemblies/new"

    cookies = set_cookies(response)
    session = cookies["interocc_session"]
    assert session["httponly"] is True
    assert str(session["samesite"]).lower() == "lax"
    assert session["path"] == "/"
    assert int(str(session["max-age"])) == THIRTY_DAYS
    assert "secure" not in session  # plain http on loopback
    # The CSRF cookie is replaced: a token known before the login is worth nothing after.
    assert cookies["interocc_csrf"]["value"] != old_csrf
    stale = await client.post("/logout", data={"csrf_token": csrf_token(page.text)})
    assert stale.status_code == 403

    assert (await client.get("/dashboard")).status_code == 200
    async with ctx.sessions() as db:
        user = (await db.scalars(select(User))).one()
        assert user.last_login_at is not None


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
async def test_login_never_sends_the_browser_elsewhere(
    ctx: Context, client: httpx.AsyncClient, target: str
) -> None:
    await create_user(ctx, ALICE)
    body = {"email": ALICE, "password": PASSWORD, "next": target}
    response = await submit(client, "/login", body)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"


async def test_wrong_password_is_one_generic_error_and_is_remembered(
    ctx: Context, client: httpx.AsyncClient
) -> None:
    await create_user(ctx, ALICE)
    wrong = await submit(client, "/login", {"email": ALICE, "password": "not the password"})
    unknown = await submit(client, "/login", {"email": "nobody@example.org", "password": "x" * 12})
    for response in (wrong, unknown):
        assert response.status_code == 400
        assert form_error(response.text) == "wrong e-mail address or password"
        assert "interocc_session" not in set_cookies(response)
    assert input_value(wrong.text, "email") == ALICE
    # Committed although the login failed: one row per (e-mail, address) pair, one per
    # client address and one per account, for each failure.
    assert await count(ctx, LoginFailure) == 6
    assert await count(ctx, LoginFailure, LoginFailure.key == limiter_key("account")) == 1
    assert await count(ctx, LoginFailure, LoginFailure.key == limiter_key("client")) == 2
    assert await count(ctx, WebSession) == 0


async def test_five_failures_lock_this_client_out_of_the_account(
    ctx: Context, client: httpx.AsyncClient
) -> None:
    await create_user(ctx, ALICE)
    for _ in range(5):
        response = await submit(client, "/login", {"email": ALICE, "password": "guess guess!"})
        assert response.status_code == 400
    assert await count(ctx, LoginFailure, LoginFailure.key == limiter_key("pair")) == 5

    # The sixth attempt is refused even with the right password.
    response = await submit(client, "/login", {"email": ALICE, "password": PASSWORD})
    assert response.status_code == 429
    assert "too many failed attempts" in (form_error(response.text) or "")
    assert "interocc_session" not in set_cookies(response)
    assert await count(ctx, WebSession) == 0

    # Another address from the same browser is not locked out by them.
    await create_user(ctx, "bob@example.org")
    await log_in(client, "bob@example.org")


async def test_logout_ends_the_session(ctx: Context, client: httpx.AsyncClient) -> None:
    await create_user(ctx, ALICE)
    await log_in(client, ALICE)
    token = client.cookies["interocc_session"]
    assert await count(ctx, WebSession) == 1

    response = await submit(client, "/dashboard", action="/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    gone = set_cookies(response)["interocc_session"]
    assert gone["value"] == "" and gone["max-age"] == "0"
    assert await count(ctx, WebSession) == 0
    assert "logged out" in (await client.get("/")).text

    # The old cookie opens nothing any more.
    async with httpx.AsyncClient(
        base_url=client.base_url, trust_env=False, cookies={"interocc_session": token}
    ) as old:
        page = await old.get("/dashboard")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/dashboard"


async def test_signed_in_visitors_skip_the_login_and_signup_pages(
    ctx: Context, client: httpx.AsyncClient
) -> None:
    await create_user(ctx, ALICE)
    await log_in(client, ALICE)
    for page in ("/login", "/signup"):
        response = await client.get(page)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard"


# ---- CSRF --------------------------------------------------------------------------------


async def test_forms_without_our_csrf_token_are_refused(
    ctx: Context, client: httpx.AsyncClient
) -> None:
    await create_user(ctx, ALICE)
    await client.get("/signup")  # has a csrf cookie, sends no token
    body = {"email": "bob@example.org", "password": PASSWORD}
    response = await client.post("/signup", data=body)
    assert response.status_code == 403
    assert await users(ctx) == [(ALICE, UserStatus.ACTIVE)]

    # A token read by another visitor (an attacker's own) fits only the attacker's cookie.
    async with httpx.AsyncClient(base_url=client.base_url, trust_env=False) as attacker:
        token = csrf_token((await attacker.get("/signup")).text)
    response = await client.post("/signup", data={"csrf_token": token, **body})
    assert response.status_code == 403
    login = {"csrf_token": token, "email": ALICE, "password": PASSWORD}
    response = await client.post("/login", data=login)
    assert response.status_code == 403
    assert await users(ctx) == [(ALICE, UserStatus.ACTIVE)]
    assert await count(ctx, WebSession) == 0
    assert await count(ctx, LoginFailure) == 0

    # A form posted from another site's page.
    token = csrf_token((await client.get("/signup")).text)
    response = await client.post(
        "/signup",
        data={"csrf_token": token, **body},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert await users(ctx) == [(ALICE, UserStatus.ACTIVE)]


# ---- https -------------------------------------------------------------------------------


@pytest.fixture
async def https_client(settings: Settings) -> AsyncIterator[tuple[Context, httpx.AsyncClient]]:
    """Our app in process, as deployed behind a TLS proxy at https://assemblies.example."""
    secure = dataclasses.replace(settings, base_url="https://assemblies.example")
    context = await create_context(secure)
    app = create_app(secure, ctx=context)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4321))
            async with httpx.AsyncClient(
                transport=transport, base_url="https://assemblies.example"
            ) as c:
                yield context, c
    finally:
        await context.aclose()


async def test_cookies_are_secure_under_https(
    https_client: tuple[Context, httpx.AsyncClient],
) -> None:
    ctx, client = https_client
    await create_user(ctx, ALICE)
    page = await client.get("/login")
    assert "__Host-interocc_csrf" in client.cookies
    wrong = {"csrf_token": csrf_token(page.text), "email": ALICE, "password": "wrong password"}
    assert (await client.post("/login", data=wrong)).status_code == 400
    # The failure memory is keyed by (a keyed hash of) the client's address.
    by_client = LoginFailure.key == limiter_key("client", client="203.0.113.7")
    assert await count(ctx, LoginFailure, by_client) == 1

    right = {"csrf_token": csrf_token(page.text), "email": ALICE, "password": PASSWORD}
    response = await client.post("/login", data=right)
    assert response.status_code == 303, response.text
    cookies = set_cookies(response)
    for name in ("__Host-interocc_session", "__Host-interocc_csrf"):
        assert cookies[name]["secure"] is True
        assert cookies[name]["httponly"] is True
        assert str(cookies[name]["samesite"]).lower() == "lax"
        assert cookies[name]["path"] == "/"
    assert (await client.get("/dashboard")).status_code == 200
