"""Tag pages: ``/tags/{name}`` lists this instance's communiqués carrying a hashtag, and
``/tags/{name}.atom`` is their feed.

As Mastodon has them: tags compare without regard to case (a communiqué's #GeneralStrike is
on /tags/generalstrike, where its link and its Note's Hashtag href lead); a tag no
communiqué here ever carried is 404, a tag once carried has a page even when nothing is left
on it. Only what the assembly pages show is listed: communiqués not deleted, of approved
assemblies (moved and non-discoverable ones included, as their own pages list them).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import quote
from xml.etree import ElementTree as ET

import feedparser
import httpx
import pytest
from sqlalchemy import update
from starlette.routing import Match, Route

from server import assemblies, communiques
from server.app import create_app
from server.config import Settings
from server.content import tag_name
from server.context import Context
from server.models import Assembly, AssemblyStatus
from server.web import feeds
from tests.helpers import approved_assembly, post
from tests.test_web_public import BROWSER, add_assembly, assert_no_inline_code, set_communique

A = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
async def web(settings: Settings, ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, ctx=ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, headers={"Accept": BROWSER}
        ) as client:
            yield client


def listed(page: str) -> list[str]:
    """The texts of the communiqués a tag page lists, in order ("Number 3." …)."""
    return re.findall(r"<p>([^<]*?)(?: <a [^>]*class=\"mention hashtag\")", page)


def permalinks(page: str) -> list[str]:
    return re.findall(r'<a class="permalink" href="([^"]+)"', page)


async def set_assembly(ctx: Context, handle: str, **values: object) -> None:
    async with ctx.sessions() as session, session.begin():
        await session.execute(update(Assembly).where(Assembly.handle == handle).values(**values))


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("GeneralStrike", "generalstrike"),
        ("general_strike", "general_strike"),
        ("Ökologie", "ökologie"),
        ("ocupa2011", "ocupa2011"),
        ("x" * 64, "x" * 64),
    ],
)
def test_a_tag_name_is_looked_up_in_lower_case(raw: str, name: str) -> None:
    assert tag_name(raw) == name


@pytest.mark.parametrize(
    "raw", ["", "2011", "x" * 65, "general.strike", "general-strike", "a b", "tag%00", "#tag"]
)
def test_what_no_hashtag_can_be_is_refused(raw: str) -> None:
    assert tag_name(raw) is None


# --- the page -----------------------------------------------------------------------------


async def test_a_tag_page_lists_the_tagged_communiques_of_every_assembly_newest_first(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza General Assembly")
    await approved_assembly(ctx, "oakland", name="Occupy Oakland")
    first = await post(ctx, "libertyplaza", "Number 1. #GeneralStrike")
    await post(ctx, "libertyplaza", "Untagged, or another tag. #Solidarity")
    second = await post(ctx, "oakland", "Number 2. #generalstrike")
    third = await post(ctx, "libertyplaza", "Number 3. #GENERALSTRIKE")

    response = await web.get("/tags/generalstrike")
    assert response.status_code == 200
    page = response.text
    assert listed(page) == ["Number 3.", "Number 2.", "Number 1."]
    assert permalinks(page) == [third.url, second.url, first.url]
    # Each with its assembly: name, handle and page.
    assert "Occupy Oakland" in page and f"@oakland@{ctx.urls.host}" in page
    assert f'href="{ctx.urls.actor("libertyplaza")}"' in page
    # The heading spells the tag as the newest communiqué does.
    assert '<h1 class="tag-title">#GENERALSTRIKE</h1>' in page
    assert "3 communiqués" in page
    assert "Untagged" not in page
    feed = [link for link in re.findall(r"<link [^>]+>", page) if "application/atom+xml" in link]
    assert any(f'href="{ctx.urls.tag("generalstrike")}.atom"' in link for link in feed)
    assert_no_inline_code(page)
    # Any case in the URL finds the same page.
    assert listed((await web.get("/tags/GeneralStrike")).text) == listed(page)


async def test_the_hashtag_links_lead_to_the_tag_page(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza")
    published = await post(ctx, "libertyplaza", "March with us. #GeneralStrike")
    # The link in the text, and the Hashtag's href in the Note Mastodon receives.
    link = re.search(
        r'<a href="([^"]+)" class="mention hashtag"', published.communique.content_html
    )
    assert link is not None
    async with ctx.sessions() as session:
        assembly = await assemblies.get(session, "libertyplaza")
        note = await communiques.note_of(session, ctx.urls, assembly, published.communique)
    hrefs = [t["href"] for t in note["tag"] if t["type"] == "Hashtag"]
    assert hrefs == [link.group(1)] == [ctx.urls.tag("GeneralStrike")]
    response = await web.get(hrefs[0].removeprefix(ctx.urls.base))
    assert response.status_code == 200
    assert published.url in response.text


async def test_only_what_the_assembly_pages_show_is_listed(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "shown")
    await approved_assembly(ctx, "unlisted")
    await approved_assembly(ctx, "moved")
    await approved_assembly(ctx, "suspended")
    kept = await post(ctx, "shown", "Shown. #Occupy")
    deleted = await post(ctx, "shown", "Deleted. #Occupy")
    unlisted = await post(ctx, "unlisted", "Not in the directory. #Occupy")
    moved = await post(ctx, "moved", "Before the move. #Occupy")
    hidden = await post(ctx, "suspended", "Suspended since. #Occupy")
    await set_communique(ctx, deleted.communique.id, deleted_at=ctx.clock())
    await set_assembly(ctx, "unlisted", discoverable=False)
    await set_assembly(ctx, "moved", moved_to="https://elsewhere.example/actors/moved")
    await set_assembly(ctx, "suspended", status=AssemblyStatus.SUSPENDED)
    await add_assembly(ctx, "waiting", status=AssemblyStatus.PENDING)

    page = (await web.get("/tags/occupy")).text
    assert permalinks(page) == [moved.url, unlisted.url, kept.url]
    assert deleted.url not in page and hidden.url not in page


async def test_twenty_a_page_like_an_assembly_page(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "ga")
    for n in range(1, 46):
        await post(ctx, "ga", f"Number {n}. #Paging")

    def numbers(page: str) -> list[int]:
        return [int(n) for n in re.findall(r"Number (\d+)\.", page)]

    first = (await web.get("/tags/paging")).text
    assert numbers(first) == list(range(45, 25, -1))
    assert 'href="/tags/paging?page=2" rel="next">Older' in first
    second = (await web.get("/tags/paging?page=2")).text
    assert numbers(second) == list(range(25, 5, -1))
    assert 'href="/tags/paging" rel="prev">' in second
    third = (await web.get("/tags/paging?page=3")).text
    assert numbers(third) == [5, 4, 3, 2, 1]
    assert (await web.get("/tags/paging?page=4")).status_code == 404
    assert (await web.get("/tags/paging?page=0")).status_code == 400
    assert (await web.get("/tags/paging?page=x")).status_code == 400


async def test_an_unknown_tag_is_404_and_a_forgotten_one_an_empty_page(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Soon deleted. #Ephemeral")
    await set_communique(ctx, published.communique.id, deleted_at=ctx.clock())

    unknown = await web.get("/tags/neverused")
    assert unknown.status_code == 404
    assert "No communiqué here was ever tagged #neverused." in unknown.text
    assert (await web.get("/tags/neverused.atom")).status_code == 404

    # Mastodon keeps a tag once used: its page is there, with nothing on it.
    empty = await web.get("/tags/ephemeral")
    assert empty.status_code == 200
    assert "No communiqué carries #ephemeral right now." in empty.text
    assert "Soon deleted." not in empty.text
    assert_no_inline_code(empty.text)


@pytest.mark.parametrize(
    "path",
    [
        "/tags/" + "x" * 65,
        "/tags/general.strike",
        "/tags/general-strike",
        "/tags/2011",
        "/tags/%00",
        "/tags/a%20b",
        "/tags/" + quote("<script>"),
    ],
)
async def test_names_no_hashtag_can_have_are_404(
    ctx: Context, web: httpx.AsyncClient, path: str
) -> None:
    response = await web.get(path)
    assert response.status_code == 404
    assert "<script>" not in response.text


async def test_underscores_and_percent_signs_are_not_wildcards(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    exact = await post(ctx, "ga", "Exact. #general_strike")
    await post(ctx, "ga", "Lookalike. #generalXstrike")
    page = (await web.get("/tags/general_strike")).text
    assert permalinks(page) == [exact.url]
    assert (await web.get("/tags/general%5Fstrike")).status_code == 200
    assert (await web.get("/tags/generalxstrike")).status_code == 200
    assert "Exact." not in (await web.get("/tags/generalxstrike")).text


async def test_tags_beyond_ascii_compare_without_regard_to_case(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    upper = await post(ctx, "ga", "Capital. #Ökologie")
    lower = await post(ctx, "ga", "Small. #ökologie")
    await post(ctx, "ga", "Another letter. #Äkologie")
    grève = await post(ctx, "ga", "Strike. #GRÈVE")
    await post(ctx, "ga", "Not the same word. #grêve")

    page = (await web.get("/tags/" + quote("ökologie"))).text
    assert permalinks(page) == [lower.url, upper.url]
    assert "2 communiqués" in page
    # The Hashtag href of the capitalised one leads here too.
    assert ctx.urls.tag("Ökologie") == ctx.urls.tag("ökologie")
    page = (await web.get("/tags/" + quote("Grève"))).text
    assert permalinks(page) == [grève.url]
    assert '<h1 class="tag-title">#GRÈVE</h1>' in page
    assert (await web.get("/tags/" + quote("äkologie") + ".atom")).status_code == 200


# --- the feed -----------------------------------------------------------------------------


async def test_a_tags_atom_feed_has_its_communiques(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza General Assembly")
    await approved_assembly(ctx, "oakland", name="Occupy Oakland")
    first = await post(ctx, "libertyplaza", "**Strike** on Thursday. #GeneralStrike")
    second = await post(ctx, "oakland", "Oakland joins. #generalstrike")
    await post(ctx, "oakland", "Something else. #Port")

    response = await web.get("/tags/GeneralStrike.atom")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.findtext(f"{A}id") == ctx.urls.tag("generalstrike") + ".atom"
    assert "#generalstrike" in (root.findtext(f"{A}title") or "")
    alternate = [link.get("href") for link in root.findall(f"{A}link[@rel='alternate']")]
    assert alternate == [ctx.urls.tag("generalstrike")]
    entries = root.findall(f"{A}entry")
    assert [e.findtext(f"{A}id") for e in entries] == [second.url, first.url]
    assert [e.findtext(f"{A}author/{A}name") for e in entries] == [
        "Occupy Oakland",
        "Liberty Plaza General Assembly",
    ]
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert "<strong>Strike</strong>" in parsed.entries[1].content[0].value
    # The page names its feed; an unchanged feed answers 304.
    again = await web.get(
        "/tags/generalstrike.atom", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304


def test_the_tag_feed_route_comes_before_the_page_route() -> None:
    scope = {"type": "http", "path": "/tags/occupy.atom", "method": "GET", "root_path": ""}
    matching = [
        r for r in feeds.routes if isinstance(r, Route) and r.matches(scope)[0] is Match.FULL
    ]
    assert matching[0].endpoint is feeds.tag_feed
