"""In-memory rate limits and the negative cache of signing keys that could not be fetched.

Both live on the Context of one process (nothing at import time). With several web processes
each keeps its own counts, so the effective limit is the per-process limit times the number of
processes: these limits are there to stop a flood cheaply, not to meter fairly (see
docs/security.md). Both are bounded in the number of keys they remember, so hostile traffic
that invents a new key per request cannot grow them without end.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

Monotonic = Callable[[], float]

MAX_KEYS = 50_000


class RateLimiter:
    """Token buckets: ``per_minute`` requests a minute per key, in bursts of up to that many."""

    def __init__(
        self, per_minute: int, *, clock: Monotonic = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str) -> int | None:
        """Spend one token: None if allowed, else the whole seconds to wait before retrying."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # the least recently seen key
        if allowed:
            return None
        return max(1, math.ceil((1.0 - tokens) / self.rate))


class NegativeCache:
    """Keys remembered as failing for ``ttl`` seconds, with the reason they failed."""

    def __init__(
        self, ttl: float, *, clock: Monotonic = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_keys = max_keys
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()  # until, reason

    def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, reason = entry
        if self.clock() >= until:
            del self._entries[key]
            return None
        return reason

    def add(self, key: str, reason: str) -> None:
        if self.ttl <= 0:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self.clock() + self.ttl, reason)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)
