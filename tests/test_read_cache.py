"""Fast federation reads (server/federation/cache.py): kept answers, dropped on change, ETags.

The app runs in process (httpx.ASGITransport, lifespan run) on the test's own context, so a
test can count the SQL statements a request costs and read the cache's counters. A second
context on the same database stands for a second app instance in this process; a
subprocess writing with an engine of its own stands for another process, which this one
cannot hear (only the cache lifetime bounds what it changes).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text, update
from starlette.applications import Starlette

from server import assemblies, communiques
from server.app import create_app
from server.config import ConfigError, Settings, load_settings
from server.context import Context, create_context
from server.federation import cache as read_cache
from server.federation.cache import Memo, ReadCache, etag_matches, written_tables
from server.models import (
    Assembly,
    Communique,
    DomainBlock,
    Follower,
    FollowerStatus,
    Following,
    FollowStatus,
    InboxActivity,
    LoginFailure,
    RemoteActor,
    Share,
)
from tests.conftest import SECRET
from tests.helpers import approved_assembly, post

AP_JSON = "application/activity+json"
LD_JSON = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HANDLE = "libertyplaza"
ROOT = Path(__file__).resolve().parent.parent
ETAG = re.compile(r'^"[0-9a-f]{32}"$')


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(
    settings: Settings, ctx: Context, cache: ReadCache | None = None
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The app on ``ctx``, in process, with its lifespan run."""
    app = create_app(settings, ctx=ctx)
    if cache is not None:
        app.state.read_cache = cache
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, headers={"Accept": AP_JSON}
        ) as client:
            yield app, client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def web(
    settings: Settings, ctx: Context, clock: Clock
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    async with running(settings, ctx, ReadCache(ttl=5, clock=clock)) as pair:
        yield pair


@pytest.fixture
def app(web: tuple[Starlette, httpx.AsyncClient]) -> Starlette:
    return web[0]


@pytest.fixture
def http(web: tuple[Starlette, httpx.AsyncClient]) -> httpx.AsyncClient:
    return web[1]


def cache_of(app: Starlette) -> ReadCache:
    cache: ReadCache = app.state.read_cache
    return cache


@contextmanager
def statements(ctx: Context) -> Iterator[list[str]]:
    """Every SQL statement run on the context's engine inside the block (SQLite's
    ``BEGIN IMMEDIATE`` aside: it opens every transaction there, reads included)."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(ctx.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(ctx.engine.sync_engine, "before_cursor_execute", note)


@pytest.fixture
async def world(ctx: Context) -> dict[str, str]:
    """An assembly with a communiqué (pinned, shared), a follower and a followed actor,
    its lists published; the URL of every document the cache serves."""
    await approved_assembly(ctx, HANDLE, summary="We meet daily.")
    published = await post(ctx, HANDLE, "The first communiqué.")
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, HANDLE)
        assembly.publish_social_graph = True
        await session.execute(
            update(Communique)
            .where(Communique.id == published.communique.id)
            .values(pinned_at=ctx.clock())
        )
        actor = RemoteActor(
            uri="https://x.example/users/a", domain="x.example", inbox_uri="https://x.example/i"
        )
        session.add(actor)
        await session.flush()
        session.add(
            Follower(
                assembly_id=assembly.id,
                actor_id=actor.id,
                follow_uri="https://x.example/follows/1",
                status=FollowerStatus.ACCEPTED,
            )
        )
        session.add(
            Following(
                assembly_id=assembly.id,
                target_uri="https://y.example/users/b",
                inbox_uri="https://y.example/i",
                follow_uri=ctx.urls.actor(HANDLE) + "#follows/1",
                status=FollowStatus.ACCEPTED,
            )
        )
        session.add(
            Share(
                communique_id=published.communique.id,
                actor_uri="https://z.example/users/c",
                announce_uri="https://z.example/announces/1",
            )
        )
    u = ctx.urls
    public_id = published.communique.public_id
    return {
        "actor": u.actor(HANDLE),
        "instance actor": u.instance_actor(),
        "outbox": u.outbox(HANDLE),
        "outbox page": u.outbox(HANDLE) + "?page=1",
        "followers": u.followers(HANDLE),
        "followers page": u.followers(HANDLE) + "?page=1",
        "following": u.following(HANDLE),
        "following page": u.following(HANDLE) + "?page=1",
        "featured": u.featured(HANDLE),
        "communique": published.url,
        "shares": u.shares(HANDLE, public_id),
        "shares page": u.shares(HANDLE, public_id) + "?page=1",
        "activity": u.activity(published.activity.public_id),
        "webfinger": f"{u.base}/.well-known/webfinger?resource=acct:{HANDLE}@{u.host}",
        "webfinger by URL": f"{u.base}/.well-known/webfinger?resource={u.actor(HANDLE)}",
        "webfinger instance": f"{u.base}/.well-known/webfinger?resource={u.instance_actor()}",
        "host-meta": f"{u.base}/.well-known/host-meta",
        "nodeinfo links": f"{u.base}/.well-known/nodeinfo",
        "nodeinfo 2.0": f"{u.base}/nodeinfo/2.0",
        "nodeinfo 2.1": f"{u.base}/nodeinfo/2.1",
    }


# Pages of published lists read the publish_social_graph flag on every request (one query).
GATED = {"followers page", "following page"}


async def get_json(http: httpx.AsyncClient, url: str, **headers: str) -> dict[str, Any]:
    response = await http.get(url, headers=headers or None)
    assert response.status_code == 200, (url, response.status_code, response.text)
    document: dict[str, Any] = response.json()
    return document


# ---- (a) the second GET is answered from the cache ------------------------------------------


async def test_every_document_is_served_from_the_cache_the_second_time(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    cache = cache_of(app)
    for name, url in world.items():
        first = await http.get(url)
        assert first.status_code == 200, (name, first.text)
        stored = cache.stats.stores
        with statements(ctx) as seen:
            second = await http.get(url)
        assert second.status_code == 200, name
        assert second.content == first.content, name
        assert second.headers["etag"] == first.headers["etag"], name
        assert second.headers["content-type"] == first.headers["content-type"], name
        assert second.headers.get("vary") == first.headers.get("vary"), name
        assert second.headers.get("access-control-allow-origin") == first.headers.get(
            "access-control-allow-origin"
        ), name
        # The security headers are the middleware's, added to a kept answer as to any.
        assert second.headers["x-content-type-options"] == "nosniff", name
        assert cache.stats.stores == stored, name
        assert len(seen) == (1 if name in GATED else 0), (name, seen)
    # One answer per document, but the two forms of one WebFinger resource share theirs.
    assert cache.stats.stores == len(world) - 1
    assert cache.stats.hits == len(world) + 1


async def test_the_first_get_reads_the_database(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    with statements(ctx) as first:
        await http.get(world["outbox page"])
    with statements(ctx) as second:
        await http.get(world["outbox page"])
    assert len(first) >= 3 and second == []


async def test_each_as2_media_type_is_its_own_answer(
    world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    for _ in range(2):
        ap = await http.get(world["actor"], headers={"Accept": AP_JSON})
        ld = await http.get(world["actor"], headers={"Accept": LD_JSON})
        assert ap.headers["content-type"].startswith(AP_JSON)
        assert ld.headers["content-type"] == LD_JSON
        assert ap.content == ld.content
        # Two representations: two strong validators.
        assert ap.headers["etag"] != ld.headers["etag"]
        assert ap.headers["vary"] == ld.headers["vary"] == "Accept"


async def test_a_page_number_is_part_of_the_key_but_a_stray_parameter_is_not(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    for n in range(1, 23):
        await post(ctx, HANDLE, f"Communiqué number {n}.")
    page1 = await get_json(http, world["outbox"] + "?page=1")
    page2 = await get_json(http, world["outbox"] + "?page=2")
    assert page1["orderedItems"] != page2["orderedItems"]
    assert await get_json(http, world["outbox"] + "?page=true") == page1
    with statements(ctx) as seen:
        assert await get_json(http, world["outbox"] + "?page=1&utm=x") == page1
    assert seen == []


async def test_html_pages_are_never_kept(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    for name in ("actor", "communique"):
        for _ in range(2):
            with statements(ctx) as seen:
                page = await http.get(world[name], headers={"Accept": BROWSER})
            assert page.headers["content-type"].startswith("text/html")
            assert "etag" not in page.headers
            assert seen, name  # rendered from the database every time
    assert cache_of(app).size == 0


async def test_errors_are_not_kept(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    for url in (ctx.urls.actor("nobody"), ctx.urls.outbox("nobody"), world["outbox"] + "?page=x"):
        for _ in range(2):
            assert (await http.get(url)).status_code in {400, 404}
    assert cache_of(app).size == 0


# ---- (b) a change is seen by the very next GET ---------------------------------------------


async def test_a_profile_edit_is_seen_at_once(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    assert (await get_json(http, world["actor"]))["name"] == "Liberty Plaza General Assembly"
    await get_json(http, world["actor"])  # kept
    async with ctx.sessions() as session, session.begin():
        await assemblies.update_profile(
            session,
            handle=HANDLE,
            name="Liberty Square",
            summary="Every evening.",
            place="",
            languages=["en"],
            manually_approves_followers=False,
        )
    doc = await get_json(http, world["actor"])
    assert doc["name"] == "Liberty Square"
    assert "Every evening." in doc["summary"]


async def test_a_new_communique_is_seen_at_once(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    assert (await get_json(http, world["outbox"]))["totalItems"] == 1
    assert (await get_json(http, world["nodeinfo 2.1"]))["usage"]["localPosts"] == 1
    first_page = await get_json(http, world["outbox page"])
    fresh = await post(ctx, HANDLE, "A second communiqué.")
    assert (await get_json(http, world["outbox"]))["totalItems"] == 2
    assert (await get_json(http, world["nodeinfo 2.1"]))["usage"]["localPosts"] == 2
    page = await get_json(http, world["outbox page"])
    assert page != first_page
    assert page["orderedItems"][0]["object"]["id"] == fresh.url


async def test_a_key_rotation_by_bulk_update_is_seen_at_once(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    before = (await get_json(http, world["actor"]))["publicKey"]["publicKeyPem"]
    new_pem = "-----BEGIN PUBLIC KEY-----\nrotated\n-----END PUBLIC KEY-----\n"
    async with ctx.sessions() as session, session.begin():
        # A bulk UPDATE statement, not a flush of a loaded object.
        await session.execute(
            update(Assembly).where(Assembly.handle == HANDLE).values(public_key_pem=new_pem)
        )
    after = (await get_json(http, world["actor"]))["publicKey"]["publicKeyPem"]
    assert before != after == new_pem


async def test_a_new_follower_is_seen_at_once(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    assert (await get_json(http, world["followers"]))["totalItems"] == 1
    assert len((await get_json(http, world["followers page"]))["orderedItems"]) == 1
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, HANDLE)
        actor = RemoteActor(
            uri="https://w.example/users/n", domain="w.example", inbox_uri="https://w.example/i"
        )
        session.add(actor)
        await session.flush()
        session.add(
            Follower(assembly_id=assembly.id, actor_id=actor.id, follow_uri="https://w.example/f")
        )
    assert (await get_json(http, world["followers"]))["totalItems"] == 2
    page = await get_json(http, world["followers page"])
    assert page["orderedItems"][0] == "https://w.example/users/n"


async def test_a_removed_remote_actor_takes_its_follow_with_it(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    """Deleting a remote actor deletes its Follower rows by ON DELETE CASCADE: the database
    writes the followers table without a statement naming it."""
    assert (await get_json(http, world["followers"]))["totalItems"] == 1
    async with ctx.engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM remote_actors WHERE uri = 'https://x.example/users/a'")
        )
    assert (await get_json(http, world["followers"]))["totalItems"] == 0


@pytest.mark.parametrize("how", ["session", "core", "raw sql"])
async def test_every_way_of_writing_is_heard(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient, how: str
) -> None:
    await get_json(http, world["actor"])
    statement = update(Assembly).where(Assembly.handle == HANDLE).values(name=f"Written by {how}")
    if how == "session":
        async with ctx.sessions() as session, session.begin():
            await session.execute(statement)
    elif how == "core":
        async with ctx.engine.begin() as conn:
            await conn.execute(statement)
    else:
        async with ctx.engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE assemblies SET name = 'Written by {how}' WHERE handle = '{HANDLE}'")
            )
    assert (await get_json(http, world["actor"]))["name"] == f"Written by {how}"


@pytest.mark.parametrize("change", ["suspended", "deleted communique", "list hidden"])
async def test_what_stops_being_public_is_not_served_after_the_change(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient, change: str
) -> None:
    for url in world.values():
        await http.get(url)
        await http.get(url)
    async with ctx.sessions() as session, session.begin():
        if change == "suspended":
            await assemblies.suspend(session, HANDLE, now=ctx.clock())
        elif change == "deleted communique":
            await communiques.delete(session, ctx.urls, url=world["communique"], now=ctx.clock())
        else:
            await assemblies.set_publish_social_graph(session, handle=HANDLE, publish=False)
    if change == "suspended":
        for name in world:
            if name.startswith(("instance", "host", "nodeinfo", "webfinger instance")):
                continue  # the instance's own documents
            if name == "activity":
                continue  # activities were never checked against their assembly's status
            response = await http.get(world[name])
            assert response.status_code == 410, (name, response.status_code)
        assert (await get_json(http, world["nodeinfo 2.1"]))["usage"]["users"]["total"] == 0
    elif change == "deleted communique":
        note = await http.get(world["communique"])
        assert note.status_code == 410 and note.json()["type"] == "Tombstone"
        for name in ("shares", "activity"):
            assert (await http.get(world[name])).status_code == 410, name
        assert (await get_json(http, world["outbox"]))["totalItems"] == 0
        assert (await get_json(http, world["outbox page"]))["orderedItems"] == []
        assert (await get_json(http, world["featured"]))["orderedItems"] == []
    else:
        for name in ("followers page", "following page"):
            assert (await http.get(world[name])).status_code == 404, name
        for name in ("followers", "following"):
            assert "first" not in await get_json(http, world[name]), name


async def test_writes_to_tables_no_answer_reads_keep_the_answers(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    """The inbox log, login failures, sessions: no federation document reads them."""
    cache = cache_of(app)
    for url in world.values():
        await http.get(url)
    kept = cache.size
    async with ctx.sessions() as session, session.begin():
        session.add(
            InboxActivity(
                uri="https://x.example/a/1",
                actor_uri="https://x.example/users/a",
                type="Like",
                document={},
            )
        )
        session.add(LoginFailure(key="k" * 64, attempted_at=ctx.clock()))
    assert cache.size == kept
    with statements(ctx) as seen:
        await http.get(world["actor"])
    assert seen == []


async def test_a_rolled_back_write_drops_nothing(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    cache = cache_of(app)
    await http.get(world["actor"])
    async with ctx.sessions() as session:
        await session.execute(update(Assembly).values(name="never committed"))
        await session.rollback()
    assert cache.size == 1
    assert (await get_json(http, world["actor"]))["name"] != "never committed"


async def test_an_answer_rendered_while_its_tables_changed_is_not_kept(
    ctx: Context, world: dict[str, str]
) -> None:
    cache = ReadCache(ttl=5)

    async def render() -> Any:
        async with ctx.sessions() as session:
            assembly = await assemblies.get(session, HANDLE)
        # Another task commits a change to assemblies while this answer is being built.
        async with ctx.sessions() as session, session.begin():
            await session.execute(update(Assembly).values(name="changed meanwhile"))
        return httpx_free_json({"name": assembly.name})

    answer = await cache.answer(("k",), render)
    assert isinstance(answer, read_cache.Answer)
    assert cache.size == 0 and cache.stats.stores == 0


async def test_an_answer_kept_between_commit_and_its_completion_is_dropped(
    ctx: Context, world: dict[str, str]
) -> None:
    """The commit event fires before the database commits; what is rendered in that window
    may hold the old rows, so the tables are dropped again once the commit is done."""
    cache = ReadCache(ttl=5)

    async def render() -> Any:
        async with ctx.sessions() as session:
            await session.scalars(select(Assembly))
        return httpx_free_json({"ok": True})

    async with ctx.engine.connect() as conn:
        await conn.execute(update(Assembly).values(name="committed"))
        await conn.commit()
        await cache.answer(("k",), render)
        assert cache.size == 1  # kept: no change since it started
    assert cache.size == 0  # the connection is back in the pool: the commit is complete


def httpx_free_json(document: dict[str, Any]) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(document)


# ---- (c) ETag and If-None-Match --------------------------------------------------------------


async def test_if_none_match_gets_304_with_no_body(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    for name, url in world.items():
        first = await http.get(url)
        etag = first.headers["etag"]
        assert ETAG.match(etag), (name, etag)
        for condition in (etag, f"W/{etag}", f'"other", {etag}', f'W/"x",W/{etag}', "*"):
            again = await http.get(url, headers={"If-None-Match": condition})
            assert again.status_code == 304, (name, condition)
            assert again.content == b""
            assert again.headers["etag"] == etag
            assert "content-length" not in again.headers or again.headers["content-length"] == "0"
            if "vary" in first.headers:
                assert again.headers["vary"] == first.headers["vary"]
        for condition in ('"other"', etag[:-2] + '"', "garbage", ""):
            miss = await http.get(url, headers={"If-None-Match": condition})
            assert miss.status_code == 200, (name, condition)
            assert miss.content == first.content


async def test_a_change_gives_a_new_etag(
    ctx: Context, world: dict[str, str], app: Starlette, http: httpx.AsyncClient
) -> None:
    first = await http.get(world["actor"])
    etag = first.headers["etag"]
    assert (await http.get(world["actor"], headers={"If-None-Match": etag})).status_code == 304
    async with ctx.sessions() as session, session.begin():
        await session.execute(update(Assembly).values(name="Renamed"))
    changed = await http.get(world["actor"], headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["name"] == "Renamed"
    assert changed.headers["etag"] != etag


async def test_etags_without_the_cache(
    settings: Settings, ctx: Context, world: dict[str, str]
) -> None:
    """With INTEROCC_READ_CACHE_SECONDS=0 nothing is kept; validators still work."""
    async with running(settings, ctx, ReadCache(ttl=0)) as (app, http):
        first = await http.get(world["outbox page"])
        again = await http.get(
            world["outbox page"], headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304
        with statements(ctx) as seen:
            await http.get(world["outbox page"])
        assert seen  # rendered afresh
        assert cache_of(app).size == 0


def test_if_none_match_parsing() -> None:
    tag = '"abc"'
    assert etag_matches('"abc"', tag)
    assert etag_matches('W/"abc"', tag)
    assert etag_matches(' "x" , W/"abc" ', tag)
    assert etag_matches("*", tag)
    assert not etag_matches("", tag)
    assert not etag_matches('"abcd"', tag)
    assert not etag_matches("abc", tag)
    assert not etag_matches('w/"abc"', tag)  # W/ is case-sensitive
    assert etag_matches('bad, "abc"', tag)  # a malformed member does not hide the next


# ---- (d) other app instances and other processes -------------------------------------------


async def test_a_second_app_instance_in_the_process_sees_a_change_at_once(
    settings: Settings, ctx: Context, world: dict[str, str]
) -> None:
    other = await create_context(settings)
    try:
        async with running(settings, other) as (app, http):
            assert (await get_json(http, world["actor"]))["name"].startswith("Liberty")
            await get_json(http, world["actor"])
            assert cache_of(app).stats.hits == 1
            async with ctx.sessions() as session, session.begin():  # the first instance
                await session.execute(update(Assembly).values(name="From the other instance"))
            assert (await get_json(http, world["actor"]))["name"] == "From the other instance"
    finally:
        await other.aclose()


WRITER = """
import asyncio, sys
from sqlalchemy import update
from server.db import create_engine
from server.models import Assembly

async def main(url: str, name: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(update(Assembly).values(name=name))
    await engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def write_from_another_process(settings: Settings, name: str) -> None:
    subprocess.run(
        [sys.executable, "-c", WRITER, settings.database_url, name], cwd=ROOT, check=True
    )


async def test_another_process_s_change_is_seen_within_the_cache_lifetime(
    settings: Settings,
    ctx: Context,
    world: dict[str, str],
    app: Starlette,
    http: httpx.AsyncClient,
    clock: Clock,
) -> None:
    assert (await get_json(http, world["actor"]))["name"].startswith("Liberty")
    await asyncio.to_thread(write_from_another_process, settings, "From another process")
    # This process heard nothing: the kept answer stands until it expires…
    clock.now += 4.9
    assert (await get_json(http, world["actor"]))["name"].startswith("Liberty")
    # …and no later.
    clock.now += 0.2
    assert (await get_json(http, world["actor"]))["name"] == "From another process"


async def test_with_the_cache_off_another_process_s_change_is_seen_at_once(
    settings: Settings, ctx: Context, world: dict[str, str]
) -> None:
    async with running(settings, ctx, ReadCache(ttl=0)) as (_app, http):
        await get_json(http, world["actor"])
        await asyncio.to_thread(write_from_another_process, settings, "Seen at once")
        assert (await get_json(http, world["actor"]))["name"] == "Seen at once"


# ---- bounds, statements, the setting ----------------------------------------------------------


async def test_the_cache_is_bounded(ctx: Context, world: dict[str, str]) -> None:
    cache = ReadCache(ttl=5, max_entries=3, max_entry_bytes=100, max_total_bytes=250)

    def render(size: int) -> Any:
        async def run() -> Any:
            return httpx_free_json({"x": "y" * size})

        return run

    for n in range(5):
        await cache.answer((n,), render(10))
    assert cache.size == 3  # the least recently used went first
    assert cache.get((0,)) is None and cache.get((4,)) is not None
    await cache.answer(("big",), render(200))
    assert cache.get(("big",)) is None  # over the bound of one entry: served, not kept
    for n in range(5, 8):
        await cache.answer((n,), render(90))
    assert cache.size == 2  # three of about 100 bytes would pass 250


def test_what_a_statement_writes() -> None:
    assert written_tables("SELECT * FROM assemblies") is None
    assert written_tables("BEGIN IMMEDIATE") is None
    assert written_tables("PRAGMA foreign_keys=ON") is None
    assert written_tables("UPDATE assemblies SET name=? WHERE id=?") is not None
    assert "assemblies" in (written_tables("UPDATE assemblies SET name=?") or set())
    # ON DELETE CASCADE reaches the rows that hang from the one written.
    reached = written_tables("DELETE FROM remote_actors WHERE id = 1") or set()
    assert {"remote_actors", "followers"} <= reached
    assert "communiques" in (written_tables("DELETE FROM assemblies WHERE id = 1") or set())
    assert written_tables("INSERT INTO inbox_activities (uri) VALUES (?)") == {"inbox_activities"}
    assert written_tables("CREATE TABLE t (x INTEGER)") == {read_cache.ALL}
    assert written_tables("UPDATE alembic_version SET version_num='x'") == {read_cache.ALL}


@pytest.mark.parametrize(("raw", "expected"), [(None, 5), ("0", 0), ("30", 30)])
def test_the_setting(raw: str | None, expected: int) -> None:
    env = {"INTEROCC_SECRET_KEY": SECRET}
    if raw is not None:
        env["INTEROCC_READ_CACHE_SECONDS"] = raw
    assert load_settings(env).read_cache_seconds == expected
    assert create_app(load_settings(env)).state.read_cache.ttl == expected


@pytest.mark.parametrize("raw", ["-1", "601", "soon"])
def test_a_bad_setting_names_itself(raw: str) -> None:
    with pytest.raises(ConfigError, match="INTEROCC_READ_CACHE_SECONDS"):
        load_settings({"INTEROCC_SECRET_KEY": SECRET, "INTEROCC_READ_CACHE_SECONDS": raw})


# ---- Memo: values kept like answers (the inbox's domain blocks and keys) ---------------------


async def _blocks(ctx: Context, loads: list[int]) -> frozenset[str]:
    loads.append(1)
    async with ctx.sessions() as session:
        return frozenset((await session.scalars(select(DomainBlock.domain))).all())


async def _block(ctx: Context, domain: str) -> None:
    async with ctx.sessions() as session, session.begin():
        session.add(DomainBlock(domain=domain, created_at=ctx.clock()))


async def test_a_memo_keeps_a_value_until_a_table_it_read_is_written(ctx: Context) -> None:
    memo: Memo[frozenset[str]] = Memo(ttl=60)
    loads: list[int] = []
    assert await memo.get("blocks", lambda: _blocks(ctx, loads)) == frozenset()
    assert await memo.get("blocks", lambda: _blocks(ctx, loads)) == frozenset()
    assert len(loads) == 1
    # A write elsewhere keeps it; a write to the table it read drops it at once.
    async with ctx.sessions() as session, session.begin():
        session.add(LoginFailure(key="k" * 64, attempted_at=ctx.clock()))
    assert await memo.get("blocks", lambda: _blocks(ctx, loads)) == frozenset()
    assert len(loads) == 1
    await _block(ctx, "hostile.example")
    assert await memo.get("blocks", lambda: _blocks(ctx, loads)) == {"hostile.example"}
    assert len(loads) == 2


async def test_a_memo_forgets_after_its_lifetime_and_keeps_nothing_with_none(
    ctx: Context,
) -> None:
    clock = Clock()
    memo: Memo[frozenset[str]] = Memo(ttl=5, clock=clock)
    loads: list[int] = []
    await memo.get("blocks", lambda: _blocks(ctx, loads))
    clock.now += 4.9
    await memo.get("blocks", lambda: _blocks(ctx, loads))
    assert len(loads) == 1
    clock.now += 0.2
    await memo.get("blocks", lambda: _blocks(ctx, loads))
    assert len(loads) == 2
    off: Memo[frozenset[str]] = Memo(ttl=0)
    for _ in range(3):
        await off.get("blocks", lambda: _blocks(ctx, loads))
    assert len(loads) == 5


async def test_a_memo_does_not_keep_a_value_whose_table_changed_while_it_loaded(
    ctx: Context,
) -> None:
    memo: Memo[frozenset[str]] = Memo(ttl=60)
    loads: list[int] = []

    async def racing() -> frozenset[str]:
        value = await _blocks(ctx, loads)
        await _block(ctx, "late.example")  # committed after the read, before the keep
        return value

    assert await memo.get("blocks", racing) == frozenset()
    assert await memo.get("blocks", lambda: _blocks(ctx, loads)) == {"late.example"}


async def test_a_memo_is_bounded(ctx: Context) -> None:
    memo: Memo[int] = Memo(ttl=60, max_entries=3)

    async def value(n: int) -> int:
        return n

    for n in range(10):
        await memo.get(n, lambda n=n: value(n))
    assert list(memo._entries) == [7, 8, 9]
