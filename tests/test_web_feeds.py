"""Atom feeds: the instance's latest communiqués and each assembly's, as RFC 4287 documents.

Every feed is parsed twice: with xml.etree (the exact elements and attributes) and with
feedparser (what a feed reader makes of it; ``bozo`` set means it was not well-formed).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import count as counter
from xml.etree import ElementTree as ET

import feedparser
import httpx
import pytest
from sqlalchemy import update

from server import assemblies
from server.app import create_app
from server.config import Settings
from server.context import Context
from server.models import Assembly, AssemblyStatus, Communique, Media, MediaPurpose
from server.web.feeds import Enclosure, Entry, Feed, build_atom
from tests.helpers import approved_assembly, post
from tests.support.servers import ServerThread

A = "{http://www.w3.org/2005/Atom}"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
_ids = counter(1)


@pytest.fixture
async def web(settings: Settings, ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, ctx=ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
            yield client


async def get_feed(web: httpx.AsyncClient, path: str) -> tuple[ET.Element, bytes]:
    response = await web.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"] == ATOM_TYPE
    root = ET.fromstring(response.content)
    assert root.tag == f"{A}feed"
    return root, response.content


def text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    assert found is not None, path
    return found.text or ""


def links(element: ET.Element) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for link in element.findall(f"{A}link"):
        out.setdefault(link.get("rel", "alternate"), []).append(dict(link.attrib))
    return out


def parse_time(value: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def attach(ctx: Context, communique: Communique, media_type: str, **kw: object) -> str:
    k = next(_ids)
    extension = "pdf" if media_type == "application/pdf" else "jpg"
    file_name = f"feedfile{k:010d}xyz.{extension}"
    async with ctx.sessions() as session, session.begin():
        session.add(
            Media(
                public_id=f"feedmedia{k:010d}",
                assembly_id=communique.assembly_id,
                communique_id=communique.id,
                purpose=kw.pop("purpose", MediaPurpose.ATTACHMENT),
                media_type=media_type,
                file_name=file_name,
                sha256="0" * 64,
                **kw,
            )
        )
    return file_name


async def set_status(ctx: Context, handle: str, status: AssemblyStatus) -> None:
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Assembly).where(Assembly.handle == handle).values(status=status)
        )


async def test_instance_feed_has_the_latest_communiques_of_approved_assemblies(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza GA")
    await approved_assembly(ctx, "oakland", name="Oakland GA")
    await approved_assembly(ctx, "stopped", name="Stopped GA")
    first = await post(ctx, "libertyplaza", "First: the **winter plan** & more. #OWS #WinterPlan")
    second = await post(ctx, "oakland", "Second: general strike. #GeneralStrike", language="es")
    gone = await post(ctx, "libertyplaza", "Deleted one.")
    hidden = await post(ctx, "stopped", "From a suspended assembly.")
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Communique)
            .where(Communique.id == gone.communique.id)
            .values(deleted_at=ctx.clock())
        )
    await set_status(ctx, "stopped", AssemblyStatus.SUSPENDED)
    photo = await attach(ctx, first.communique, "image/jpeg", size=2048, alt_text="the plan")
    agenda = await attach(
        ctx, first.communique, "application/pdf", size=4096, position=1, original_name="a.pdf"
    )
    await attach(ctx, first.communique, "image/png", size=1, purpose=MediaPurpose.AVATAR)

    root, body = await get_feed(web, "/feed.atom")
    base = ctx.urls.base
    assert text(root, f"{A}id") == f"{base}/feed.atom"
    assert text(root, f"{A}title") == "InterOcc"
    assert text(root, f"{A}author/{A}name") == "InterOcc"
    feed_links = links(root)
    assert feed_links["self"] == [
        {"rel": "self", "type": "application/atom+xml", "href": f"{base}/feed.atom"}
    ]
    assert feed_links["alternate"][0]["href"] == f"{base}/"
    entries = root.findall(f"{A}entry")
    assert [text(e, f"{A}id") for e in entries] == [second.url, first.url]  # newest first
    assert text(root, f"{A}updated") == text(entries[0], f"{A}updated")

    entry = entries[1]
    assert text(entry, f"{A}title") == "First: the winter plan & more. #OWS #WinterPlan"
    assert links(entry)["alternate"][0]["href"] == first.url
    published = parse_time(text(entry, f"{A}published"))
    assert abs(published - first.communique.published_at) < timedelta(seconds=1)
    assert text(entry, f"{A}updated") == text(entry, f"{A}published")
    assert text(entry, f"{A}author/{A}name") == "Liberty Plaza GA"
    assert text(entry, f"{A}author/{A}uri") == ctx.urls.actor("libertyplaza")
    content = entry.find(f"{A}content")
    assert content is not None and content.get("type") == "html"
    assert content.text == first.communique.content_html
    assert content.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert [c.get("term") for c in entry.findall(f"{A}category")] == ["OWS", "WinterPlan"]
    assert links(entry)["enclosure"] == [
        {
            "rel": "enclosure",
            "type": "image/jpeg",
            "length": "2048",
            "href": f"{base}/media/{photo}",
            "title": "the plan",
        },
        {
            "rel": "enclosure",
            "type": "application/pdf",
            "length": "4096",
            "href": f"{base}/media/{agenda}",
            "title": "a.pdf",
        },
    ]
    # The HTML is escaped once in the document, not wrapped in CDATA nor double-escaped.
    assert b"&lt;strong&gt;winter plan&lt;/strong&gt; &amp;amp; more" in body
    assert hidden.url.encode() not in body and gone.url.encode() not in body

    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "InterOcc"
    assert parsed.feed.link == f"{base}/"
    assert [e.id for e in parsed.entries] == [second.url, first.url]
    reader = parsed.entries[1]
    assert reader.link == first.url
    assert reader.title == "First: the winter plan & more. #OWS #WinterPlan"
    assert reader.author == "Liberty Plaza GA"
    assert reader.content[0].type == "text/html"
    assert "<strong>winter plan</strong>" in reader.content[0].value
    assert [t.term for t in reader.tags] == ["OWS", "WinterPlan"]
    assert [(e.href, e.type, e.length) for e in reader.enclosures] == [
        (f"{base}/media/{photo}", "image/jpeg", "2048"),
        (f"{base}/media/{agenda}", "application/pdf", "4096"),
    ]
    assert reader.published_parsed[:3] == first.communique.published_at.timetuple()[:3]
    assert parsed.entries[0].content[0].language == "es"


async def test_assembly_feed_has_its_own_communiques_and_profile(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga", name="Oscar Grant Plaza GA", summary="Occupy Oakland.")
    await approved_assembly(ctx, "other")
    ours = await post(ctx, "ga", "Ours.")
    await post(ctx, "other", "Theirs.")
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Assembly).where(Assembly.handle == "ga").values(icon_url="/media/icon.png")
        )
    edited_at = ctx.clock() + timedelta(hours=1)
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Communique)
            .where(Communique.id == ours.communique.id)
            .values(updated_at=edited_at, summary="a content warning")
        )

    root, body = await get_feed(web, "/actors/ga/feed.atom")
    self_url = ctx.urls.actor("ga") + "/feed.atom"
    assert text(root, f"{A}id") == self_url
    assert text(root, f"{A}title") == "Oscar Grant Plaza GA"
    assert text(root, f"{A}subtitle") == "Occupy Oakland."
    assert text(root, f"{A}icon") == f"{ctx.urls.base}/media/icon.png"
    assert links(root)["self"][0]["href"] == self_url
    assert links(root)["alternate"][0]["href"] == ctx.urls.actor("ga")
    assert text(root, f"{A}author/{A}uri") == ctx.urls.actor("ga")
    entries = root.findall(f"{A}entry")
    assert [text(e, f"{A}id") for e in entries] == [ours.url]
    assert text(entries[0], f"{A}title") == "a content warning"
    assert parse_time(text(entries[0], f"{A}updated")) == edited_at.replace(microsecond=0)
    assert text(root, f"{A}updated") == text(entries[0], f"{A}updated")

    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.feed.title == "Oscar Grant Plaza GA"
    assert [e.link for e in parsed.entries] == [ours.url]


async def test_feeds_carry_the_fifty_latest(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "ga")
    async with ctx.sessions() as session, session.begin():
        assembly_id = (await assemblies.get(session, "ga")).id
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for n in range(55):
            session.add(
                Communique(
                    public_id=f"bulk{n:04d}",
                    assembly_id=assembly_id,
                    source=f"n{n}",
                    content_html=f"<p>n{n}</p>",
                    published_at=start + timedelta(minutes=n),
                )
            )
    for path in ("/feed.atom", "/actors/ga/feed.atom"):
        root, _ = await get_feed(web, path)
        ids = [text(e, f"{A}id") for e in root.findall(f"{A}entry")]
        assert ids == [ctx.urls.communique("ga", f"bulk{n:04d}") for n in range(54, 4, -1)]


async def test_an_empty_feed_is_still_valid(ctx: Context, web: httpx.AsyncClient) -> None:
    root, body = await get_feed(web, "/feed.atom")
    assert root.findall(f"{A}entry") == []
    parse_time(text(root, f"{A}updated"))
    assert not feedparser.parse(body).bozo


async def test_feeds_of_assemblies_not_public_are_404_or_410(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    await post(ctx, "ga", "Before.")
    assert (await web.get("/actors/nobody/feed.atom")).status_code == 404
    for status, code in [
        (AssemblyStatus.PENDING, 404),
        (AssemblyStatus.REJECTED, 404),
        (AssemblyStatus.SUSPENDED, 410),
    ]:
        await set_status(ctx, "ga", status)
        response = await web.get("/actors/ga/feed.atom")
        assert response.status_code == code, status
        assert b"Before." not in response.content
        assert b"Before." not in (await web.get("/feed.atom")).content


async def test_characters_xml_cannot_hold_are_dropped(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "placeholder")
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Communique)
            .where(Communique.id == published.communique.id)
            .values(content_html="<p>bell\x07 form\x0cfeed ]]> &amp; done</p>", summary="cw\x01")
        )
    root, body = await get_feed(web, "/feed.atom")
    entry = root.find(f"{A}entry")
    assert entry is not None
    assert text(entry, f"{A}content") == "<p>bell formfeed ]]> &amp; done</p>"
    assert text(entry, f"{A}title") == "cw"
    assert not feedparser.parse(body).bozo


async def test_an_unchanged_feed_answers_304(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "ga")
    await post(ctx, "ga", "One.")
    first = await web.get("/actors/ga/feed.atom")
    etag = first.headers["etag"]
    again = await web.get("/actors/ga/feed.atom", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    await post(ctx, "ga", "Two.")
    changed = await web.get("/actors/ga/feed.atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


@pytest.mark.e2e
async def test_feeds_over_loopback_are_discoverable_from_the_pages(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ga", name="Loopback GA")
    published = await post(ctx, "ga", "Over real HTTP.")
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as http:
        page = (await http.get("/actors/ga", headers={"Accept": "text/html"})).text
        assert 'href="/feed.atom"' in page
        assert f'href="{ctx.urls.actor("ga")}/feed.atom"' in page
        response = await http.get(f"{ctx.urls.actor('ga')}/feed.atom")
        assert response.headers["content-type"] == ATOM_TYPE
        parsed = feedparser.parse(response.content)
        assert not parsed.bozo
        assert [e.link for e in parsed.entries] == [published.url]


def test_build_atom_is_a_pure_function_of_its_values() -> None:
    moment = datetime(2026, 11, 22, 18, 30, tzinfo=UTC)
    entry = Entry(
        id="https://a.example/actors/ga/communiques/x1",
        url="https://a.example/actors/ga/communiques/x1",
        title='Title with <tags> & "quotes"',
        published=moment,
        updated=moment + timedelta(minutes=5),
        author_name="GA",
        author_uri="https://a.example/actors/ga",
        content_html="<p>Hello &amp; welcome</p>",
        language="pt-BR",
        categories=["Tag"],
        enclosures=[Enclosure("https://a.example/media/f.jpg", "image/jpeg", 10, "alt")],
    )
    feed = Feed(
        id="https://a.example/feed.atom",
        title="A",
        self_url="https://a.example/feed.atom",
        alternate_url="https://a.example/",
        author_name="A",
        author_uri="https://a.example/",
        updated=moment - timedelta(days=1),
        entries=[entry],
    )
    body = build_atom(feed)
    assert body == build_atom(feed)
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<feed xmlns=")
    root = ET.fromstring(body)
    assert text(root, f"{A}updated") == "2026-11-22T18:35:00Z"  # the newest entry's
    item = root.find(f"{A}entry")
    assert item is not None
    assert text(item, f"{A}title") == 'Title with <tags> & "quotes"'
    assert text(item, f"{A}published") == "2026-11-22T18:30:00Z"
    assert text(item, f"{A}content") == "<p>Hello &amp; welcome</p>"
    assert b'xml:lang="pt-BR"' in body
    assert b"<subtitle" not in body and b"<icon" not in body  # left out when empty
