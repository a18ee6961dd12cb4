"""Mail through a real SMTP server on loopback (tests/support/smtp.py): queued in the same
transaction as what causes it, sent by the worker (never in a request) over STARTTLS or TLS
with AUTH, retried with backoff, parked with its error when it keeps failing, never holding
a secret; and an instance without mail settings working as before.

The worker is driven with ``mail.run_once``; the SMTP server records what it received.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server import accounts, assemblies, followers, instance, mail
from server.config import ConfigError, Settings, load_settings, parse_smtp_url
from server.context import Context
from server.models import (
    AccountToken,
    Delivery,
    DeliveryStatus,
    MailMessage,
    MailStatus,
    MemberRole,
    Membership,
    RemoteActor,
    User,
)
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly, count, post
from tests.helpers_web import PASSWORD, log_in, submit
from tests.support.servers import ServerThread
from tests.support.smtp import FROM, MailServer, mail_server, with_mail

ADMIN = "admin@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[MailServer]:
    yield from mail_server(tmp_path / "smtp")


@pytest.fixture
def settings(database_url: str, port: int, smtp: MailServer) -> Settings:
    return with_mail(make_settings(database_url, f"http://127.0.0.1:{port}"), smtp)


async def confirmed_user(ctx: Context, email: str, *, is_admin: bool = False) -> int:
    async with ctx.sessions() as session, session.begin():
        user = await accounts.create_user(
            session, email=email, password=PASSWORD, is_admin=is_admin, confirmed_at=ctx.clock()
        )
        return user.id


async def queued(ctx: Context) -> list[MailMessage]:
    async with ctx.sessions() as session:
        return list((await session.scalars(select(MailMessage).order_by(MailMessage.id))).all())


# -- settings -------------------------------------------------------------------------------


def test_smtp_urls() -> None:
    server = parse_smtp_url("smtp://us%40er:p%3Ass%20word@mail.example.org")
    assert (server.host, server.port, server.tls) == ("mail.example.org", 587, "starttls")
    assert (server.username, server.password) == ("us@er", "p:ss word")
    assert "p:ss" not in repr(server)
    assert parse_smtp_url("smtps://a:b@mail.example.org").port == 465
    assert parse_smtp_url("smtps://mail.example.org:2465").tls == "implicit"
    assert parse_smtp_url("smtp+plain://127.0.0.1:25").tls == "none"
    # A password in the clear is refused, but for a relay on this machine.
    assert parse_smtp_url("smtp+plain://u:p@localhost").username == "u"
    for bad in (
        "http://mail.example.org",
        "smtp://",
        "smtp://mail.example.org/path",
        "smtp://mail.example.org?starttls=no",
        "smtp://mail.example.org:99999",
        "smtp+plain://user:secret@mail.example.org",
    ):
        with pytest.raises(ConfigError) as refused:
            parse_smtp_url(bad)
        assert "INTEROCC_SMTP_URL" in str(refused.value)
        assert "secret" not in str(refused.value)


def test_mail_settings_go_together() -> None:
    base = {"INTEROCC_SECRET_KEY": SECRET}
    off = load_settings(base)
    assert not off.mail_enabled and off.smtp is None
    on = load_settings(
        {**base, "INTEROCC_SMTP_URL": "smtp://u:hunter2@mx.example", "INTEROCC_MAIL_FROM": FROM}
    )
    assert on.mail_enabled and on.smtp is not None and on.smtp.port == 587
    assert "hunter2" not in repr(on)
    for only in ({"INTEROCC_SMTP_URL": "smtp://mx.example"}, {"INTEROCC_MAIL_FROM": FROM}):
        with pytest.raises(ConfigError, match="go together"):
            load_settings({**base, **only})
    with pytest.raises(ConfigError, match="INTEROCC_MAIL_FROM"):
        load_settings({**base, "INTEROCC_SMTP_URL": "smtp://mx", "INTEROCC_MAIL_FROM": "nobody"})


def test_the_backoff_doubles_up_to_an_hour() -> None:
    delays = [mail.next_delay(n) for n in range(1, mail.MAX_ATTEMPTS + 1)]
    assert delays[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert max(delays) == mail.MOST_DELAY == delays[-1]
    assert timedelta(hours=4) < sum(delays, timedelta()) < timedelta(hours=8)


# -- sending --------------------------------------------------------------------------------


async def invite(ctx: Context, browser: httpx.AsyncClient, email: str) -> httpx.Response:
    await log_in(browser, ADMIN)
    return await submit(
        browser,
        "/manage/libertyplaza/facilitators",
        {"email": email, "role": "facilitator"},
    )


@pytest.fixture
async def plaza(ctx: Context) -> int:
    """An approved assembly whose admin is ADMIN (confirmed)."""
    admin = await confirmed_user(ctx, ADMIN)
    await approved_assembly(ctx, "libertyplaza")
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        session.add(Membership(assembly_id=assembly.id, user_id=admin, role=MemberRole.ADMIN))
    return admin


async def test_an_invitation_is_mailed_over_starttls_with_auth(
    ctx: Context, server: ServerThread, smtp: MailServer, plaza: int
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as browser:
        response = await invite(ctx, browser, BOB)
        # Not shown to the inviter: it goes by mail.
        assert response.status_code == 303
        page = await browser.get(response.headers["location"])
        assert f"An invitation is on its way to {BOB}" in page.text
        assert f"{server.base_url}/invitations/" not in page.text
    # Queued in the request, not sent there.
    [row] = await queued(ctx)
    assert (row.kind, row.recipient, row.status) == (mail.INVITATION, BOB, MailStatus.PENDING)
    assert smtp.received == []

    assert await mail.run_once(ctx) == 1
    [got] = smtp.received
    assert got.secure and got.authenticated_as == "interocc-mailer"
    assert got.recipients == [BOB] and got.to == BOB
    assert got.sender == "noreply@interocc.test"
    assert got.message["From"] == FROM
    assert got.message["Auto-Submitted"] == "auto-generated"
    assert "Liberty Plaza General Assembly" in got.subject
    link = got.link("/invitations/")
    assert link.startswith(server.base_url)

    # The row kept no secret, and says it was sent.
    [row] = await queued(ctx)
    assert (row.status, row.attempts, row.last_error) == (MailStatus.SENT, 1, None)
    token = link.rsplit("/", 1)[1]
    assert token not in repr(row.params) and token not in row.recipient

    # The mailed link is the invitation's: Bob signs up with his address and accepts it.
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as browser:
        assert (await browser.get(link)).status_code == 200
        await submit(browser, "/signup", {"email": BOB, "password": PASSWORD})
        accepted = await submit(browser, link, {})
        assert accepted.status_code == 303
    assert await count(ctx, Membership) == 2
    # Nothing more to send.
    assert await mail.run_once(ctx) == 1  # Bob's address confirmation, from the sign-up
    assert [r.subject for r in smtp.to(BOB)][1].startswith("Confirm your e-mail address")


async def test_implicit_tls(ctx: Context, tmp_path: Path, database_url: str, plaza: int) -> None:
    for smtps in mail_server(tmp_path / "smtps", tls="implicit"):
        ctx.settings = with_mail(ctx.settings, smtps)
        assert ctx.settings.smtp is not None and ctx.settings.smtp.tls == "implicit"
        async with ctx.sessions() as session, session.begin():
            user = await session.get(User, plaza)
            assert user is not None
            await mail.password_changed(session, ctx.settings, user=user, now=ctx.clock())
        assert await mail.run_once(ctx) == 1
        [got] = smtps.received
        assert got.secure and got.authenticated_as and got.to == ADMIN
        assert "password was changed" in got.subject


async def test_failures_are_retried_with_backoff_then_parked_never_lost(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    ctx.settings = dataclasses.replace(ctx.settings, smtp_url=smtp.url(password="wrong"))
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        await mail.password_reset(session, ctx.settings, email=ADMIN, now=now)

    assert await mail.run_once(ctx, now=now) == 0
    [row] = await queued(ctx)
    assert (row.status, row.attempts) == (MailStatus.PENDING, 1)
    assert row.last_error and row.last_error.startswith("535")  # authentication failed
    assert row.next_attempt_at == now + timedelta(minutes=1)
    # The link minted for it never left: it is gone.
    assert await count(ctx, AccountToken) == 0
    # Not due yet: nothing is tried.
    assert await mail.run_once(ctx, now=now + timedelta(seconds=30)) == 0
    assert (await queued(ctx))[0].attempts == 1

    for _ in range(mail.MAX_ATTEMPTS - 1):
        now = (await queued(ctx))[0].next_attempt_at
        await mail.run_once(ctx, now=now)
    [row] = await queued(ctx)
    assert (row.status, row.attempts) == (MailStatus.PARKED, mail.MAX_ATTEMPTS)
    assert row.last_error and "535" in row.last_error
    # Parked rows stay (the hourly housekeeping keeps them), until an admin retries them.
    await mail.housekeeping(ctx, now=now + timedelta(days=30))
    assert await count(ctx, MailMessage) == 1

    ctx.settings = with_mail(ctx.settings, smtp)
    async with ctx.sessions() as session, session.begin():
        assert await mail.retry_parked(session, now=now) == 1
    assert await mail.run_once(ctx, now=now) == 1
    [got] = smtp.received
    assert "/password/reset/" in got.text
    assert await count(ctx, AccountToken) == 1


async def test_a_refused_recipient_is_parked_at_once_and_others_go(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    smtp.handler.refuse["gone@example.org"] = "550 5.1.1 no such mailbox"
    async with ctx.sessions() as session, session.begin():
        for address in ("gone@example.org", ALICE):
            await mail.queue(
                session,
                kind=mail.EMAIL_CHANGED,
                recipient=address,
                now=ctx.clock(),
                params={"new_email": "new@example.org"},
            )
    assert await mail.run_once(ctx) == 1
    parked, sent = await queued(ctx)
    assert (parked.status, parked.attempts) == (MailStatus.PARKED, 1)
    assert parked.last_error and "550" in parked.last_error
    assert sent.status == MailStatus.SENT
    assert [r.to for r in smtp.received] == [ALICE]


async def test_a_server_that_says_later_is_tried_later(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    smtp.handler.data_answer = "451 4.3.0 try again later"
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        await mail.password_reset(session, ctx.settings, email=ADMIN, now=now)
    assert await mail.run_once(ctx, now=now) == 0
    [row] = await queued(ctx)
    assert (row.status, row.next_attempt_at) == (MailStatus.PENDING, now + timedelta(minutes=1))
    smtp.handler.data_answer = None
    assert await mail.run_once(ctx, now=row.next_attempt_at) == 1


async def test_no_server_and_no_trusted_certificate_are_failures_too(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    async with ctx.sessions() as session, session.begin():
        await mail.password_reset(session, ctx.settings, email=ADMIN, now=ctx.clock())
    # A certificate nobody vouches for: nothing is said, above all not the password.
    ctx.settings = dataclasses.replace(ctx.settings, smtp_ca_file=None)
    assert await mail.run_once(ctx) == 0
    [row] = await queued(ctx)
    assert row.status == MailStatus.PENDING and "CERTIFICATE_VERIFY_FAILED" in (
        row.last_error or ""
    )
    # Nobody listening.
    smtp.stop()
    ctx.settings = with_mail(ctx.settings, smtp)
    assert await mail.run_once(ctx, now=row.next_attempt_at) == 0
    [row] = await queued(ctx)
    assert (row.status, row.attempts) == (MailStatus.PENDING, 2)
    assert smtp.received == []


async def test_sent_rows_are_forgotten_after_a_week(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    now = ctx.clock()
    async with ctx.sessions() as session, session.begin():
        await mail.password_reset(session, ctx.settings, email=ADMIN, now=now)
    assert await mail.run_once(ctx, now=now) == 1
    await mail.housekeeping(ctx, now=now + mail.KEEP_SENT - timedelta(minutes=1))
    assert await count(ctx, MailMessage) == 1
    await mail.housekeeping(ctx, now=now + mail.KEEP_SENT + timedelta(minutes=1))
    assert await count(ctx, MailMessage) == 0
    assert await count(ctx, AccountToken) == 0  # its link expired long before


# -- what causes mail -----------------------------------------------------------------------


async def test_approval_and_rejection_are_mailed_to_confirmed_admins(
    ctx: Context, smtp: MailServer
) -> None:
    alice = await confirmed_user(ctx, ALICE)
    async with ctx.sessions() as session, session.begin():
        bob = await accounts.create_user(session, email=BOB, password=PASSWORD)  # unconfirmed
        await assemblies.create(session, handle="plaza", name="Plaza", requested_by_id=alice)
        await assemblies.create(session, handle="square", name="Square", requested_by_id=alice)
        await assemblies.create(session, handle="bobs", name="Bob's", requested_by_id=bob.id)
    async with ctx.sessions() as session, session.begin():
        await assemblies.approve(session, "plaza", now=ctx.clock())
        await assemblies.reject(session, "square", reason="Not an assembly.", now=ctx.clock())
        await assemblies.approve(session, "bobs", now=ctx.clock())
    assert await mail.run_once(ctx) == 2
    approved, rejected = sorted(smtp.received, key=lambda r: r.subject)
    assert approved.to == ALICE and "@plaza is approved" in approved.subject
    assert approved.link("/manage/plaza")
    assert rejected.to == ALICE and "@square was not approved" in rejected.subject
    assert "Not an assembly." in rejected.text
    assert smtp.to(BOB) == []  # an unconfirmed address may be someone else's


async def remote_actor(ctx: Context, n: int) -> RemoteActor:
    async with ctx.sessions() as session, session.begin():
        actor = RemoteActor(
            uri=f"https://one.example/users/u{n}",
            domain="one.example",
            preferred_username=f"u{n}",
            name=f"Person {n}",
            inbox_uri=f"https://one.example/users/u{n}/inbox",
            fetched_at=ctx.clock(),
        )
        session.add(actor)
    return actor


async def follow(ctx: Context, handle: str, n: int) -> None:
    actor = await remote_actor(ctx, n)
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        await followers.receive_follow(
            session,
            ctx,
            assembly=assembly,
            actor=actor,
            follow_uri=f"https://one.example/follows/{n}",
            now=ctx.clock(),
        )


async def test_a_flood_of_follow_requests_is_one_message(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        assembly.manually_approves_followers = True
    for n in range(5):
        await follow(ctx, "libertyplaza", n)
    assert await count(ctx, MailMessage) == 1
    assert await mail.run_once(ctx) == 1
    [got] = smtp.received
    assert got.to == ADMIN and "5 follow requests for @libertyplaza" in got.subject
    assert "Person 0 (@u0@one.example)" in got.text
    assert got.link("/manage/libertyplaza/followers")

    # The next one waits an hour after the last message, and counts what waits by then.
    now = ctx.clock()
    await follow(ctx, "libertyplaza", 5)
    await follow(ctx, "libertyplaza", 6)
    [_, waiting] = await queued(ctx)
    assert waiting.next_attempt_at >= now + mail.FOLLOW_NOTICE_EVERY - timedelta(seconds=5)
    assert await mail.run_once(ctx) == 0
    assert await mail.run_once(ctx, now=waiting.next_attempt_at) == 1
    assert "7 follow requests" in smtp.received[-1].subject


async def test_follow_requests_held_for_the_admins(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    await confirmed_user(ctx, "root@example.org", is_admin=True)
    async with ctx.sessions() as session, session.begin():
        info = await instance.load(session, ctx.settings)
        await instance.save(
            session,
            name=info.name,
            description="",
            rules="",
            registration_mode=info.registration_mode.value,
            follow_approval=True,
        )
    await follow(ctx, "libertyplaza", 1)
    assert await mail.run_once(ctx) == 1
    [got] = smtp.received
    assert got.to == "root@example.org" and "held for an administrator" in got.subject
    assert got.link("/admin/follows")


async def failed_deliveries(ctx: Context, activity_id: int, statuses: list[DeliveryStatus]) -> None:
    async with ctx.sessions() as session, session.begin():
        for n, status in enumerate(statuses):
            session.add(
                Delivery(
                    activity_id=activity_id,
                    inbox_uri=f"https://server{n}.example/inbox",
                    host=f"server{n}.example",
                    status=status,
                    attempts=3,
                    last_status=410 if status == DeliveryStatus.FAILED else None,
                    last_error="gone" if status == DeliveryStatus.FAILED else None,
                )
            )


async def test_one_summary_per_communique_once_its_deliveries_end(
    ctx: Context, smtp: MailServer, plaza: int
) -> None:
    published = await post(ctx, "libertyplaza", "General strike on Thursday: every assembly joins.")
    public_id = published.communique.public_id
    failed, pending, done = DeliveryStatus.FAILED, DeliveryStatus.PENDING, DeliveryStatus.DELIVERED
    await failed_deliveries(ctx, published.activity.id, [failed, failed, pending, done])
    # One still under way: not yet.
    assert await mail.run_once(ctx) == 0
    async with ctx.sessions() as session, session.begin():
        row = await session.scalar(select(Delivery).where(Delivery.status == pending))
        assert row is not None
        row.status = done
    assert await mail.run_once(ctx) == 1
    [got] = smtp.received
    assert got.to == ADMIN
    assert "did not reach 2 servers" in got.subject
    assert "reached 2 of the 4 servers" in got.text
    assert "server0.example: 410 (gone)" in got.text
    assert got.link(f"/manage/libertyplaza/communiques/{public_id}/delivery")
    # Once only.
    assert await mail.run_once(ctx) == 0
    assert await count(ctx, MailMessage) == 1


async def test_sign_up_mails_a_confirmation_link(
    ctx: Context, server: ServerThread, smtp: MailServer
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as browser:
        response = await submit(browser, "/signup", {"email": ALICE, "password": PASSWORD})
        assert response.status_code == 303
        page = await browser.get("/dashboard")
        assert f"A link to confirm your address is on its way to {ALICE}" in page.text
        assert await mail.run_once(ctx) == 1
        [got] = smtp.received
        link = got.link("/account/confirm/")
        opened = await browser.get(link)
        assert opened.status_code == 200 and opened.headers["referrer-policy"] == "no-referrer"
        confirmed = await submit(browser, link, {})
        assert confirmed.status_code == 303 and confirmed.headers["location"] == "/account"
    async with ctx.sessions() as session:
        user = await accounts.find_by_email(session, ALICE)
        assert user is not None and user.email_confirmed_at is not None


# -- without mail ---------------------------------------------------------------------------


@pytest.fixture
def no_mail(settings: Settings) -> Settings:
    return dataclasses.replace(settings, smtp_url="", mail_from="")


async def test_without_mail_settings_the_instance_works_as_before(
    ctx: Context, no_mail: Settings, plaza: int
) -> None:
    from server.app import create_app

    ctx.settings = no_mail
    await confirmed_user(ctx, "root@example.org", is_admin=True)
    app = create_app(no_mail, ctx=ctx)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=no_mail.base_url
        ) as browser,
    ):
        # The invitation link is shown, to be passed on by hand.
        response = await invite(ctx, browser, BOB)
        assert response.status_code == 200 and "/invitations/" in response.text
        # No reset by mail, and the login page says so.
        await submit(browser, "/dashboard", {}, action="/logout")
        login = await browser.get("/login")
        assert "sends no e-mail" in login.text and "/password/forgot" not in login.text
        forgot = await browser.get("/password/forgot")
        main = forgot.text.split("<main")[1].split("</main>")[0]
        assert "sends no e-mail" in forgot.text and "<form" not in main
        assert (await browser.post("/password/forgot", data={"email": ADMIN})).status_code in {
            403,
            404,
        }
        # The admin overview says mail is off.
        await log_in(browser, "root@example.org")
        overview = await browser.get("/admin")
        assert "Mail is off" in overview.text
    assert await count(ctx, MailMessage) == 0
    # An approval (whose hook cannot know) is queued, then dropped by the worker.
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(session, handle="later", name="Later", requested_by_id=plaza)
        await assemblies.approve(session, "later", now=ctx.clock())
    assert await count(ctx, MailMessage) == 1
    assert await mail.run_once(ctx) == 0
    assert await count(ctx, MailMessage) == 0


async def test_mail_is_written_in_the_addressees_language(ctx: Context, smtp: MailServer) -> None:
    """An account that chose Spanish gets its notices in Spanish; the others in English."""
    alice = await confirmed_user(ctx, ALICE)
    async with ctx.sessions() as session, session.begin():
        await accounts.set_language(session, alice, "es")
        await assemblies.create(session, handle="plaza", name="Plaza", requested_by_id=alice)
    async with ctx.sessions() as session, session.begin():
        await assemblies.approve(session, "plaza", now=ctx.clock())
    assert await mail.run_once(ctx) == 1
    (message,) = smtp.received
    assert message.to == ALICE
    english = "@plaza is approved"
    assert english not in message.subject and "@plaza" in message.subject
    assert message.link("/manage/plaza")
