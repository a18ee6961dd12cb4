"""Hostile cases of the links mailed to an account (password reset, address confirmation)
and of the account's own forms: a link works once, for its own account and purpose, until it
expires, and not at all once tampered with; the reset form tells nobody whether an address
has an account (same answer, same work); requests are rate-limited per address and per
client; every new form wants its CSRF token; a reset signs every old session out.

The app runs in process (httpx.ASGITransport, its lifespan run) with mail through a real
SMTP server on loopback; each browser has its own client address.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from server import accounts, mail
from server.app import create_app
from server.config import Settings
from server.context import Context
from server.models import AccountToken, MailMessage, RequestMark, User, WebSession
from tests.conftest import make_settings
from tests.helpers import count
from tests.helpers_web import PASSWORD, csrf_token, field_error, log_in, submit
from tests.support.smtp import MailServer, mail_server, with_mail

ALICE = "alice@example.org"
BOB = "bob@example.org"
NEW_PASSWORD = "a brand new passphrase for alice"

Browser = Callable[..., httpx.AsyncClient]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailServer]:
    yield from mail_server(tmp_path / "smtp")


@pytest.fixture
def settings(database_url: str, port: int, smtp: MailServer) -> Settings:
    return with_mail(make_settings(database_url, f"http://127.0.0.1:{port}"), smtp)


@pytest.fixture
async def browser(ctx: Context) -> AsyncIterator[Browser]:
    """Browsers on the app in process, each from its own client address by default."""
    app = create_app(ctx.settings, ctx=ctx)
    addresses = iter(f"198.51.100.{n}" for n in range(1, 250))
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))

        def new(address: str | None = None) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(address or next(addresses), 4321))
            client = httpx.AsyncClient(transport=transport, base_url=ctx.settings.base_url)
            stack.push_async_callback(client.aclose)
            return client

        yield new


async def user(ctx: Context, email: str) -> User:
    async with ctx.sessions() as session, session.begin():
        return await accounts.create_user(
            session, email=email, password=PASSWORD, confirmed_at=ctx.clock()
        )


async def link_token(
    ctx: Context, email: str, purpose: str, *, ago: timedelta = timedelta()
) -> str:
    """A link's token as the worker mints it (``ago``: minted that long ago)."""
    async with ctx.sessions() as session, session.begin():
        found = await accounts.find_by_email(session, email)
        assert found is not None
        address = (
            found.pending_email if purpose == accounts.CONFIRM and found.pending_email else email
        )
        return await accounts.mint_link_token(
            session, user=found, purpose=purpose, email=address, now=ctx.clock() - ago
        )


async def password_hash(ctx: Context, email: str) -> str:
    async with ctx.sessions() as session:
        found = await accounts.find_by_email(session, email)
        assert found is not None
        return found.password_hash


async def reset(client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD) -> int:
    """POST a new password to the reset page of ``token`` (with this browser's CSRF token,
    from a page that always has a form); the POST's status."""
    await client.get(f"/password/reset/{token}")
    page = await client.get("/password/forgot")
    body = {"csrf_token": csrf_token(page.text), "password": password}
    return (await client.post(f"/password/reset/{token}", data=body)).status_code


async def test_a_reset_link_works_once(ctx: Context, browser: Browser) -> None:
    await user(ctx, ALICE)
    token = await link_token(ctx, ALICE, accounts.RESET)
    assert await reset(browser(), token) == 303
    changed = await password_hash(ctx, ALICE)
    assert await reset(browser(), token, "yet another long passphrase") == 400
    assert await password_hash(ctx, ALICE) == changed
    assert (await browser().get(f"/password/reset/{token}")).status_code == 400


async def test_an_expired_link_is_refused(ctx: Context, browser: Browser) -> None:
    await user(ctx, ALICE)
    before = await password_hash(ctx, ALICE)
    lifetime = accounts.LIFETIMES[accounts.RESET]
    token = await link_token(ctx, ALICE, accounts.RESET, ago=lifetime + timedelta(seconds=1))
    assert (await browser().get(f"/password/reset/{token}")).status_code == 400
    assert await reset(browser(), token) == 400
    assert await password_hash(ctx, ALICE) == before
    # Within its hour it works.
    fresh = await link_token(ctx, ALICE, accounts.RESET, ago=lifetime - timedelta(minutes=1))
    assert await reset(browser(), fresh) == 303


async def test_a_newer_link_replaces_the_older(ctx: Context, browser: Browser) -> None:
    await user(ctx, ALICE)
    older = await link_token(ctx, ALICE, accounts.RESET)
    newer = await link_token(ctx, ALICE, accounts.RESET)
    assert await reset(browser(), older) == 400
    assert await reset(browser(), newer) == 303


async def test_a_link_is_its_own_accounts_and_purposes(ctx: Context, browser: Browser) -> None:
    await user(ctx, ALICE)
    await user(ctx, BOB)
    alices = await link_token(ctx, ALICE, accounts.RESET)
    bobs = await link_token(ctx, BOB, accounts.RESET)
    before = await password_hash(ctx, ALICE), await password_hash(ctx, BOB)
    # Alice's row with Bob's secret, Bob's row with Alice's.
    alice_id, alice_secret = alices.split(".")
    bob_id, bob_secret = bobs.split(".")
    for mixed in (f"{alice_id}.{bob_secret}", f"{bob_id}.{alice_secret}"):
        assert await reset(browser(), mixed) == 400
    # A confirmation link is no reset link, nor the reverse.
    async with ctx.sessions() as session, session.begin():
        bob = await accounts.find_by_email(session, BOB)
        assert bob is not None
        bob.pending_email = "bob@new.example"
    confirmation = await link_token(ctx, BOB, accounts.CONFIRM)
    assert await reset(browser(), confirmation) == 400
    page = await browser().get(f"/account/confirm/{bobs}")
    assert page.status_code == 400
    assert (await password_hash(ctx, ALICE), await password_hash(ctx, BOB)) == before
    # A reset link sent before the account's address changed does not work after.
    async with ctx.sessions() as session, session.begin():
        alice = await accounts.find_by_email(session, ALICE)
        assert alice is not None
        alice.email = "alice@elsewhere.example"
    assert await reset(browser(), alices) == 400
    assert await reset(browser(), bobs) == 303  # and the right one still works


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "last-character": lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    "first-of-secret": lambda t: t.replace(".", ".x", 1)[:-1],
    "other-id": lambda t: f"{int(t.split('.')[0]) + 1}.{t.split('.')[1]}",
    "no-secret": lambda t: t.split(".")[0] + ".",
    "no-dot": lambda t: t.replace(".", ""),
    "secret-only": lambda t: t.split(".")[1],
    "sign-in-id": lambda t: "-" + t,
    "huge-id": lambda t: "9" * 30 + "." + t.split(".")[1],
    "overlong": lambda t: t + "A" * 200,
    "hash-as-token": lambda t: t.split(".")[0] + "." + hashlib.sha256(b"x").hexdigest(),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
async def test_a_tampered_link_is_refused(ctx: Context, browser: Browser, tampering: str) -> None:
    await user(ctx, ALICE)
    token = await link_token(ctx, ALICE, accounts.RESET)
    before = await password_hash(ctx, ALICE)
    bad = TAMPERINGS[tampering](token)
    assert bad != token
    client = browser()
    assert (await client.get(f"/password/reset/{bad}")).status_code in {400, 404}
    page = await client.get("/password/forgot")
    body = {"csrf_token": csrf_token(page.text), "password": NEW_PASSWORD}
    assert (await client.post(f"/password/reset/{bad}", data=body)).status_code in {400, 404}
    assert await password_hash(ctx, ALICE) == before
    assert await reset(browser(), token) == 303  # the real one still works


async def test_only_a_hash_of_the_link_is_kept(
    ctx: Context, browser: Browser, smtp: MailServer
) -> None:
    await user(ctx, ALICE)
    await submit(browser(), "/password/forgot", {"email": ALICE})
    assert await mail.run_once(ctx) == 1
    token = smtp.received[0].link("/password/reset/").rsplit("/", 1)[1]
    secret = token.split(".")[1]
    async with ctx.sessions() as session:
        [row] = (await session.scalars(select(AccountToken))).all()
        [queued] = (await session.scalars(select(MailMessage))).all()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in row.secret_hash
    for value in (queued.kind, queued.recipient, repr(queued.params), queued.last_error or ""):
        assert secret not in value


async def test_the_reset_form_tells_nobody_whether_an_account_exists(
    ctx: Context, browser: Browser, smtp: MailServer
) -> None:
    await user(ctx, ALICE)
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async def ask(email: str) -> tuple[int, str, list[str]]:
        client = browser()
        page = await client.get("/password/forgot")
        statements.clear()
        response = await client.post(
            "/password/forgot", data={"csrf_token": csrf_token(page.text), "email": email}
        )
        main = response.text.split("<main", 1)[1].split("</main>", 1)[0]
        return response.status_code, main.replace(email, "ADDRESS"), list(statements)

    await ask("warm-up@example.org")  # first-use costs (caches, prepared statements)
    event.listen(ctx.engine.sync_engine, "before_cursor_execute", note)
    try:
        known = await ask(ALICE)
        unknown = await ask("nobody@example.org")
    finally:
        event.remove(ctx.engine.sync_engine, "before_cursor_execute", note)
    # The same answer, and the same work (the same statements, in the same order): the
    # address is not even looked up in the request.
    assert known[0] == unknown[0] == 200
    assert known[1] == unknown[1]
    assert known[2] == unknown[2] and known[2]
    assert not any("FROM users" in s for s in known[2])

    # The worker mails the account's address only; the other request leaves no trace.
    assert await mail.run_once(ctx) == 1
    assert [r.to for r in smtp.received] == [ALICE]
    assert await count(ctx, MailMessage) == 1


async def test_reset_requests_are_limited_per_address_and_per_client(
    ctx: Context, browser: Browser
) -> None:
    await user(ctx, ALICE)

    async def ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
        return await submit(client, "/password/forgot", {"email": email})

    # Per address, whoever asks.
    for _ in range(accounts.MAX_RESETS_PER_ADDRESS):
        assert (await ask(browser(), ALICE)).status_code == 200
    limited = await ask(browser(), ALICE)
    assert limited.status_code == 429
    assert field_error(limited.text, "email") == accounts.TOO_MANY_REQUESTS
    assert (await ask(browser(), BOB)).status_code == 200  # another address is not

    # Per client, whatever the address.
    one = browser("203.0.113.9")
    for n in range(accounts.MAX_RESETS_PER_CLIENT):
        assert (await ask(one, f"someone{n}@example.org")).status_code == 200
    assert (await ask(one, "someone-else@example.org")).status_code == 429
    assert (await ask(browser("203.0.113.10"), "someone-else@example.org")).status_code == 200

    # What is counted: keyed hashes, never an address.
    async with ctx.sessions() as session:
        keys = (await session.scalars(select(RequestMark.key))).all()
    assert keys and not any("@" in k or "203.0.113" in k for k in keys)


async def test_a_session_from_before_a_reset_is_refused(ctx: Context, browser: Browser) -> None:
    await user(ctx, ALICE)
    before = browser()
    await log_in(before, ALICE)
    assert (await before.get("/account")).status_code == 200
    stolen = dict(before.cookies)
    assert await reset(browser(), await link_token(ctx, ALICE, accounts.RESET)) == 303
    assert await count(ctx, WebSession) == 0
    replay = browser()
    replay.cookies.update(stolen)
    response = await replay.get("/account")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


async def test_every_new_form_wants_its_csrf_token(ctx: Context, browser: Browser) -> None:
    await user(ctx, ALICE)
    await user(ctx, BOB)
    client = browser()
    await log_in(client, ALICE)
    reset_token = await link_token(ctx, BOB, accounts.RESET)
    async with ctx.sessions() as session, session.begin():
        bob = await accounts.find_by_email(session, BOB)
        assert bob is not None
        bob.pending_email = "bob@new.example"
    confirm_token = await link_token(ctx, BOB, accounts.CONFIRM)
    forms = {
        "/account/password": {"current_password": PASSWORD, "password": NEW_PASSWORD},
        "/account/email": {"email": "a@new.example", "email_current_password": PASSWORD},
        "/account/email/confirm": {},
        "/account/sessions": {},
        "/account/delete": {"current_password": PASSWORD},
        "/password/forgot": {"email": ALICE},
        f"/password/reset/{reset_token}": {"password": NEW_PASSWORD},
        f"/account/confirm/{confirm_token}": {},
    }
    for path, data in forms.items():
        missing = await client.post(path, data=data)
        forged = await client.post(path, data={**data, "csrf_token": "0" * 64})
        assert (missing.status_code, forged.status_code) == (403, 403), path
    # Nothing happened.
    assert await count(ctx, MailMessage) == 0
    assert await count(ctx, User) == 2
    async with ctx.sessions() as session:
        bob = await accounts.find_by_email(session, BOB)
        assert bob is not None and bob.pending_email == "bob@new.example"
    assert (await client.get("/account")).status_code == 200


async def test_current_password_guesses_are_limited(ctx: Context, browser: Browser) -> None:
    """A borrowed session guesses the password no faster on the account page than at login."""
    await user(ctx, ALICE)
    client = browser()
    await log_in(client, ALICE)
    for _ in range(accounts.MAX_FAILURES_PER_PAIR):
        wrong = await submit(
            client,
            "/account",
            {"current_password": "guess", "password": NEW_PASSWORD},
            action="/account/password",
        )
        assert wrong.status_code == 400
    right = await submit(
        client,
        "/account",
        {"current_password": PASSWORD, "password": NEW_PASSWORD},
        action="/account/password",
    )
    assert right.status_code == 429
    assert field_error(right.text, "current_password") == accounts.LIMITED
