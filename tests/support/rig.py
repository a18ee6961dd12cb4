"""The test rig: a frozen clock, fixed assembly keys and ``eventually``.

A pytest plugin (tests/conftest.py names it in ``pytest_plugins``), so that every test gets:

- ``frozen_clock``: a clock that moves only when the test says so. It is what our code takes
  as a clock: ``Context.clock`` (``create_context(settings, clock=...)``; ``frozen_ctx`` is
  such a Context), ``SignatureAuth``'s clock, and, through ``monotonic``, the clocks of
  ``RateLimiter`` and ``NegativeCache``. A test that used to compute times from the wall
  clock gets the same times however slow the machine is.
- fixed assembly keys, always on: ``server.assemblies.create`` takes its key pairs from the
  fixed test keys (tests/support/keys.json) instead of generating an RSA-2048 key (~0.1 s)
  for each new assembly. Every test gets the keys in the same order (the pool is rewound
  before each test), so up to 16 assemblies in one test all have different keys.
  ``INTEROCC_TEST_FRESH_KEYS=1`` turns this off (a fresh key per assembly, as in production).
- ``eventually``: polls a check until it holds or a deadline passes. Our inbox answers 202
  before it processes an activity, so a test that looks at our database after a peer sent
  us something must wait for it rather than assert at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from server import assemblies
from server.config import Settings
from server.context import Context, create_context
from tests.support.keys import KeyPair, assembly_key_pairs

T = TypeVar("T")

FRESH_KEYS_ENV = "INTEROCC_TEST_FRESH_KEYS"


# -- the frozen clock ---------------------------------------------------------------------------


class FrozenClock:
    """A clock that stands still until ``advance`` moves it.

    ``now()`` (also the instance itself, called) gives an aware UTC datetime, as
    ``Context.clock`` must; ``monotonic()`` gives seconds, as ``RateLimiter``/``NegativeCache``
    take. Both move together.

    It starts at the real time (to the whole second) by default, not at a fixed date: the
    app under the ``server`` fixture keeps the real clock, and the times a test makes (a
    poll's end, a signature's Date) must still make sense to it. Pass ``start`` for tests
    with no server.
    """

    def __init__(self, start: datetime | None = None, *, monotonic_start: float = 1000.0) -> None:
        start = start if start is not None else datetime.now(UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError("a FrozenClock needs an aware datetime")
        self._now = start
        self._monotonic = monotonic_start

    def now(self) -> datetime:
        return self._now

    __call__ = now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move the clock forward (never back: monotonic clocks do not go back); the new now."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a clock only moves forward")
        self._now += step
        self._monotonic += step.total_seconds()
        return self._now


@pytest.fixture
def frozen_clock() -> FrozenClock:
    """A clock standing at the real time the test started, moved only by ``advance``."""
    return FrozenClock()


@pytest.fixture
async def frozen_ctx(settings: Settings, frozen_clock: FrozenClock) -> AsyncIterator[Context]:
    """Like ``ctx`` (same settings and database) but with ``frozen_clock`` as its clock.

    The app under the ``server`` fixture has a Context of its own, on the real clock: only
    what the test does through this one (publishing, running the worker) sees frozen time.
    """
    context = await create_context(settings, clock=frozen_clock)
    yield context
    await context.aclose()


# -- fixed assembly keys ------------------------------------------------------------------------


class KeyPool:
    """Hands out fixed key pairs in turn (a ``server.assemblies.KeyFactory``).

    Thread-safe: the app under test creates assemblies in the server's thread.
    """

    def __init__(self, pairs: Sequence[KeyPair]) -> None:
        if not pairs:
            raise ValueError("a key pool needs keys")
        self.pairs = tuple(pairs)
        self.handed_out = 0  # over the whole session: what the pool saved in key generation
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self) -> KeyPair:
        with self._lock:
            pair = self.pairs[self._next % len(self.pairs)]
            self._next += 1
            self.handed_out += 1
        return pair

    def rewind(self) -> None:
        """Start again from the first key, so each test sees the same keys in the same order."""
        with self._lock:
            self._next = 0


@pytest.fixture(scope="session", autouse=True)
def assembly_keys() -> Iterator[KeyPool | None]:
    """Every assembly created in this session gets a fixed test key (None when turned off)."""
    if os.environ.get(FRESH_KEYS_ENV, "") not in {"", "0"}:
        yield None
        return
    pool = KeyPool(assembly_key_pairs())
    previous = assemblies.use_key_factory(pool)
    try:
        yield pool
    finally:
        assemblies.use_key_factory(previous)


@pytest.fixture(autouse=True)
def _rewind_assembly_keys(assembly_keys: KeyPool | None) -> None:
    """Each test starts from the first fixed key, whichever tests ran before it."""
    if assembly_keys is not None:
        assembly_keys.rewind()


# -- eventually ---------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[T]],
    within: float = 10.0,
    *,
    interval: float = 0.02,
    what: str | None = None,
) -> T:
    """Await ``check`` until it returns something truthy; return that.

    Until then, a falsy result or an AssertionError from ``check`` means "not yet", so a
    check may be a predicate or a few plain asserts ending in ``return True`` (or in
    returning the row it checked). After ``within`` seconds (of real time, whatever clock
    the test froze) the last AssertionError is raised again, or one naming ``what``.
    Anything else ``check`` raises fails at once.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            result = await check()
        except AssertionError as failed:
            if time.monotonic() >= deadline:
                failed.add_note(f"(still failing after {within} s of polling)")
                raise
        else:
            if result:
                return result
            if time.monotonic() >= deadline:
                name = what or getattr(check, "__name__", repr(check))
                raise AssertionError(f"still not {name} after {within} s (last: {result!r})")
        await asyncio.sleep(interval)
