"""The app's routes: federation first (they take most requests), and sharing no path with a
page, so that their order changes only the time it takes to match a request."""

from __future__ import annotations

import re

from starlette.routing import Match, Route

from server.app import create_app
from server.config import Settings
from server.federation import namespace, webfinger
from server.federation import routes as ap_routes
from tests.conftest import SECRET

FEDERATION = [*ap_routes.routes, *webfinger.routes, *namespace.routes]


def _routes() -> list[Route]:
    settings = Settings(
        base_url="http://127.0.0.1:1", database_url="sqlite+aiosqlite:///unused", secret_key=SECRET
    )
    return [r for r in create_app(settings).router.routes if isinstance(r, Route)]


def _sample(route: Route) -> str:
    return re.sub(r"\{[^}]+\}", "x1", route.path)


def _matches(route: Route, path: str) -> bool:
    for method in ("GET", "HEAD", "POST"):
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        if route.matches(scope)[0] is not Match.NONE:
            return True
    return False


def test_federation_routes_come_first() -> None:
    routes = _routes()
    assert routes[: len(FEDERATION)] == FEDERATION
    assert any(r.path == "/inbox" for r in routes[: len(ap_routes.routes)])


def test_no_page_shares_a_path_with_a_federation_route() -> None:
    routes = _routes()
    federation = {id(r) for r in FEDERATION}
    pages = [r for r in routes if id(r) not in federation]
    assert len(pages) > 20  # the pages are there to compare with
    clashes = [
        (f.path, p.path)
        for f in FEDERATION
        for p in pages
        if _matches(p, _sample(f)) or _matches(f, _sample(p))
    ]
    assert clashes == []
