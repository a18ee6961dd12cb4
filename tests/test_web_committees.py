"""The committees pages for facilitators: following, timeline, correspondence, co-signing.

Through the real app on loopback, with forms sent as a browser sends them. Targets are
assemblies of the same instance, so no other server is involved (the two-instance flows
are in test_committees_e2e.py).
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from server.context import Context
from server.models import Activity, Following, Letter
from tests.helpers import approved_assembly, count, post
from tests.helpers_web import add_member, create_user, field_error, log_in, submit
from tests.support.servers import ServerThread

PAGES = ["timeline", "following", "letters", "letters/new"]


@pytest.fixture
async def client(server: ServerThread) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=server.base_url, headers={"Accept": "text/html"}) as c:
        yield c


async def setup(ctx: Context) -> None:
    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx, "plaza", name="Liberty Plaza General Assembly")
    sol_member = await create_user(ctx, "ana@example.org")
    await add_member(ctx, sol_member, "sol")
    await create_user(ctx, "outsider@example.org")


async def test_pages_need_a_member(
    ctx: Context, server: ServerThread, client: httpx.AsyncClient
) -> None:
    await setup(ctx)
    for page in PAGES:
        anonymous = await client.get(f"/manage/sol/{page}")
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    await log_in(client, "outsider@example.org")
    for page in PAGES:
        refused = await client.get(f"/manage/sol/{page}")
        assert refused.status_code == 403, page
        assert "not a facilitator" in refused.text
    # A form aimed at another assembly is refused too, and nothing is sent.
    refused = await submit(
        client, "/dashboard", {"target": f"@plaza@{ctx.urls.host}"}, action="/manage/sol/following"
    )
    assert refused.status_code == 403
    assert await count(ctx, Following) == 0


async def test_follow_write_and_cosign_from_the_pages(
    ctx: Context, server: ServerThread, client: httpx.AsyncClient
) -> None:
    await setup(ctx)
    await log_in(client, "ana@example.org")
    for page in PAGES:
        assert (await client.get(f"/manage/sol/{page}")).status_code == 200, page

    # Follow: a bad handle is refused beside the field, a good one queues a Follow.
    bad = await submit(client, "/manage/sol/following", {"target": "not a handle"})
    assert bad.status_code == 400
    assert "neither a handle" in (field_error(bad.text, "target") or "")
    done = await submit(client, "/manage/sol/following", {"target": f"@plaza@{ctx.urls.host}"})
    assert done.status_code == 303
    async with ctx.sessions() as session:
        row = (await session.scalars(select(Following))).one()
        follow = (await session.scalars(select(Activity).where(Activity.type == "Follow"))).one()
    assert row.target_uri == ctx.urls.actor("plaza") and follow.uri == row.follow_uri
    listed = await client.get("/manage/sol/following")
    assert ctx.urls.actor("plaza") in listed.text and "pending" in listed.text

    # A letter: no recipient → error beside the field and nothing stored; then sent.
    empty = await submit(client, "/manage/sol/letters/new", {"recipients": "", "content": "Hello"})
    assert empty.status_code == 400 and field_error(empty.text, "recipients")
    assert await count(ctx, Letter) == 0
    sent = await submit(
        client,
        "/manage/sol/letters/new",
        {"recipients": f"@plaza@{ctx.urls.host}", "content": "Shall we meet on Thursday?"},
    )
    assert sent.status_code == 303
    thread = await client.get(sent.headers["location"])
    assert "Shall we meet on Thursday?" in thread.text
    assert await count(ctx, Letter) == 1

    # Co-sign plaza's communiqué: an Announce is queued; twice is refused beside the field.
    published = await post(ctx, "plaza", "Everyone to the square on Sunday.")
    cosigned = await submit(
        client, "/manage/sol/timeline", {"url": published.url}, action="/manage/sol/cosign"
    )
    assert cosigned.status_code == 303
    again = await submit(
        client, "/manage/sol/timeline", {"url": published.url}, action="/manage/sol/cosign"
    )
    assert again.status_code == 409
    assert "already co-signed" in (field_error(again.text, "url") or "")
    async with ctx.sessions() as session:
        announces = (
            await session.scalars(select(Activity).where(Activity.type == "Announce"))
        ).all()
    assert len(announces) == 1 and announces[0].document["object"] == published.url


async def test_pinned_communiques_form_the_featured_collection(
    ctx: Context, server: ServerThread, client: httpx.AsyncClient
) -> None:
    await setup(ctx)
    await log_in(client, "ana@example.org")
    first = await post(ctx, "sol", "First: the assembly meets daily at 7pm.")
    await post(ctx, "sol", "Second: bring blankets.")
    pin = f"/manage/sol/communiques/{first.communique.public_id}/pin"
    assert (await submit(client, "/manage/sol", action=pin)).status_code == 303
    async with httpx.AsyncClient() as http:
        featured = (
            await http.get(
                ctx.urls.featured("sol"), headers={"Accept": "application/activity+json"}
            )
        ).json()
    assert featured["type"] == "OrderedCollection" and featured["totalItems"] == 1
    assert featured["orderedItems"][0]["id"] == first.url
    assert featured["orderedItems"][0]["type"] == "Note"
    # Another assembly's communiqué cannot be pinned through ours.
    theirs = await post(ctx, "plaza", "Plaza news.")
    refused = await submit(
        client, "/manage/sol", action=f"/manage/sol/communiques/{theirs.communique.public_id}/pin"
    )
    assert refused.status_code == 404
    # Unpin.
    assert (await submit(client, "/manage/sol", action=pin)).status_code == 303
    async with httpx.AsyncClient() as http:
        featured = (
            await http.get(
                ctx.urls.featured("sol"), headers={"Accept": "application/activity+json"}
            )
        ).json()
    assert featured["totalItems"] == 0 and featured["orderedItems"] == []


async def test_public_directory_as_json(ctx: Context, server: ServerThread) -> None:
    from server import assemblies

    await setup(ctx)
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(session, handle="waiting", name="Pending Assembly")
        sol = await assemblies.get(session, "sol")
        sol.place, sol.languages = "Madrid", ["es", "en"]
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        everything = (await http.get("/directory.json")).json()
        spanish = (await http.get("/directory.json", params={"language": "es"})).json()
        response = await http.get("/directory.json", params={"place": "madrid"})
    names = [a["name"] for a in everything["assemblies"]]
    assert names == ["Asamblea de Sol", "Liberty Plaza General Assembly"]  # no pending one
    assert everything["total"] == 2
    (sol_entry,) = spanish["assemblies"]
    assert sol_entry["handle"] == f"@sol@{ctx.urls.host}"
    assert sol_entry["url"] == ctx.urls.actor("sol")
    assert sol_entry["languages"] == ["es", "en"] and sol_entry["place"] == "Madrid"
    assert sol_entry["feed"] == ctx.urls.actor_feed("sol")
    assert response.headers["access-control-allow-origin"] == "*"
    assert [a["name"] for a in response.json()["assemblies"]] == ["Asamblea de Sol"]
