"""Follow from your server, in Chromium: from an assembly's follow box to the visitor's own
Mastodon, where they confirm.

Our CSP says ``form-action 'self'``, and Chromium applies it to every hop of a form
submission, redirects included (w3c/webappsec-csp#8): a 303 to the visitor's server would be
dropped, with nothing on the screen. So the form's answer is a page that goes on by itself
(a meta refresh), and that is what this test drives: the browser must end on the visitor's
server, and the page in between must pass the audit (axe, CSP, no sideways scroll).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from server import assemblies
from server.context import create_context
from tests.browser.audit import Auditor, Visit
from tests.browser.conftest import Site, run_async
from tests.browser.test_pages import check, goto, new_context
from tests.test_remote_follow import FakeMastodon

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

HANDLE = "oaklandcommune"


async def _approved_assembly(site: Site) -> None:
    ctx = await create_context(site.settings)
    try:
        async with ctx.sessions() as session, session.begin():
            await assemblies.create(session, handle=HANDLE, name="Oakland Commune Assembly")
            await assemblies.approve(session, HANDLE, now=ctx.clock())
    finally:
        await ctx.aclose()


@pytest.fixture(scope="module")
def assembly(site: Site) -> str:
    run_async(_approved_assembly(site))
    return HANDLE


@pytest.fixture(scope="module")
def mastodon() -> Iterator[FakeMastodon]:
    server = FakeMastodon().start()
    yield server
    server.stop()


def press_follow(page: Page, acct: str) -> None:
    """On the assembly's page: type ``acct`` into the follow box and press Follow."""
    goto(f"/actors/{HANDLE}")(page)
    form = page.locator("form#remote-follow")
    form.get_by_label("Your fediverse handle").fill(acct)
    with page.expect_navigation():
        form.get_by_role("button", name="Follow").click()


def test_the_follow_box_leads_the_browser_to_the_visitors_server(
    browser: Browser, site: Site, assembly: str, mastodon: FakeMastodon
) -> None:
    with new_context(browser, site) as context:
        page = context.new_page()
        press_follow(page, mastodon.handle())
        page.wait_for_url(f"{mastodon.base_url}/authorize_interaction?**")
        actor = f"{site.base_url}/actors/{assembly}"
        assert parse_qs(urlsplit(page.url).query)["uri"] == [actor]
        expect(page.locator("h1")).to_have_text(f"Follow {actor}?")


def test_a_refusal_is_shown_beside_the_box(
    browser: Browser, site: Site, assembly: str, mastodon: FakeMastodon
) -> None:
    with new_context(browser, site) as context:
        page = context.new_page()
        responses: list[int] = []
        page.on(
            "response", lambda r: responses.append(r.status) if r.request.method == "POST" else None
        )
        press_follow(page, mastodon.handle("nobody"))
        assert responses == [502]
        error = page.locator("#e-remote-acct")
        expect(error).to_have_text(
            f"could not find @nobody@{mastodon.host}: remote server answered 404"
        )
        expect(page.get_by_label("Your fediverse handle")).to_have_value(mastodon.handle("nobody"))
        # The answer is scrolled to the box (its #remote-follow), on a phone too.
        assert urlsplit(page.url).fragment == "remote-follow"


def handoff(mastodon: FakeMastodon) -> Visit:
    """The page between the form and the visitor's server, held there: the fake Mastodon
    answers the browser "204 No Content", which leaves it where it is, so the audit sees the
    page itself."""

    def visit(page: Page) -> None:
        def cut(route: Route) -> None:
            route.fulfill(status=204)

        page.route(f"{mastodon.base_url}/**", cut)
        try:
            press_follow(page, mastodon.handle())
            expect(page.locator("h1")).to_have_text("Taking you to your server…")
            expect(page.get_by_role("link", name=f"Continue to {mastodon.host}")).to_be_visible()
        finally:
            page.unroute(f"{mastodon.base_url}/**", cut)

    return visit


def test_the_page_between_passes_the_audit(
    auditor: Auditor, assembly: str, mastodon: FakeMastodon
) -> None:
    check(auditor, "remote-follow-handoff", handoff(mastodon), "anonymous", None)
