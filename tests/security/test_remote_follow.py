"""Follow from your server, against hostile servers and forged forms.

The visitor's handle names a server we then ask (WebFinger), and whose answer names where we
send the visitor. Whoever runs that server chooses both, so:

* only an absolute http(s) URL without credentials is followed, on the very origin that gave
  the WebFinger answer (as Mastodon's, Pleroma's and Misskey's are): never javascript:,
  data:, a relative or protocol-relative URL, nor another site. Refusing another host keeps
  this server from being a redirector to any site an answer names; a server whose handles
  live on another domain redirects its WebFinger to its own, and that works (see
  tests/test_remote_follow.py);
* what the answer holds is shown escaped (the meta refresh, the link);
* an answer too large, too slow or malformed is a clear message beside the form, never a 500,
  and the whole look-up is bounded by the fetch timeout;
* a handle on a private address is refused before any connection where private addresses
  are (production);
* the form carries our CSRF token, and each client network may send it a few times a
  minute.

The hostile server is tests/security/support.py's ``Attacker``: it serves anything at
/.well-known/webfinger, and records every request.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from server.app import create_app
from server.config import Settings
from server.context import Context
from server.web.public import REMOTE_FOLLOWS_PER_MINUTE
from tests.helpers import approved_assembly
from tests.helpers_web import csrf_token
from tests.security.support import Attacker
from tests.test_remote_follow import (
    ACTION,
    HANDLE,
    SUBSCRIBE,
    destination,
    follow_error,
    follow_from,
    visitor,
)

pytestmark = pytest.mark.e2e

WEBFINGER = "/.well-known/webfinger"
JRD = "application/jrd+json"


def jrd(*links: Any) -> dict[str, Any]:
    return {"subject": "acct:ana@attacker.example", "links": list(links)}


def with_template(template: Any) -> dict[str, Any]:
    return jrd({"rel": SUBSCRIBE, "template": template})


def host_of(attacker: Attacker) -> str:
    return urlsplit(attacker.base_url).netloc


def refused(response: httpx.Response, status: int = 502) -> str:
    """The page came back with the reason beside the form, and sends the browser nowhere."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert destination(response) is None
    assert "http-equiv" not in response.text
    message = follow_error(response.text)
    assert message, "no error beside the follow box"
    return message


@pytest.mark.parametrize(
    "template",
    [
        "javascript:alert(document.cookie)//{uri}",
        "JavaScript:alert(1)?{uri}",
        " javascript:alert(1)?{uri}",
        "data:text/html,<script>alert(1)</script>{uri}",
        "vbscript:msgbox({uri})",
        "ftp://{host}/follow?uri={uri}",
        "//{host}/authorize_interaction?uri={uri}",
        "/authorize_interaction?uri={uri}",
        "https://evil.example/authorize_interaction?uri={uri}",
        "http://evil.example/authorize_interaction?uri={uri}",
        "http://127.0.0.2:{port}/authorize_interaction?uri={uri}",  # another host, same port
        "http://127.0.0.1:1/authorize_interaction?uri={uri}",  # the same host, another port
        "https://{host}/authorize_interaction?uri={uri}",  # another scheme than the answer's
        "http://ana:secret@{host}/authorize_interaction?uri={uri}",
        "http://{host}@evil.example/authorize_interaction?uri={uri}",
        "http://{host}\\@evil.example/?uri={uri}",
        "http://{host}/authorize\tinteraction?uri={uri}",
        "http://{host}/authorize_interaction",  # no {uri}
        "http://{host}/" + "a" * 2100 + "?uri={uri}",
    ],
)
async def test_a_template_we_will_not_send_a_visitor_to_is_refused(
    ctx: Context, settings: Settings, attacker: Attacker, template: str
) -> None:
    await approved_assembly(ctx, HANDLE)
    host = host_of(attacker)
    filled = template.replace("{host}", host).replace("{port}", host.rsplit(":", 1)[1])
    attacker.serve(WEBFINGER, with_template(filled), content_type=JRD)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, f"@ana@{host}")
    message = refused(response)
    if "{uri}" in template:
        assert message.startswith(f"{host} answered with an address we will not send you to")
    assert "javascript:" not in response.text.lower()
    assert "evil.example" not in response.text
    assert attacker.gets(WEBFINGER)  # it was asked, once per scheme at most
    assert len(attacker.gets()) <= 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"[]",
        b'"a string"',
        json.dumps({"links": "not a list"}).encode(),
        json.dumps({"links": [None, 1, "x", [], {"rel": 5}]}).encode(),
        json.dumps(with_template(None)).encode(),
        json.dumps(with_template(12345)).encode(),
        json.dumps(with_template(["http://x/{uri}"])).encode(),
        # The subscribe link beyond the first hundred links is not looked for.
        json.dumps(
            jrd(*[{"rel": "other"}] * 100, {"rel": SUBSCRIBE, "template": "http://x/{uri}"})
        ).encode(),
        # Nested deeper than any document we read (server/activitypub/bounds.py).
        b'{"links": [' + b"[" * 200 + b"]" * 200 + b"]}",
    ],
)
async def test_a_malformed_answer_is_a_message_not_a_500(
    ctx: Context, settings: Settings, attacker: Attacker, body: bytes
) -> None:
    await approved_assembly(ctx, HANDLE)
    attacker.serve(WEBFINGER, body, content_type=JRD)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, f"@ana@{host_of(attacker)}")
    refused(response)


async def test_what_the_answer_holds_is_escaped_where_it_is_shown(
    ctx: Context, settings: Settings, attacker: Attacker
) -> None:
    """A template on the right origin, but full of markup: followed, shown escaped."""
    await approved_assembly(ctx, HANDLE)
    host = host_of(attacker)
    template = (
        f'http://{host}/a?uri={{uri}}&x="><script>alert(1)</script><img/src/onerror=alert(2)>'
    )
    attacker.serve(WEBFINGER, with_template(template), content_type=JRD)
    async with visitor(settings, ctx) as browser:
        response = await follow_from(browser, f"@ana@{host}")
    assert response.status_code == 200
    assert "<script>alert" not in response.text
    assert "<img/src" not in response.text
    assert (destination(response) or "").endswith(
        '"><script>alert(1)</script><img/src/onerror=alert(2)>'
    )
    assert len(re.findall(r"<meta http-equiv", response.text)) == 1


async def test_an_oversized_answer_is_refused(
    ctx: Context, settings: Settings, attacker: Attacker
) -> None:
    await approved_assembly(ctx, HANDLE)
    padding = {"rel": "padding", "href": "x" * 30_000}
    attacker.serve(WEBFINGER, with_template("http://x/{uri}") | {"p": [padding]}, content_type=JRD)
    async with visitor(settings, ctx, fetch_max_bytes=20_000) as browser:
        response = await follow_from(browser, f"@ana@{host_of(attacker)}")
    assert refused(response) == (
        f"could not find @ana@{host_of(attacker)}: remote document too large"
    )


@pytest.mark.parametrize("slow", ["answer", "body"])
async def test_a_slow_answer_ends_within_the_fetch_timeout(
    ctx: Context, settings: Settings, attacker: Attacker, slow: str
) -> None:
    """Whether the answer is late to start or trickles in, the visitor waits at most about
    the fetch timeout for the whole look-up (both schemes, every redirect)."""
    await approved_assembly(ctx, HANDLE)
    body = json.dumps(with_template("http://x/{uri}") | {"p": "x" * 300_000}).encode()
    if slow == "answer":
        attacker.serve(WEBFINGER, body, content_type=JRD, delay=5.0)
    else:
        attacker.serve(WEBFINGER, body, content_type=JRD, trickle=0.4)
    async with visitor(settings, ctx, fetch_timeout=1.0) as browser:
        started = time.monotonic()
        response = await follow_from(browser, f"@ana@{host_of(attacker)}")
        elapsed = time.monotonic() - started
    message = refused(response)
    assert "time" in message or "unreachable" in message, message
    assert elapsed < 3.0, elapsed


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "10.0.0.1", "[::1]"])
async def test_a_handle_on_a_private_address_is_refused_without_a_connection(
    ctx: Context, settings: Settings, attacker: Attacker, host: str
) -> None:
    await approved_assembly(ctx, HANDLE)
    attacker.serve(WEBFINGER, with_template("http://x/{uri}"), content_type=JRD)
    port = host_of(attacker).rsplit(":", 1)[1]
    typed = "@ana@" + host.format(port=port)
    async with visitor(settings, ctx, allow_private_addresses=False) as browser:
        response = await follow_from(browser, typed)
    if host == "[::1]":  # not even a handle
        assert refused(response, 400).startswith("type your handle")
    else:
        assert refused(response) == (
            f"{host.format(port=port)} is not a server on the public internet"
        )
    assert attacker.requests == []


async def test_a_form_without_our_csrf_token_is_refused_before_any_request(
    ctx: Context, settings: Settings, attacker: Attacker
) -> None:
    await approved_assembly(ctx, HANDLE)
    attacker.serve(WEBFINGER, with_template("http://x/{uri}"), content_type=JRD)
    acct = f"@ana@{host_of(attacker)}"
    async with visitor(settings, ctx) as browser:
        token = csrf_token((await browser.get(f"/actors/{HANDLE}")).text)
        missing = await browser.post(ACTION, data={"acct": acct})
        wrong = await browser.post(ACTION, data={"acct": acct, "csrf_token": "0" * 64})
        elsewhere = await browser.post(
            ACTION,
            data={"acct": acct, "csrf_token": token},
            headers={"Origin": "https://evil.example"},
        )
    for response in (missing, wrong, elsewhere):
        assert response.status_code == 403
        assert "did not come from this site" in response.text or "another site" in response.text
        assert destination(response) is None
    # A browser with no cookie of ours yet (a cross-site form's first visit) is refused too.
    async with visitor(settings, ctx) as stranger:
        response = await stranger.post(ACTION, data={"acct": acct, "csrf_token": token})
    assert response.status_code == 403
    assert attacker.requests == []


async def test_each_client_network_may_try_a_few_times_a_minute(
    ctx: Context, settings: Settings, attacker: Attacker
) -> None:
    await approved_assembly(ctx, HANDLE)
    app = create_app(settings, ctx=ctx)

    def browser(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 1000))
        return httpx.AsyncClient(transport=transport, base_url=settings.base_url)

    async def attempt(client: httpx.AsyncClient) -> httpx.Response:
        token = csrf_token((await client.get(f"/actors/{HANDLE}")).text)
        return await client.post(ACTION, data={"acct": "typo", "csrf_token": token})

    async with (
        app.router.lifespan_context(app),
        browser("2001:db8:1:2::1") as first,
        browser("2001:db8:1:2::99") as neighbour,  # the same /64: one subscriber
        browser("2001:db8:9::1") as other,
    ):
        for _ in range(REMOTE_FOLLOWS_PER_MINUTE):
            assert (await attempt(first)).status_code == 400  # refused, but counted
        limited = await attempt(first)
        assert refused(limited, 429).startswith("too many attempts from your network: wait ")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert 'value="typo"' in limited.text  # the box, as it was typed
        assert (await attempt(neighbour)).status_code == 429
        assert (await attempt(other)).status_code == 400
    assert attacker.requests == []
