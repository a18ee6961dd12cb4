"""No network in a test: a connection or a name lookup from the test's own thread fails it.

Only the test's thread is watched. The session's PostgreSQL pool (tests/conftest.py) makes
databases on background threads, at any moment; a patch that reached them would make an
unrelated test fail later, when it takes the database that could not be made. Everything
these tests check (pyld, our JSON-LD and signatures) runs in the test's thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    watched = threading.get_ident()

    def guard(original: Callable[..., Any]) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == watched:
                raise AssertionError(f"network access attempted: {args[:2]!r}")
            return original(*args, **kwargs)

        return refuse

    for owner, name in (
        (socket, "create_connection"),
        (socket, "getaddrinfo"),
        (socket.socket, "connect"),
        (socket.socket, "connect_ex"),
    ):
        monkeypatch.setattr(owner, name, guard(getattr(owner, name)))
