"""Rate limits on the inbox and a negative cache for keys that cannot be fetched.

Per verified actor and per host, a flood is answered 429 with Retry-After and nothing of it is
stored; a key that could not be fetched is not fetched again for a while, however many
requests name it; and the key lookups one host can cause are bounded too.
"""

from __future__ import annotations

import asyncio

import pytest

from server.activitypub.limits import NegativeCache, RateLimiter
from server.config import Settings
from server.context import Context
from server.models import Follower, InboxActivity
from tests.conftest import make_settings
from tests.helpers import approved_assembly, count
from tests.security.support import (
    Attacker,
    actor_document,
    follow,
    signed_post,
    snapshot,
)
from tests.support.peer import pooled_key
from tests.support.rig import FrozenClock
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PER_ACTOR, PER_HOST, KEY_FETCHES = 5, 8, 3


@pytest.fixture
def settings(database_url: str, port: int) -> Settings:
    return make_settings(
        database_url,
        f"http://127.0.0.1:{port}",
        inbox_per_actor=PER_ACTOR,
        inbox_per_host=PER_HOST,
        key_fetches_per_host=KEY_FETCHES,
    )


# ---- the limiters (pure) ---------------------------------------------------------------------


def test_bucket_allows_a_burst_then_refuses_with_the_wait(frozen_clock: FrozenClock) -> None:
    limiter = RateLimiter(60, clock=frozen_clock.monotonic)  # one a second, bursts of 60
    assert [limiter.take("a") for _ in range(60)] == [None] * 60
    assert limiter.take("a") == 1
    frozen_clock.advance(1.0)
    assert limiter.take("a") is None
    assert limiter.take("a") == 1


@pytest.mark.parametrize("per_minute", [1, 6, 30, 600])
def test_wait_is_how_long_one_token_takes(per_minute: int, frozen_clock: FrozenClock) -> None:
    limiter = RateLimiter(per_minute, clock=frozen_clock.monotonic)
    for _ in range(per_minute):
        assert limiter.take("k") is None
    wait = limiter.take("k")
    assert wait is not None and wait >= 1
    frozen_clock.advance(wait)
    assert limiter.take("k") is None


def test_keys_are_independent_and_bounded(frozen_clock: FrozenClock) -> None:
    limiter = RateLimiter(1, clock=frozen_clock.monotonic, max_keys=100)
    assert limiter.take("a") is None
    assert limiter.take("b") is None
    assert limiter.take("a") is not None
    for n in range(1000):
        limiter.take(f"flood-{n}")
    assert len(limiter._buckets) == 100


def test_negative_cache_remembers_for_its_ttl_and_is_bounded(frozen_clock: FrozenClock) -> None:
    cache = NegativeCache(300, clock=frozen_clock.monotonic, max_keys=10)
    cache.add("k", "unreachable")
    assert cache.get("k") == "unreachable"
    frozen_clock.advance(299)
    assert cache.get("k") == "unreachable"
    frozen_clock.advance(2)
    assert cache.get("k") is None
    for n in range(100):
        cache.add(f"k{n}", "x")
    assert len(cache._entries) == 10


def test_negative_cache_with_no_ttl_remembers_nothing() -> None:
    cache = NegativeCache(0)
    cache.add("k", "x")
    assert cache.get("k") is None


# ---- over HTTP -------------------------------------------------------------------------------


async def test_one_actor_over_its_limit_gets_429_and_nothing_is_stored(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "chatty")
    statuses = []
    for n in range(PER_ACTOR + 3):
        answer = await signed_post(
            ctx.urls.inbox("ga"),
            {**follow(keyed.id, ctx.urls.actor("ga"), n), "type": "Like"},
            key_id=keyed.key_id,
            private_key=keyed.private_key,
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1
            assert "slow down" in answer.json()["error"]
    assert statuses == [202] * PER_ACTOR + [429] * 3
    assert await count(ctx, InboxActivity) == PER_ACTOR


async def test_one_host_over_its_limit_gets_429(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    actors = [actor_document(attacker, f"sock{n}")[0] for n in range(3)]
    statuses = []
    for n in range(PER_HOST + 2):
        keyed = actors[n % 3]
        answer = await signed_post(
            ctx.urls.inbox("ga"),
            {**follow(keyed.id, ctx.urls.actor("ga"), n), "type": "Like"},
            key_id=keyed.key_id,
            private_key=keyed.private_key,
        )
        statuses.append(answer.status_code)
    assert statuses == [202] * PER_HOST + [429] * 2
    assert await count(ctx, InboxActivity) == PER_HOST


async def test_unreachable_key_is_fetched_once_for_twenty_requests(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    key = pooled_key()
    key_id = attacker.url("/users/ghost#main-key")  # the attacker answers 404
    before = await snapshot(ctx)
    answers = await asyncio.gather(
        *(
            signed_post(
                ctx.urls.inbox("ga"),
                follow(attacker.url("/users/ghost"), ctx.urls.actor("ga"), n),
                key_id=key_id,
                private_key=key,
            )
            for n in range(20)
        )
    )
    # Concurrent requests may each start a lookup before the first failure is remembered
    # (past the per-host lookup budget they get 429); sequential ones after it never do.
    assert {a.status_code for a in answers} <= {401, 429}
    first_wave = len(attacker.gets("/users/ghost"))
    assert 1 <= first_wave <= KEY_FETCHES
    for n in range(20, 40):
        answer = await signed_post(
            ctx.urls.inbox("ga"),
            follow(attacker.url("/users/ghost"), ctx.urls.actor("ga"), n),
            key_id=key_id,
            private_key=key,
        )
        assert answer.status_code == 401
    assert len(attacker.gets("/users/ghost")) == first_wave
    assert await snapshot(ctx) == before


async def test_key_lookups_per_host_are_bounded(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    key = pooled_key()
    statuses = []
    for n in range(KEY_FETCHES + 3):
        actor_id = attacker.url(f"/users/new{n}")  # a new key every time: the cache can't help
        answer = await signed_post(
            ctx.urls.inbox("ga"),
            follow(actor_id, ctx.urls.actor("ga")),
            key_id=f"{actor_id}#main-key",
            private_key=key,
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1
    assert statuses == [401] * KEY_FETCHES + [429] * 3
    assert len(attacker.gets()) == KEY_FETCHES


async def test_rate_limits_do_not_touch_a_well_behaved_follower(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    """A noisy actor is limited; another actor of another host is not."""
    await approved_assembly(ctx, "ga")
    noisy, _doc = actor_document(attacker, "noisy")
    for n in range(PER_ACTOR + 1):
        await signed_post(
            ctx.urls.inbox("ga"),
            {**follow(noisy.id, ctx.urls.actor("ga"), n), "type": "Like"},
            key_id=noisy.key_id,
            private_key=noisy.private_key,
        )
    other_host = Attacker().start()
    try:
        calm, _doc = actor_document(other_host, "calm")
        answer = await signed_post(
            ctx.urls.inbox("ga"),
            follow(calm.id, ctx.urls.actor("ga")),
            key_id=calm.key_id,
            private_key=calm.private_key,
        )
    finally:
        other_host.stop()
    assert answer.status_code == 202
    assert await count(ctx, Follower) == 1
