"""The login limiter: an attacker spends only its own budget, never the owner's.

Failed logins are counted per (e-mail, client address) pair and per client address; an
account failing from very many addresses at once only gets one guess per address. The
attacker and the owner are browsers on the loopback server, each behind the trusted proxy's
``X-Forwarded-For`` (as `interocc serve` trusts 127.0.0.1), so each has its own address.
Rows are checked too: the limiter keeps no address and no e-mail, only keyed hashes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from server import accounts
from server.app import create_app
from server.config import Settings
from server.context import Context
from server.models import LoginFailure, WebSession
from tests.conftest import SECRET
from tests.helpers import count
from tests.helpers_web import PASSWORD, create_user, form_error, submit
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
WRONG = "not alices password"
LIMITED = "too many failed attempts"

Login = Callable[[str, str, str], Awaitable[httpx.Response]]


@pytest.fixture
async def login(server: ServerThread) -> Login:
    async def attempt(address: str, email: str, password: str) -> httpx.Response:
        """One login through the form, from a fresh browser at ``address``."""
        headers = {"X-Forwarded-For": address}
        async with httpx.AsyncClient(
            base_url=server.base_url, trust_env=False, timeout=20, headers=headers
        ) as browser:
            return await submit(browser, "/login", {"email": email, "password": password})

    return attempt


def signed_in(response: httpx.Response) -> bool:
    return response.status_code == 303 and any(
        "interocc_session=" in h and "Max-Age=0" not in h
        for h in response.headers.get_list("set-cookie")
    )


def refused(response: httpx.Response) -> bool:
    return (
        response.status_code == 429
        and LIMITED in (form_error(response.text) or "")
        and "interocc_session" not in response.headers.get("set-cookie", "")
    )


async def fail(login: Login, address: str, times: int, email: str = ALICE) -> None:
    for _ in range(times):
        response = await login(address, email, WRONG)
        assert response.status_code == 400, response.text
        assert form_error(response.text) == "wrong e-mail address or password"


PAIRS = {
    "ipv4-attacker-ipv4-owner": ("198.51.100.66", "203.0.113.10"),
    "ipv6-attacker-ipv4-owner": ("2001:db8:bad::66", "203.0.113.10"),
    "ipv4-attacker-ipv6-owner": ("198.51.100.66", "2001:db8:600d::10"),
    "same-isp-other-ipv4": ("198.51.100.66", "198.51.100.67"),
}


@pytest.mark.parametrize("pair", list(PAIRS))
async def test_an_attacker_cannot_lock_the_owner_out(ctx: Context, login: Login, pair: str) -> None:
    attacker, owner = PAIRS[pair]
    await create_user(ctx, ALICE)
    await fail(login, attacker, accounts.MAX_FAILURES_PER_PAIR)

    # The attacker's address has spent its budget: refused even with the right password.
    response = await login(attacker, ALICE, PASSWORD)
    assert refused(response)
    assert await count(ctx, WebSession) == 0

    # The owner, elsewhere, signs in at once.
    response = await login(owner, ALICE, PASSWORD)
    assert signed_in(response), response.text
    assert await count(ctx, WebSession) == 1

    # And the attacker is still refused afterwards.
    assert refused(await login(attacker, ALICE, PASSWORD))
    assert await count(ctx, WebSession) == 1


async def test_guessing_many_accounts_from_one_address_is_stopped(
    ctx: Context, login: Login
) -> None:
    attacker, owner = "198.51.100.66", "203.0.113.10"
    await create_user(ctx, ALICE)
    for n in range(accounts.MAX_FAILURES_PER_CLIENT):
        await fail(login, attacker, 1, email=f"victim{n}@example.org")
    # Any account, even one never tried from there, even with its password.
    assert refused(await login(attacker, ALICE, PASSWORD))
    assert signed_in(await login(owner, ALICE, PASSWORD))


async def test_the_addresses_of_one_ipv6_network_share_a_budget(ctx: Context, login: Login) -> None:
    await create_user(ctx, ALICE)
    for n in range(1, accounts.MAX_FAILURES_PER_PAIR + 1):
        await fail(login, f"2001:db8:1:2::{n:x}", 1)  # a new address for each guess
    assert refused(await login("2001:db8:1:2:ffff::1", ALICE, PASSWORD))
    # The next /64 is someone else.
    assert signed_in(await login("2001:db8:1:3::1", ALICE, PASSWORD))


async def test_an_ipv4_mapped_address_is_the_ipv4_address(ctx: Context, login: Login) -> None:
    await create_user(ctx, ALICE)
    await fail(login, "198.51.100.66", accounts.MAX_FAILURES_PER_PAIR)
    assert refused(await login("::ffff:198.51.100.66", ALICE, PASSWORD))


async def seed_failures(ctx: Context, email: str, addresses: list[str], each: int) -> None:
    """Failures as the limiter records them, from many addresses, within the window."""
    async with ctx.sessions() as session, session.begin():
        for address in addresses:
            keys = accounts.limiter_keys(SECRET, email=email, client=address)
            for _ in range(each):
                session.add_all(LoginFailure(key=k, attempted_at=ctx.clock()) for k in keys)


async def test_a_distributed_attack_slows_guessing_but_the_owner_gets_in(
    ctx: Context, login: Login
) -> None:
    await create_user(ctx, ALICE)
    botnet = [f"198.51.100.{n}" for n in range(1, 26)]
    each = -(-accounts.ACCOUNT_STRAIN // len(botnet))  # enough to strain the account
    assert each < accounts.MAX_FAILURES_PER_PAIR  # no single address is over its own budget
    await seed_failures(ctx, ALICE, botnet, each)

    # Under strain an address that failed once is done for the window...
    assert refused(await login(botnet[0], ALICE, PASSWORD))
    # ...a fresh one gets one guess, then is done too...
    await fail(login, "192.0.2.200", 1)
    assert refused(await login("192.0.2.200", ALICE, PASSWORD))
    # ...and the owner, whose address has not failed, signs in.
    assert signed_in(await login("203.0.113.10", ALICE, PASSWORD))


async def test_a_refused_attempt_records_nothing(ctx: Context, login: Login) -> None:
    await create_user(ctx, ALICE)
    await fail(login, "198.51.100.66", accounts.MAX_FAILURES_PER_PAIR)
    rows = await count(ctx, LoginFailure)
    assert rows == 3 * accounts.MAX_FAILURES_PER_PAIR  # pair, client and account keys
    for _ in range(3):
        assert refused(await login("198.51.100.66", ALICE, WRONG))
    assert await count(ctx, LoginFailure) == rows


KEY_RE = re.compile(r"(pair|client|account):[0-9a-f]{64}\Z")


@pytest.mark.parametrize(
    "address", ["198.51.100.66", "2001:db8:bad:1::66", "::ffff:198.51.100.66", "unknown"]
)
async def test_limiter_rows_hold_no_address_and_no_email(
    ctx: Context, login: Login, address: str
) -> None:
    typed = "Alice.Secret@Example.org"
    response = await login(address, typed, WRONG)
    assert response.status_code == 400
    async with ctx.sessions() as session:
        keys = list((await session.scalars(select(LoginFailure.key))).all())
    assert len(keys) == 3
    assert sorted(k.split(":")[0] for k in keys) == ["account", "client", "pair"]
    network = accounts.client_network(address)
    for key in keys:
        assert KEY_RE.match(key), key
        for secret in (address, network, "198.51.100", "2001:db8", typed.lower(), "example.org"):
            assert secret not in key
    # Keyed: not the plain hash anyone could compute for every IPv4 address.
    for plain in (address, network):
        assert hashlib.sha256(plain.encode()).hexdigest() not in {k.split(":")[1] for k in keys}
    other_secret = accounts.limiter_keys("another-secret-" * 3, email=typed, client=address)
    assert set(other_secret).isdisjoint(keys)


async def test_failures_are_deleted_once_outside_the_window(ctx: Context) -> None:
    await create_user(ctx, ALICE)
    start = ctx.clock()

    async def attempt(at: timedelta, password: str = WRONG) -> accounts.LoginResult:
        async with ctx.sessions() as session, session.begin():
            return await accounts.authenticate(
                session,
                email=ALICE,
                password=password,
                client="198.51.100.66",
                secret=SECRET,
                now=start + at,
            )

    for minute in range(accounts.MAX_FAILURES_PER_PAIR):
        assert (await attempt(timedelta(minutes=minute))).error is not None
    assert (await attempt(timedelta(minutes=10), PASSWORD)).limited
    # Past the window the address may try again, and the old rows are gone with its failure.
    later = accounts.FAILURE_WINDOW + timedelta(minutes=5)
    result = await attempt(later)
    assert result.user is None and not result.limited
    async with ctx.sessions() as session:
        kept = (await session.scalars(select(LoginFailure.attempted_at))).all()
    assert [moment - start for moment in kept] == [later] * 3
    assert (await attempt(later + timedelta(seconds=1), PASSWORD)).user is not None


@pytest.mark.parametrize(
    ("client", "counted_as"),
    [
        ("198.51.100.66", "198.51.100.66"),
        (" 198.51.100.66 ", "198.51.100.66"),
        ("::ffff:198.51.100.66", "198.51.100.66"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("unknown", "unknown"),
    ],
)
def test_client_network(client: str, counted_as: str) -> None:
    assert accounts.client_network(client) == counted_as


async def test_the_unknown_account_hash_is_made_before_the_first_login(settings: Settings) -> None:
    """Made on the first login of an unknown e-mail, it would make that login slower than a
    wrong password for a real account: the web app makes it when it starts."""
    accounts._dummy_hash.cache_clear()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert accounts._dummy_hash.cache_info().currsize == 1
