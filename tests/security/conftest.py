"""The hostile cases run on both engines; their many payload variants, on SQLite alone.

Every test function here runs on SQLite and on PostgreSQL with its first two sets of
parameters. Its further parameter sets (another media type, another embedded address form, another
tampered field) exercise the same code path with a different payload: they run on SQLite
only, which keeps ``make test`` within its time on a 2-core machine. Tests that take no
database are not affected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.support import Attacker, attacker_server

ON_BOTH_ENGINES = 2  # parameter sets of each test function that also run on PostgreSQL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seen: dict[str, int] = {}
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if (
            callspec is None
            or callspec.params.get("backend") != "postgresql"
            or "tests/security/" not in item.nodeid
        ):
            kept.append(item)
            continue
        function = item.nodeid.split("[", 1)[0]
        seen[function] = seen.get(function, 0) + 1
        (kept if seen[function] <= ON_BOTH_ENGINES else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    """A loopback server under the attacker's control (tests/security/support.py)."""
    yield from attacker_server()
