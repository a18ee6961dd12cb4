"""Follow from your server (Mastodon's remote follow), as a visitor meets it.

The assembly page and a communiqué's permalink carry a small form: the visitor types their
fediverse handle, we ask their server (WebFinger) for its OStatus subscribe template and send
them there, ``{uri}`` filled with the assembly's actor id as Mastodon's own RemoteFollow fills
it. Their server then asks them to confirm. The visitor's server here is ``FakeMastodon``, a
loopback server answering WebFinger exactly as Mastodon 4 does (its WebfingerSerializer).

The answer to the form is a page that sends the browser on by itself (a meta refresh, and a
link): a 303 would be blocked by our own CSP's ``form-action 'self'``, which browsers apply
to a form's redirects too (tests/browser/test_remote_follow.py shows Chromium getting there).

Hostile servers and visitors: tests/security/test_remote_follow.py.
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from server import assemblies
from server.app import create_app
from server.config import Settings
from server.context import Context, create_context
from server.models import DomainBlock
from tests.helpers import approved_assembly, post
from tests.helpers_web import csrf_token, input_value
from tests.support.servers import ServerThread
from tests.test_web_public import BROWSER, assert_no_inline_code, set_communique

SUBSCRIBE = "http://ostatus.org/schema/1.0/subscribe"
HANDLE = "libertyplaza"
ACTION = f"/actors/{HANDLE}/remote-follow"


# --- the visitor's server -----------------------------------------------------------------


@dataclasses.dataclass
class FakeMastodon:
    """A Mastodon-like server on loopback: WebFinger for its accounts, and the page its
    subscribe template points at. ``template`` None leaves the subscribe link out (as
    GoToSocial does); ``webfinger_at`` redirects WebFinger to another server (a Mastodon
    whose handles live on another domain than its web interface)."""

    accounts: tuple[str, ...] = ("ana",)
    template: str | None = "{base}/authorize_interaction?uri={{uri}}"
    webfinger_at: str | None = None
    requests: list[str] = dataclasses.field(default_factory=list)
    _thread: ServerThread | None = None

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[
                Route("/.well-known/webfinger", self._webfinger),
                Route("/authorize_interaction", self._authorize),
            ]
        )

    def start(self) -> FakeMastodon:
        self._thread = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    @property
    def base_url(self) -> str:
        assert self._thread is not None
        return self._thread.base_url

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def handle(self, name: str = "ana") -> str:
        return f"@{name}@{self.host}"

    async def _webfinger(self, request: Request) -> Response:
        self.requests.append(str(request.url.path) + "?" + request.url.query)
        if self.webfinger_at is not None:
            return RedirectResponse(
                self.webfinger_at + "/.well-known/webfinger?" + request.url.query, 302
            )
        resource = request.query_params.get("resource", "")
        user, _, host = resource.removeprefix("acct:").partition("@")
        if not resource.startswith("acct:") or user not in self.accounts:
            return Response(status_code=404)
        # Mastodon 4's WebfingerSerializer, field for field; host is the one asked for
        # (a redirected WebFinger answers for the handle's domain).
        actor = f"{self.base_url}/users/{user}"
        links: list[dict[str, str]] = [
            {"rel": "http://webfinger.net/rel/profile-page", "type": "text/html", "href": actor},
            {"rel": "self", "type": "application/activity+json", "href": actor},
        ]
        if self.template is not None:
            links.append({"rel": SUBSCRIBE, "template": self.template.format(base=self.base_url)})
        jrd = {"subject": f"acct:{user}@{host}", "aliases": [actor], "links": links}
        return JSONResponse(jrd, media_type="application/jrd+json")

    async def _authorize(self, request: Request) -> Response:
        self.requests.append(str(request.url.path) + "?" + request.url.query)
        uri = html.escape(request.query_params.get("uri", ""))
        return HTMLResponse(f"<!doctype html><title>Follow</title><h1>Follow {uri}?</h1>")


@pytest.fixture
def mastodon() -> Iterator[FakeMastodon]:
    server = FakeMastodon().start()
    yield server
    server.stop()


# --- a visitor's browser on our app -------------------------------------------------------


@asynccontextmanager
async def visitor(
    settings: Settings,
    ctx: Context | None = None,
    *,
    client: tuple[str, int] = ("198.51.100.7", 50000),
    **changes: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on our app, in process, coming from ``client``; ``changes`` to the
    settings give the app a context of its own."""
    own = None
    if changes or ctx is None:
        settings = dataclasses.replace(settings, **changes)
        own = ctx = await create_context(settings)
    try:
        app = create_app(settings, ctx=ctx)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(
                transport=transport, base_url=settings.base_url, headers={"Accept": BROWSER}
            ) as browser:
                yield browser
    finally:
        if own is not None:
            await own.aclose()


async def follow_from(
    browser: httpx.AsyncClient, acct: str, *, page: str = f"/actors/{HANDLE}"
) -> httpx.Response:
    """Type ``acct`` into the follow box of ``page`` and press Follow."""
    got = await browser.get(page)
    assert got.status_code == 200, got.status_code
    form = re.search(
        r'<form method="post" action="([^"#]+)#remote-follow".*?</form>', got.text, re.S
    )
    assert form is not None, "no follow box on the page"
    data = {"csrf_token": csrf_token(form.group(0)), "acct": acct}
    hidden = re.search(r'name="communique" value="([^"]+)"', form.group(0))
    if hidden:
        data["communique"] = hidden.group(1)
    return await browser.post(form.group(1), data=data)


def destination(response: httpx.Response) -> str | None:
    """Where the answer sends the browser on (its meta refresh), or None."""
    found = re.search(r'<meta http-equiv="refresh" content="0; url=([^"]+)">', response.text)
    return html.unescape(found.group(1)) if found else None


def follow_error(page: str) -> str | None:
    found = re.search(r'<p class="error" id="e-remote-acct" role="alert">(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)).strip() if found else None


# --- the form -----------------------------------------------------------------------------


async def test_the_follow_box_is_on_the_assembly_page_and_the_permalink(
    ctx: Context, settings: Settings
) -> None:
    await approved_assembly(ctx, HANDLE)
    published = await post(ctx, HANDLE, "The first communiqué.")
    async with visitor(settings, ctx) as browser:
        for path in (f"/actors/{HANDLE}", published.url):
            page = (await browser.get(path)).text
            form = re.search(
                r'<form method="post" action="[^"]+#remote-follow".*?</form>', page, re.S
            )
            assert form is not None, path
            box = form.group(0)
            assert f'action="{ACTION}#remote-follow"' in box
            assert csrf_token(box)
            assert '<label for="remote-acct">Your fediverse handle</label>' in box
            assert 'name="acct"' in box and "required" in box
            assert '<button type="submit" class="button">Follow</button>' in box
            assert_no_inline_code(page)
        # The permalink's box says where it was sent from, to come back there.
        assert f'name="communique" value="{published.communique.public_id}"' in page


async def test_following_from_mastodon_sends_the_visitor_to_their_server(
    ctx: Context, settings: Settings, mastodon: FakeMastodon
) -> None:
    await approved_assembly(ctx, HANDLE)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, mastodon.handle())
    assert response.status_code == 200
    actor = ctx.urls.actor(HANDLE)
    # Mastodon's authorize_interaction, {uri} filled with our actor id, percent-encoded.
    expected = f"{mastodon.base_url}/authorize_interaction?uri={quote(actor, safe='')}"
    assert destination(response) == expected
    assert f'<a class="button" href="{html.escape(expected)}"' in response.text
    assert f"Continue to {mastodon.host}" in response.text
    assert response.headers["cache-control"] == "no-store"
    assert_no_inline_code(response.text)
    # We asked their server once, for the handle typed.
    resource = quote(f"acct:ana@{mastodon.host}", safe=":@")
    assert mastodon.requests == [f"/.well-known/webfinger?resource={resource}"]
    # What their server then reads is our actor id.
    async with httpx.AsyncClient(trust_env=False) as http:
        landed = await http.get(expected)
    assert parse_qs(urlsplit(str(landed.url)).query)["uri"] == [actor]
    assert f"Follow {actor}?" in landed.text


@pytest.mark.parametrize(
    "typed", ["ana@{host}", "@ana@{host}", "  @ana@{host}  ", "acct:ana@{host}", "@ana@{HOST}"]
)
async def test_a_handle_is_taken_as_people_type_it(
    ctx: Context, settings: Settings, mastodon: FakeMastodon, typed: str
) -> None:
    await approved_assembly(ctx, HANDLE)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(
            browser, typed.format(host=mastodon.host, HOST=mastodon.host.upper())
        )
    assert response.status_code == 200, follow_error(response.text)
    assert destination(response) is not None


async def test_from_a_permalink_a_refusal_comes_back_to_the_permalink(
    ctx: Context, settings: Settings, mastodon: FakeMastodon
) -> None:
    await approved_assembly(ctx, HANDLE)
    published = await post(ctx, HANDLE, "Read this, then follow us.")
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, mastodon.handle("nobody"), page=published.url)
        assert response.status_code == 502
        assert "Read this, then follow us." in response.text  # the permalink, again
        assert follow_error(response.text) == (
            f"could not find @nobody@{mastodon.host}: remote server answered 404"
        )
        # The handle typed is kept, and marked as what is wrong.
        assert input_value(response.text, "acct") == f"@nobody@{mastodon.host}"
        assert 'aria-invalid="true"' in response.text
        assert_no_inline_code(response.text)

        # A permalink deleted meanwhile: back to the assembly's page instead.
        await set_communique(ctx, published.communique.id, deleted_at=ctx.clock())
        data = {"csrf_token": csrf_token(response.text), "acct": "nonsense"}
        data["communique"] = published.communique.public_id
        again = await browser.post(ACTION, data=data)
        assert again.status_code == 400
        assert '<h1 id="assembly-name">' in again.text
        assert follow_error(again.text)


async def test_a_server_that_offers_no_remote_follow_is_named(
    ctx: Context, settings: Settings
) -> None:
    await approved_assembly(ctx, HANDLE)
    server = FakeMastodon(template=None).start()
    try:
        async with visitor(settings, ctx) as browser:
            response = await follow_from(browser, server.handle())
    finally:
        server.stop()
    assert response.status_code == 502
    assert follow_error(response.text) == (
        f"{server.host} does not offer following from other sites: search for "
        f"@{HANDLE}@{ctx.urls.host} in your app instead"
    )


async def test_webfinger_redirected_to_the_servers_own_domain_is_followed(
    ctx: Context, settings: Settings, mastodon: FakeMastodon
) -> None:
    """A Mastodon whose handles are @ana@example.org but whose web interface is
    social.example.org redirects WebFinger there; its template is on social.example.org."""
    await approved_assembly(ctx, HANDLE)
    handles_domain = FakeMastodon(webfinger_at=mastodon.base_url).start()
    try:
        async with visitor(settings, ctx) as browser:
            response = await follow_from(browser, handles_domain.handle())
    finally:
        handles_domain.stop()
    assert response.status_code == 200, follow_error(response.text)
    assert (destination(response) or "").startswith(mastodon.base_url + "/authorize_interaction")


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "type your handle as it appears on your profile, like @you@mastodon.social"),
        ("ana", "type your handle as it appears on your profile, like @you@mastodon.social"),
        ("https://mastodon.example/@ana", "type your handle as it appears on your profile"),
        ("ana@", "type your handle"),
        ("@ana@host@other", "type your handle"),
        ("ana@exa mple.org", "type your handle"),
        ("ana@" + "x" * 300 + ".org", "type your handle"),
        ("<script>@x.org", "type your handle"),
    ],
)
async def test_what_is_no_handle_is_refused_before_asking_anyone(
    ctx: Context, settings: Settings, mastodon: FakeMastodon, typed: str, message: str
) -> None:
    await approved_assembly(ctx, HANDLE)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, typed)
    assert response.status_code == 400
    assert (follow_error(response.text) or "").startswith(message)
    assert "<script>@" not in response.text
    assert mastodon.requests == []


async def test_a_handle_on_this_server_is_refused(ctx: Context, settings: Settings) -> None:
    await approved_assembly(ctx, HANDLE)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, f"@{HANDLE}@{ctx.urls.host}")
    assert response.status_code == 400
    assert follow_error(response.text) == (
        f"@{HANDLE}@{ctx.urls.host} is on this server: type the handle of your own fediverse"
        " account"
    )


async def test_a_blocked_domain_is_not_asked(
    ctx: Context, settings: Settings, mastodon: FakeMastodon
) -> None:
    await approved_assembly(ctx, HANDLE)
    async with ctx.sessions() as session, session.begin():
        session.add(DomainBlock(domain="localhost", reason="spam"))
    port = mastodon.host.rsplit(":", 1)[1]
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, f"@ana@sub.localhost:{port}")
    assert response.status_code == 400
    assert follow_error(response.text) == (
        f"sub.localhost:{port} is blocked on this server: it cannot follow its assemblies"
    )
    assert mastodon.requests == []


async def test_only_public_assemblies_can_be_followed(
    ctx: Context, settings: Settings, mastodon: FakeMastodon
) -> None:
    await approved_assembly(ctx, HANDLE)
    async with visitor(settings, ctx) as browser:
        token = csrf_token((await browser.get(f"/actors/{HANDLE}")).text)
        data = {"csrf_token": token, "acct": mastodon.handle()}
        assert (await browser.post("/actors/nobody/remote-follow", data=data)).status_code == 404
        async with ctx.sessions() as session, session.begin():
            await assemblies.suspend(session, HANDLE, now=ctx.clock())
        assert (await browser.post(ACTION, data=data)).status_code == 410
        assert (await browser.get(ACTION)).status_code == 405
    assert mastodon.requests == []
