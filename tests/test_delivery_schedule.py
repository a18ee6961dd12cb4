"""How a delivery attempt is judged and when the next one happens (pure functions, no I/O).

The rules, as a remote inbox operator would see them:

* 2xx is delivered; no answer, 408, 429 and 5xx are retried; any other status is final.
* Retries back off exponentially from one minute, doubling, capped at a day, with ±10 %
  jitter; the default 16 attempts spread over several days (more than 3, fewer than 10).
* A 429 or 503 may ask for a longer wait with Retry-After (seconds or an HTTP date); we
  honour it up to two days. Other statuses' Retry-After is ignored.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from server.activitypub.delivery import (
    MAX_RETRY_AFTER,
    Outcome,
    Schedule,
    classify,
    next_delay,
    retry_after,
    schedule,
)

NOW = datetime(2024, 3, 5, 12, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


def within_jitter(actual: timedelta, nominal: timedelta) -> bool:
    return nominal * 0.9 <= actual <= nominal * 1.1


# ---- classify ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status: int) -> None:
    assert classify(status) is Outcome.DELIVERED


@pytest.mark.parametrize("status", [None, 408, 429, 500, 502, 503, 504])
def test_no_answer_timeouts_rate_limits_and_5xx_are_retried(status: int | None) -> None:
    assert classify(status) is Outcome.RETRY


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 422])
def test_other_4xx_fail_for_good(status: int) -> None:
    assert classify(status) is Outcome.FAILED


@pytest.mark.parametrize("status", [300, 301, 302, 303, 307, 308])
def test_redirects_fail_because_a_signed_post_is_not_followed(status: int) -> None:
    assert classify(status) is Outcome.FAILED


# ---- next_delay ----------------------------------------------------------------------------


def test_first_retry_comes_after_about_a_minute() -> None:
    rng = random.Random(1)
    for _ in range(200):
        assert within_jitter(next_delay(1, rng), MINUTE)


@pytest.mark.parametrize("attempts", range(1, 12))
def test_delay_doubles_with_each_failed_attempt(attempts: int) -> None:
    nominal = MINUTE * 2 ** (attempts - 1)  # 1, 2, 4 … 1024 minutes
    rng = random.Random(attempts)
    for _ in range(50):
        assert within_jitter(next_delay(attempts, rng), nominal)


@pytest.mark.parametrize("attempts", [12, 13, 16, 50, 1000])
def test_delay_is_capped_at_a_day(attempts: int) -> None:
    rng = random.Random(attempts)
    for _ in range(50):
        assert within_jitter(next_delay(attempts, rng), DAY)


def test_jitter_spreads_delays_both_ways_and_is_reproducible_with_a_seed() -> None:
    delays = [next_delay(5, random.Random(seed)) for seed in range(100)]
    nominal = 16 * MINUTE
    assert any(d < nominal * 0.97 for d in delays)
    assert any(d > nominal * 1.03 for d in delays)
    assert len(set(delays)) > 90  # not a handful of fixed values
    again = [next_delay(5, random.Random(seed)) for seed in range(100)]
    assert delays == again


def test_delays_grow_monotonically_up_to_the_cap_even_with_jitter() -> None:
    # ±10 % jitter never makes attempt n+1 wait less than attempt n while doubling.
    rng = random.Random(7)
    delays = [next_delay(n, rng) for n in range(1, 12)]
    assert delays == sorted(delays)


@pytest.mark.parametrize("seed", range(20))
def test_sixteen_attempts_span_more_than_three_days_and_less_than_ten(seed: int) -> None:
    rng = random.Random(seed)
    now = NOW
    attempt_times = [now]
    attempts = 0
    while True:
        attempts += 1
        plan = schedule(status=503, attempts=attempts, max_attempts=16, now=now, rng=rng)
        if plan.outcome is Outcome.FAILED:
            break
        assert plan.outcome is Outcome.RETRY and plan.next_attempt_at is not None
        now = plan.next_attempt_at
        attempt_times.append(now)
    assert attempts == 16
    assert len(attempt_times) == 16
    span = attempt_times[-1] - attempt_times[0]
    assert timedelta(days=3) < span < timedelta(days=10)


# ---- schedule ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 204])
def test_delivered_has_no_next_attempt(status: int) -> None:
    assert schedule(status=status, attempts=1, max_attempts=16, now=NOW) == Schedule(
        Outcome.DELIVERED, None
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 302])
def test_final_failure_has_no_next_attempt_even_on_the_first_try(status: int) -> None:
    assert schedule(status=status, attempts=1, max_attempts=16, now=NOW) == Schedule(
        Outcome.FAILED, None
    )


def test_retry_is_scheduled_after_the_backoff() -> None:
    plan = schedule(status=None, attempts=3, max_attempts=16, now=NOW, rng=random.Random(0))
    assert plan.outcome is Outcome.RETRY
    assert plan.next_attempt_at is not None
    assert within_jitter(plan.next_attempt_at - NOW, 4 * MINUTE)


def test_last_allowed_attempt_fails_for_good() -> None:
    before = schedule(status=503, attempts=15, max_attempts=16, now=NOW, rng=random.Random(0))
    assert before.outcome is Outcome.RETRY
    assert schedule(status=503, attempts=16, max_attempts=16, now=NOW) == Schedule(
        Outcome.FAILED, None
    )
    assert schedule(status=None, attempts=17, max_attempts=16, now=NOW) == Schedule(
        Outcome.FAILED, None
    )
    assert schedule(status=500, attempts=1, max_attempts=1, now=NOW) == Schedule(
        Outcome.FAILED, None
    )


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_longer_than_the_backoff_is_honoured(status: int) -> None:
    plan = schedule(
        status=status,
        attempts=1,
        max_attempts=16,
        now=NOW,
        retry_after_header="3600",
        rng=random.Random(0),
    )
    assert plan == Schedule(Outcome.RETRY, NOW + timedelta(hours=1))


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_http_date_is_honoured(status: int) -> None:
    when = NOW + timedelta(hours=5)
    plan = schedule(
        status=status,
        attempts=2,
        max_attempts=16,
        now=NOW,
        retry_after_header=http_date(when),
        rng=random.Random(0),
    )
    assert plan == Schedule(Outcome.RETRY, when)


def test_retry_after_shorter_than_the_backoff_does_not_shorten_it() -> None:
    plan = schedule(
        status=429,
        attempts=10,  # about 512 minutes of backoff
        max_attempts=16,
        now=NOW,
        retry_after_header="60",
        rng=random.Random(0),
    )
    assert plan.next_attempt_at is not None
    assert within_jitter(plan.next_attempt_at - NOW, 512 * MINUTE)


@pytest.mark.parametrize(
    "header", ["999999", http_date(NOW + timedelta(days=30)), "9" * 40, "9" * 5000]
)
def test_retry_after_is_bounded_at_two_days(header: str) -> None:
    plan = schedule(
        status=503,
        attempts=1,
        max_attempts=16,
        now=NOW,
        retry_after_header=header,
        rng=random.Random(0),
    )
    assert MAX_RETRY_AFTER == timedelta(days=2)
    assert plan == Schedule(Outcome.RETRY, NOW + timedelta(days=2))


@pytest.mark.parametrize("status", [500, 502, 408, None])
def test_retry_after_is_ignored_for_other_statuses(status: int | None) -> None:
    plan = schedule(
        status=status,
        attempts=1,
        max_attempts=16,
        now=NOW,
        retry_after_header="3600",
        rng=random.Random(0),
    )
    assert plan.next_attempt_at is not None
    assert within_jitter(plan.next_attempt_at - NOW, MINUTE)


def test_unparseable_retry_after_falls_back_to_the_backoff() -> None:
    plan = schedule(
        status=503,
        attempts=1,
        max_attempts=16,
        now=NOW,
        retry_after_header="tomorrow-ish",
        rng=random.Random(0),
    )
    assert plan.next_attempt_at is not None
    assert within_jitter(plan.next_attempt_at - NOW, MINUTE)


# ---- retry_after ---------------------------------------------------------------------------


def test_retry_after_reads_seconds() -> None:
    assert retry_after("120", now=NOW) == timedelta(minutes=2)
    assert retry_after("  30 ", now=NOW) == timedelta(seconds=30)
    assert retry_after("0", now=NOW) == timedelta(0)
    assert retry_after("000120", now=NOW) == timedelta(minutes=2)


def test_retry_after_reads_an_http_date() -> None:
    assert retry_after(http_date(NOW + timedelta(minutes=90)), now=NOW) == timedelta(minutes=90)
    assert retry_after("Tue, 05 Mar 2024 13:00:00 GMT", now=NOW) == timedelta(hours=1)


def test_retry_after_in_the_past_means_now() -> None:
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "1e3",
        "0x10",
        "²",  # str.isdigit() says yes, int() says no
        "١٢",  # Arabic-Indic digits: not what HTTP means by delay-seconds
        "Wed, 21 Oct 2015 07:28:00",  # an HTTP date must say GMT
        "Mon, 32 Foo 2020 25:61:61 GMT",
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "\x00",
    ],
)
def test_retry_after_treats_garbage_as_absent(value: str | None) -> None:
    assert retry_after(value, now=NOW) is None
