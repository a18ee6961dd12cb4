"""Privacy by default: who follows an assembly, and who visits the server, are nobody's
business unless the assembly (for the first) chooses otherwise.

The followers and following collections give only their totals unless the assembly
publishes them (a checkbox in its settings, behind CSRF and its admins); the server's logs
name no client address. Our app runs under uvicorn on loopback, as `interocc serve` runs it.
"""

from __future__ import annotations

import argparse
import ast
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from server import assemblies, cli
from server.app import create_app
from server.config import Settings
from server.context import Context
from server.models import (
    Activity,
    Delivery,
    Follower,
    FollowerStatus,
    Following,
    FollowStatus,
    MemberRole,
    RemoteActor,
)
from tests.helpers import approved_assembly, count
from tests.helpers_web import add_member, create_user, csrf_token, input_value, log_in, submit
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

AP_JSON = "application/activity+json"
HANDLE = "libertyplaza"
SETTINGS_PAGE = f"/manage/{HANDLE}/settings"
FOLLOWERS = [f"https://refuge{n}.example/users/someone-at-risk" for n in (1, 2)]
FOLLOWED = "https://comrades.example/users/ally"
PENDING = "https://comrades.example/users/not-yet"
ADMIN = "admin@example.org"


@pytest.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=20) as c:
        yield c


@pytest.fixture
async def graph(ctx: Context, server: ServerThread) -> None:
    """An assembly with two accepted followers, one accepted follow and one pending."""
    await approved_assembly(ctx, HANDLE)
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, HANDLE)
        for n, uri in enumerate(FOLLOWERS):
            actor = RemoteActor(
                uri=uri, domain=f"refuge{n + 1}.example", inbox_uri=uri + "/inbox", document={}
            )
            session.add(actor)
            await session.flush()
            session.add(
                Follower(
                    assembly_id=assembly.id,
                    actor_id=actor.id,
                    follow_uri=uri + "#follow",
                    status=FollowerStatus.ACCEPTED,
                )
            )
        for n, (uri, status) in enumerate(
            ((FOLLOWED, FollowStatus.ACCEPTED), (PENDING, FollowStatus.PENDING))
        ):
            session.add(
                Following(
                    assembly_id=assembly.id,
                    target_uri=uri,
                    inbox_uri=uri + "/inbox",
                    follow_uri=ctx.urls.actor(HANDLE) + f"#follows/{n}",
                    status=status,
                )
            )


async def published(ctx: Context) -> bool:
    async with ctx.sessions() as session:
        return (await assemblies.get(session, HANDLE)).publish_social_graph


async def publish(ctx: Context, value: bool) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.set_publish_social_graph(session, handle=HANDLE, publish=value)


def assert_no_member_named(response: httpx.Response) -> None:
    for uri in (*FOLLOWERS, FOLLOWED, PENDING):
        assert uri not in response.text, uri


COLLECTIONS = {"followers": 2, "following": 1}  # name → accepted members


# ---- the collections ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COLLECTIONS))
@pytest.mark.parametrize("query", ["", "?page=1", "?page=2", "?page=true"])
async def test_lists_are_hidden_by_default(
    ctx: Context, graph: None, http: httpx.AsyncClient, name: str, query: str
) -> None:
    collection_id = f"{ctx.urls.actor(HANDLE)}/{name}"
    response = await http.get(collection_id + query, headers={"Accept": AP_JSON})
    assert_no_member_named(response)
    if not query:
        assert response.status_code == 200
        doc = response.json()
        assert doc["id"] == collection_id and doc["type"] == "OrderedCollection"
        assert doc["totalItems"] == COLLECTIONS[name]
        assert "first" not in doc and "orderedItems" not in doc and "items" not in doc
    else:
        assert response.status_code == 404  # no page of a list that is not published
        assert set(response.json()) == {"error"}
    assert await published(ctx) is False


@pytest.mark.parametrize("name", list(COLLECTIONS))
async def test_lists_are_shown_when_the_assembly_publishes_them(
    ctx: Context, graph: None, http: httpx.AsyncClient, name: str
) -> None:
    await publish(ctx, True)
    collection = (await http.get(f"/actors/{HANDLE}/{name}", headers={"Accept": AP_JSON})).json()
    assert collection["totalItems"] == COLLECTIONS[name]
    page = (await http.get(collection["first"], headers={"Accept": AP_JSON})).json()
    expected = FOLLOWERS if name == "followers" else [FOLLOWED]
    assert sorted(page["orderedItems"]) == sorted(expected)
    assert PENDING not in page["orderedItems"]  # a follow not yet accepted is nobody's


# ---- the settings form --------------------------------------------------------------------


def checked(page: str) -> bool:
    """Whether the page's "publish" checkbox is ticked."""
    tag = re.search(r'<input[^>]*\bname="publish_social_graph"[^>]*>', page)
    assert tag, "no publish_social_graph checkbox on the page"
    return re.search(r"\schecked\b", tag.group(0)) is not None


async def settings_form(client: httpx.AsyncClient, **changes: str) -> dict[str, str]:
    """The settings form as the page fills it, with ``changes``."""
    page = await client.get(SETTINGS_PAGE)
    assert page.status_code == 200
    form = {
        name: input_value(page.text, name) or ""
        for name in ("name", "summary", "place", "languages")
    }
    return {"csrf_token": csrf_token(page.text), **form, **changes}


async def test_the_settings_form_publishes_and_hides_the_lists(
    ctx: Context, graph: None, browser: Callable[[], httpx.AsyncClient]
) -> None:
    admin_id = await create_user(ctx, ADMIN)
    await add_member(ctx, admin_id, HANDLE, MemberRole.ADMIN)
    admin = browser()
    await log_in(admin, ADMIN)
    assert checked((await admin.get(SETTINGS_PAGE)).text) is False

    form = await settings_form(admin, publish_social_graph="on")
    response = await admin.post(SETTINGS_PAGE, data=form)
    assert response.status_code == 303
    assert await published(ctx) is True
    page = await admin.get(response.headers["location"])
    assert "Saved." in page.text
    assert checked(page.text) is True
    listed = await admin.get(f"/actors/{HANDLE}/followers?page=1", headers={"Accept": AP_JSON})
    assert sorted(listed.json()["orderedItems"]) == sorted(FOLLOWERS)

    # Unticked (a browser then sends no field at all): hidden again.
    response = await admin.post(SETTINGS_PAGE, data=await settings_form(admin))
    assert response.status_code == 303
    assert await published(ctx) is False
    hidden = await admin.get(f"/actors/{HANDLE}/followers?page=1", headers={"Accept": AP_JSON})
    assert hidden.status_code == 404
    # Not part of the actor document: no Update is sent to the followers' servers.
    assert await count(ctx, Activity) == 0
    assert await count(ctx, Delivery) == 0


ATTEMPTS = ["no-token", "another-visitors-token", "from-another-site", "facilitator", "outsider"]


@pytest.mark.parametrize("attempt", ATTEMPTS)
async def test_only_the_assemblys_admins_can_publish_its_lists(
    ctx: Context, graph: None, browser: Callable[[], httpx.AsyncClient], attempt: str
) -> None:
    admin_id = await create_user(ctx, ADMIN)
    await add_member(ctx, admin_id, HANDLE, MemberRole.ADMIN)
    client = browser()
    headers: dict[str, str] = {}
    if attempt in {"facilitator", "outsider"}:
        email = f"{attempt}@example.org"
        user_id = await create_user(ctx, email)
        if attempt == "facilitator":
            await add_member(ctx, user_id, HANDLE, MemberRole.FACILITATOR)
        await log_in(client, email)
        page = await client.get("/dashboard")
        data = {"csrf_token": csrf_token(page.text), "name": "x", "publish_social_graph": "on"}
    else:
        await log_in(client, ADMIN)
        data = await settings_form(client, publish_social_graph="on")
        if attempt == "no-token":
            del data["csrf_token"]
        elif attempt == "another-visitors-token":
            other = browser()
            data["csrf_token"] = csrf_token((await other.get("/login")).text)
        else:
            headers = {"Origin": "https://evil.example"}
    response = await client.post(SETTINGS_PAGE, data=data, headers=headers)
    assert response.status_code == 403
    assert await published(ctx) is False
    listed = await client.get(f"/actors/{HANDLE}/followers?page=1", headers={"Accept": AP_JSON})
    assert listed.status_code == 404
    assert_no_member_named(listed)


async def test_an_anonymous_visitor_cannot_publish_the_lists(
    ctx: Context, graph: None, browser: Callable[[], httpx.AsyncClient]
) -> None:
    client = browser()
    token = csrf_token((await client.get("/login")).text)
    data = {"csrf_token": token, "name": "x", "publish_social_graph": "on"}
    response = await client.post(SETTINGS_PAGE, data=data)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")
    assert await published(ctx) is False


# ---- logs ---------------------------------------------------------------------------------

VISITOR = "198.51.100.23"  # the address a trusted proxy says the visitor has
CONTROL = "192.0.2.44"
QUERY_SECRET = "private-query-7781"


def serve_options(settings: Settings) -> dict[str, object]:
    args = argparse.Namespace(host="127.0.0.1", port=0, forwarded_allow_ips="127.0.0.1")
    return cli.serve_options(settings, args)


async def visit(base_url: str, address: str) -> None:
    """What a visitor does: pages, a search-like query, a failed login, a 404, a refusal."""
    headers = {"X-Forwarded-For": address}
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, headers=headers) as c:
        assert (await c.get(f"/about?next={QUERY_SECRET}")).status_code == 200
        failed = await submit(c, "/login", {"email": "visitor@example.org", "password": "x" * 12})
        assert failed.status_code == 400
        assert (await c.get("/no/such/page")).status_code == 404
        assert (await c.post("/inbox", content=b"{}")).status_code in {400, 401, 415}


async def test_logs_hold_no_client_address(
    settings: Settings,
    port: int,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Every log record (ours, through logging) and every line uvicorn prints (its own
    handlers, to stdout and stderr) while serving requests as `interocc serve` does."""
    caplog.set_level(logging.INFO)  # the default INTEROCC_LOG_LEVEL
    options = serve_options(settings)
    assert options["access_log"] is False

    # The capture sees an address when one is printed: uvicorn's own access log does.
    with ServerThread(create_app(settings), options={**options, "access_log": True}) as control:
        await visit(control.base_url, CONTROL)
    assert CONTROL in capfd.readouterr().out
    caplog.clear()

    with ServerThread(create_app(settings), port=port, options=options) as served:
        await visit(served.base_url, VISITOR)
    printed = capfd.readouterr()
    # The server's records; the test's own httpx client logs the URLs it requests.
    server_side = [r for r in caplog.records if r.name.split(".")[0] not in {"httpx", "httpcore"}]
    logged = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in server_side]
    everything = "\n".join([printed.out, printed.err, *logged])
    assert VISITOR not in everything
    assert QUERY_SECRET not in everything
    assert "visitor@example.org" not in everything
    # What is logged instead: method, path without its query, status.
    access = [r.getMessage() for r in caplog.records if r.name == "server.web.access_log"]
    assert any(m.startswith("GET /about 200 ") for m in access), access
    assert any(m.startswith("POST /login 400 ") for m in access), access


LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def _names_the_client(node: ast.AST) -> bool:
    """``request.client``, ``scope["client"]`` or our ``_client(request)``."""
    if isinstance(node, ast.Attribute) and node.attr == "client":
        return isinstance(node.value, ast.Name) and node.value.id in {"request", "scope"}
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and key.value == "client"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id == "_client"
    return False


def test_no_server_code_logs_a_client_address() -> None:
    root = Path(__file__).resolve().parent.parent.parent / "server"
    found = []
    sources = sorted(root.rglob("*.py"))
    assert any(p.parent.name == "web" for p in sources)
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOG_METHODS
            ):
                continue
            for argument in [*node.args, *(k.value for k in node.keywords)]:
                if any(_names_the_client(inner) for inner in ast.walk(argument)):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert found == []
