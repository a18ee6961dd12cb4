"""Every public page, feed and error is served with the security headers, over real HTTP.

The CSP is what lets our pages carry no inline script or style: it must allow scripts and
styles from our own origin only, forbid framing, and never fall back to 'unsafe-inline'.
"""

from __future__ import annotations

import httpx
import pytest

from server.context import Context
from tests.helpers import approved_assembly, post
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            assert words[0].lower() not in out, f"directive {words[0]} given twice"
            out[words[0].lower()] = words[1:]
    return out


def check_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} → {response.status_code}"
    headers = response.headers
    assert "content-security-policy" in headers, where
    csp = headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, where
    policy = directives(csp)
    assert policy["frame-ancestors"] == ["'none'"], where
    assert policy["script-src"] == ["'self'"], where
    assert policy["style-src"] == ["'self'"], where
    assert policy["object-src"] == ["'none'"], where
    assert policy["base-uri"] == ["'none'"], where
    assert policy["default-src"] == ["'self'"], where
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin", where
    assert headers["x-content-type-options"] == "nosniff", where
    assert headers["x-frame-options"] == "DENY", where


async def test_pages_feeds_and_errors_carry_the_security_headers(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "A communiqué.")
    paths = [
        "/",
        "/?q=ga",
        "/about",
        "/actors/ga",
        "/actors/ga?page=2",  # 404: past the last page
        "/actors/ga?page=x",  # 400
        published.url.removeprefix(server.base_url),
        "/actors/nobody",
        "/feed.atom",
        "/actors/ga/feed.atom",
        "/static/site.css",
        "/static/site.js",
    ]
    seen = set()
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as http:
        for path in paths:
            response = await http.get(path, headers={"Accept": BROWSER})
            check_headers(response)
            seen.add(response.status_code)
        check_headers(await http.get("/actors/ga", headers={"Accept": "application/activity+json"}))
    assert seen == {200, 400, 404}


async def test_static_assets_have_their_types(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as http:
        css = await http.get("/static/site.css")
        js = await http.get("/static/site.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    # Class vocabulary other templates rely on is defined.
    for selector in (
        ".page-header",
        ".card",
        ".stack",
        ".grid",
        ".muted",
        ".button",
        ".button.secondary",
        ".button.danger",
        "button.link",
        "form.inline",
        ".field",
        ".field.check",
        ".help",
        ".error",
        ".field.invalid",
        ".form-error",
        ".flash",
        "table.list",
        ".table-wrap",
        ".badge.pending",
        ".badge.approved",
        ".badge.rejected",
        ".badge.suspended",
        ".badge.accepted",
        ".actions",
        ".empty",
        ".tabs",
        ".preview",
        ".attachments",
        ".content-warning",
        ".acct",
        ".copy",
        ":focus-visible",
        "prefers-color-scheme: dark",
    ):
        assert selector in css.text, selector


async def test_csrf_cookie_only_on_pages(ctx: Context, server: ServerThread) -> None:
    """Pages carry forms and so set the CSRF cookie; federation and feed answers stay
    cookie-free (shared caches keep them, and servers have no use for cookies)."""
    await approved_assembly(ctx, "libertyplaza")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        page = await http.get("/actors/libertyplaza", headers={"Accept": BROWSER})
        actor = await http.get(
            "/actors/libertyplaza", headers={"Accept": "application/activity+json"}
        )
        feed = await http.get("/actors/libertyplaza/feed.atom")
        webfinger = await http.get(
            "/.well-known/webfinger", params={"resource": f"acct:libertyplaza@{ctx.urls.host}"}
        )
    assert "interocc_csrf=" in page.headers.get("set-cookie", "")
    assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=Lax" in page.headers["set-cookie"]
    for response in (actor, feed, webfinger):
        assert response.status_code == 200
        assert "set-cookie" not in response.headers, response.request.url
