"""The public pages: directory and search, /about, an assembly's page, a communiqué's permalink.

Most tests drive the app in process (httpx.ASGITransport, with its lifespan run); the
content-negotiation ones fetch over real loopback HTTP from the ``server`` fixture. Rows the
pages only read (attachments, followers, content warnings) are written straight to the
database, so each test shows exactly what it sets up.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from html.parser import HTMLParser
from itertools import count as counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from server import accounts, assemblies, communiques, instance
from server.app import create_app
from server.config import Settings
from server.context import Context
from server.models import (
    Assembly,
    AssemblyStatus,
    Communique,
    Follower,
    FollowerStatus,
    Media,
    MediaPurpose,
    RemoteActor,
)
from server.web.public import excerpt, plain_text
from server.web.session import cookie_name
from tests.helpers import approved_assembly, post
from tests.helpers_web import add_member, create_user
from tests.support.servers import ServerThread

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
AP_JSON = "application/activity+json"
PEM = "-----BEGIN PUBLIC KEY-----\nnot a real key\n-----END PUBLIC KEY-----\n"
_ids = counter(1)


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
async def web(settings: Settings, ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    """A browser talking to the app in process."""
    app = create_app(settings, ctx=ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, headers={"Accept": BROWSER}
        ) as client:
            yield client


async def add_assembly(
    ctx: Context,
    handle: str,
    *,
    name: str | None = None,
    status: AssemblyStatus = AssemblyStatus.APPROVED,
    place: str = "",
    languages: Sequence[str] = (),
    summary: str = "",
    discoverable: bool = True,
    icon_url: str | None = None,
    header_url: str | None = None,
) -> int:
    """An assembly row as the directory reads it (no key pair needed for HTML pages)."""
    async with ctx.sessions() as session, session.begin():
        assembly = Assembly(
            handle=handle,
            name=name or handle.replace("_", " ").title(),
            summary=summary,
            status=status,
            place=place,
            languages=list(languages),
            discoverable=discoverable,
            icon_url=icon_url,
            header_url=header_url,
            private_key_pem="unused",
            public_key_pem=PEM,
            approved_at=ctx.clock(),
        )
        session.add(assembly)
        await session.flush()
        return assembly.id


async def add_followers(ctx: Context, assembly_id: int, n: int, *, pending: int = 0) -> None:
    async with ctx.sessions() as session, session.begin():
        for i in range(n + pending):
            k = next(_ids)
            actor = RemoteActor(
                uri=f"https://peer.example/users/u{k}",
                domain="peer.example",
                preferred_username=f"u{k}",
                inbox_uri=f"https://peer.example/users/u{k}/inbox",
            )
            session.add(actor)
            await session.flush()
            session.add(
                Follower(
                    assembly_id=assembly_id,
                    actor_id=actor.id,
                    follow_uri=f"https://peer.example/follows/{k}",
                    status=FollowerStatus.ACCEPTED if i < n else FollowerStatus.PENDING,
                )
            )


async def add_media(
    ctx: Context,
    communique_id: int,
    *,
    media_type: str = "image/png",
    position: int = 0,
    alt_text: str = "",
    original_name: str = "",
    width: int | None = 640,
    height: int | None = 480,
    purpose: MediaPurpose = MediaPurpose.ATTACHMENT,
    size: int = 12345,
) -> str:
    """A Media row attached to a communiqué; returns its file name."""
    k = next(_ids)
    extension = "pdf" if media_type == "application/pdf" else "png"
    file_name = f"file{k:012d}abcdef.{extension}"
    async with ctx.sessions() as session, session.begin():
        communique = await session.get(Communique, communique_id)
        assert communique is not None
        session.add(
            Media(
                public_id=f"media{k:012d}",
                assembly_id=communique.assembly_id,
                communique_id=communique_id,
                purpose=purpose,
                position=position,
                media_type=media_type,
                file_name=file_name,
                original_name=original_name,
                size=size,
                width=width if extension == "png" else None,
                height=height if extension == "png" else None,
                alt_text=alt_text,
                sha256="0" * 64,
            )
        )
    return file_name


async def set_communique(ctx: Context, communique_id: int, **values: object) -> None:
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Communique).where(Communique.id == communique_id).values(**values)
        )


async def sign_in(ctx: Context, settings: Settings, client: httpx.AsyncClient, email: str) -> int:
    """An account signed in on ``client`` through a session cookie; returns its id."""
    user_id = await create_user(ctx, email)
    async with ctx.sessions() as session, session.begin():
        user = await accounts.find_by_email(session, email)
        assert user is not None
        token = await accounts.start_session(
            session, user, now=ctx.clock(), lifetime=timedelta(hours=1)
        )
    client.cookies.set(cookie_name(settings, "session"), token)
    return user_id


def card_names(page: str) -> list[str]:
    """The assembly names on the directory, in order."""
    return re.findall(r'<h3><a href="[^"]+">([^<]+)</a></h3>', page)


class _Meta(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "meta" and ("property" in a or "name" in a):
            self.meta[a.get("property") or a["name"]] = a.get("content", "")
        if tag == "link":
            self.links.append(a)


def head_of(page: str) -> _Meta:
    parser = _Meta()
    parser.feed(page)
    return parser


def assert_no_inline_code(page: str) -> None:
    """Our CSP forbids inline script and style: none may be written in the first place."""
    for tag in re.findall(r"<script\b[^>]*>", page, re.I):
        assert re.search(r'\ssrc="/static/[^"]+"', tag), f"inline script: {tag}"
    assert "<style" not in page.lower()
    assert not re.search(r"\sstyle\s*=", page, re.I), "inline style attribute"
    assert not re.search(r"\son[a-z]+\s*=", page, re.I), "inline event handler"
    assert "javascript:" not in page.lower()


# --- the directory ----------------------------------------------------------------------


async def test_directory_lists_approved_discoverable_assemblies_with_their_details(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    listed = await add_assembly(
        ctx,
        "libertyplaza",
        name="Liberty Plaza General Assembly",
        place="New York City",
        languages=["en", "es"],
        summary="The people's assembly of Liberty Plaza. " + "We meet every evening. " * 20,
        icon_url="https://cdn.example/lp.png",
    )
    await add_followers(ctx, listed, 3, pending=2)
    await add_assembly(ctx, "waiting", name="Waiting Assembly", status=AssemblyStatus.PENDING)
    await add_assembly(ctx, "stopped", name="Stopped Assembly", status=AssemblyStatus.SUSPENDED)
    await add_assembly(ctx, "refused", name="Refused Assembly", status=AssemblyStatus.REJECTED)
    await add_assembly(ctx, "hidden", name="Hidden Assembly", discoverable=False)

    response = await web.get("/")
    assert response.status_code == 200
    page = response.text
    assert card_names(page) == ["Liberty Plaza General Assembly"]
    assert f"@libertyplaza@{ctx.urls.host}" in page
    assert f'href="{ctx.urls.actor("libertyplaza")}"' in page
    assert "New York City" in page
    assert '<span class="lang" lang="es">es</span>' in page
    assert 'src="https://cdn.example/lp.png"' in page
    assert "3 followers" in page  # pending follow requests do not count
    assert "The people&#39;s assembly of Liberty Plaza." in page
    assert "We meet every evening. " * 20 not in page  # an excerpt, not the whole summary
    assert 'href="/about"' in page
    assert_no_inline_code(page)


async def test_an_empty_directory_says_so(ctx: Context, web: httpx.AsyncClient) -> None:
    page = (await web.get("/")).text
    assert card_names(page) == []
    assert "No assemblies here yet." in page
    assert "No assembly matches this search." in (await web.get("/", params={"q": "x"})).text


async def test_search_matches_name_handle_and_summary_without_regard_to_case(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await add_assembly(ctx, "libertyplaza", name="Liberty Plaza General Assembly")
    await add_assembly(ctx, "oscargrant", name="Oscar Grant Plaza GA")
    await add_assembly(ctx, "housing_wg", name="Housing Working Group", summary="Tenants unite")
    await add_assembly(ctx, "pct", name="100% Assembly")

    async def names(**params: str) -> list[str]:
        response = await web.get("/", params=params)
        assert response.status_code == 200
        return card_names(response.text)

    assert await names(q="LIBERTY") == ["Liberty Plaza General Assembly"]
    assert await names(q="plaza") == ["Liberty Plaza General Assembly", "Oscar Grant Plaza GA"]
    assert await names(q="@oscargrant") == ["Oscar Grant Plaza GA"]
    assert await names(q="TENANTS") == ["Housing Working Group"]
    # LIKE wildcards typed by a visitor are searched for literally.
    assert await names(q="%") == ["100% Assembly"]
    assert await names(q="_") == ["Housing Working Group"]  # only handle with an underscore
    page = (await web.get("/", params={"q": "nowhere"})).text
    assert card_names(page) == [] and "No assembly matches this search." in page
    assert 'value="nowhere"' in page  # the form keeps what was typed


async def test_search_by_place_and_language_combined(ctx: Context, web: httpx.AsyncClient) -> None:
    await add_assembly(ctx, "nyc", name="NYC GA", place="New York City", languages=["en", "es"])
    await add_assembly(ctx, "cdmx", name="CDMX GA", place="Ciudad de México", languages=["es-MX"])
    await add_assembly(ctx, "tallinn", name="Tallinn GA", place="Tallinn", languages=["et"])
    await add_assembly(ctx, "berlin", name="Berlin GA", place="Berlin", languages=["de", "EN"])
    await add_assembly(ctx, "york", name="York GA", place="York", languages=["en"])

    async def names(**params: str) -> list[str]:
        response = await web.get("/", params=params)
        assert response.status_code == 200
        return card_names(response.text)

    assert await names(place="york") == ["NYC GA", "York GA"]
    assert await names(place="new york") == ["NYC GA"]
    assert await names(language="es") == ["CDMX GA", "NYC GA"]  # es matches es-MX too
    assert await names(language="ES") == ["CDMX GA", "NYC GA"]
    assert await names(language="e") == []  # a code, not a prefix of one
    assert await names(language="es-mx") == ["CDMX GA"]
    assert await names(language="en") == ["Berlin GA", "NYC GA", "York GA"]
    assert await names(language="en", place="york") == ["NYC GA", "York GA"]
    assert await names(language="es", place="york", q="nyc") == ["NYC GA"]
    assert await names(language='es"%') == []  # not a language code: matches nothing
    page = (await web.get("/")).text
    for code in ("de", "en", "es", "es-mx", "et"):
        assert f'<option value="{code}">{code}</option>' in page


async def test_directory_pages_keep_the_search(ctx: Context, web: httpx.AsyncClient) -> None:
    for i in range(30):
        await add_assembly(ctx, f"ga{i:02d}", name=f"Assembly {i:02d}", place="Oakland")
    first = (await web.get("/", params={"place": "oakland"})).text
    assert card_names(first) == [f"Assembly {i:02d}" for i in range(24)]
    assert '<a href="/?place=oakland&amp;page=2" rel="next">' in first
    second = (await web.get("/", params={"place": "oakland", "page": "2"})).text
    assert card_names(second) == [f"Assembly {i:02d}" for i in range(24, 30)]
    assert '<a href="/?place=oakland" rel="prev">' in second
    assert 'rel="next"' not in second
    assert (await web.get("/", params={"page": "3"})).status_code == 404


async def test_a_bad_page_number_is_a_400_not_a_500(ctx: Context, web: httpx.AsyncClient) -> None:
    await add_assembly(ctx, "libertyplaza")
    for page in ["0", "-1", "abc", "1.5", "２", "99999999999", "1e3", "1&page=2"]:
        for path in ("/", "/actors/libertyplaza"):
            response = await web.get(path, params={"page": page})
            assert response.status_code == 400, (path, page)
            assert "page must be a positive number" in response.text.lower()
    assert (await web.get("/", params={"page": "1"})).status_code == 200
    assert (await web.get("/actors/libertyplaza", params={"page": ""})).status_code == 200


# --- /about -----------------------------------------------------------------------------


async def test_about_shows_the_description_and_rules_escaped(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    async with ctx.sessions() as session, session.begin():
        await instance.save(
            session,
            name="Assemblies of the Bay",
            description="We host <b>assemblies</b>.\n\nSecond paragraph.",
            rules="Be kind.\n\n  No doxxing <script>alert(1)</script>  \n",
            registration_mode="open",
            follow_approval=False,
        )
    await add_assembly(ctx, "oscargrant")
    about = (await web.get("/about")).text
    assert "<h1>About Assemblies of the Bay</h1>" in about
    assert "<p>We host &lt;b&gt;assemblies&lt;/b&gt;.</p><p>Second paragraph.</p>" in about
    assert "<li>Be kind.</li>" in about
    assert "<li>No doxxing &lt;script&gt;alert(1)&lt;/script&gt;</li>" in about
    assert f"@oscargrant@{ctx.urls.host}" in about  # the example handle is a real one
    assert "Mastodon" in about
    assert_no_inline_code(about)
    home = (await web.get("/")).text
    assert "<p>We host &lt;b&gt;assemblies&lt;/b&gt;.</p>" in home
    assert "<title>Assemblies of the Bay</title>" in home


# --- an assembly's page -----------------------------------------------------------------


async def test_assembly_page_shows_the_profile_and_how_to_follow(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    assembly_id = await add_assembly(
        ctx,
        "libertyplaza",
        name="Liberty Plaza General Assembly",
        place="New York City",
        languages=["en", "es"],
        summary="We meet at <7pm> & decide together.",
        icon_url="/media/avatarfile0000000.png",
        header_url="https://cdn.example/header.jpg",
    )
    await add_followers(ctx, assembly_id, 2, pending=1)
    response = await web.get("/actors/libertyplaza")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    acct = f"@libertyplaza@{ctx.urls.host}"
    assert '<h1 id="assembly-name">Liberty Plaza General Assembly</h1>' in page
    assert f'<button type="button" class="copy" data-copy="{acct}" hidden>' in page
    assert f"{ctx.urls.base}/media/avatarfile0000000.png" in page  # made absolute
    assert 'src="https://cdn.example/header.jpg"' in page
    assert "<strong>2</strong> followers" in page
    assert "New York City" in page
    assert "We meet at &lt;7pm&gt; &amp; decide together." in page
    assert "Paste it into the search box of Mastodon" in page
    assert "No communiqués yet." in page
    links = {(link.get("rel"), link.get("type")): link["href"] for link in head_of(page).links}
    assert links[("alternate", AP_JSON)] == ctx.urls.actor("libertyplaza")
    atom = ("alternate", "application/atom+xml")
    assert links[atom] == ctx.urls.actor("libertyplaza") + "/feed.atom"
    assert_no_inline_code(page)


async def test_assembly_page_lists_communiques_newest_first_twenty_a_page(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga", name="Paging Assembly")
    published = [await post(ctx, "ga", f"Communiqué number {n}.") for n in range(1, 46)]
    await set_communique(ctx, published[-1].communique.id, deleted_at=ctx.clock())

    def numbers(page: str) -> list[int]:
        return [int(n) for n in re.findall(r"Communiqué number (\d+)\.", page)]

    first = (await web.get("/actors/ga")).text
    assert numbers(first) == list(range(44, 24, -1))  # 45 is deleted
    assert "<strong>44</strong> communiqués" in first
    assert 'href="/actors/ga?page=2" rel="next">Older' in first
    assert 'rel="prev"' not in first
    second = (await web.get("/actors/ga?page=2")).text
    assert numbers(second) == list(range(24, 4, -1))
    assert 'href="/actors/ga" rel="prev">' in second and "?page=3" in second
    third = (await web.get("/actors/ga?page=3")).text
    assert numbers(third) == [4, 3, 2, 1]
    assert 'rel="next"' not in third.split("<main")[1]
    assert (await web.get("/actors/ga?page=4")).status_code == 404
    # Each one links to its permalink.
    assert f'href="{published[43].url}"' in first


async def test_content_warning_hides_content_and_attachments_in_details(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Medics are at the corner of Broadway.")
    await set_communique(ctx, published.communique.id, summary="police <violence>")
    image = await add_media(ctx, published.communique.id, alt_text="the corner")
    cw = re.compile(
        r'<details class="content-warning">\s*<summary>.*?police &lt;violence&gt;.*?</summary>'
        r"(.*?)</details>",
        re.S,
    )
    for url in ("/actors/ga", published.url):
        page = (await web.get(url)).text
        found = cw.search(page)
        assert found, url
        assert "Medics are at the corner of Broadway." in found.group(1)
        assert f'src="/media/{image}"' in found.group(1)
        assert page.count("Medics are at the corner") == 1
    plain = await post(ctx, "ga", "Nothing to warn about.")
    page = (await web.get(plain.url)).text
    assert "content-warning" not in page


async def test_attachments_are_shown_in_order_images_and_pdfs(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Photos and the agenda.")
    cid = published.communique.id
    second = await add_media(ctx, cid, position=1, alt_text="A drum circle", width=800, height=600)
    pdf = await add_media(
        ctx,
        cid,
        position=2,
        media_type="application/pdf",
        original_name="agenda <sunday>.pdf",
        size=48_000,
    )
    first = await add_media(ctx, cid, position=0, alt_text='Marchers "crossing" Foley Square')
    stray = await add_media(ctx, cid, position=3, purpose=MediaPurpose.AVATAR)

    for url in ("/actors/ga", published.url):
        page = (await web.get(url)).text
        assert (
            f'<img src="/media/{first}" alt="Marchers &#34;crossing&#34; Foley Square" '
            'width="640" height="480"' in page
        )
        assert f'<img src="/media/{second}" alt="A drum circle" width="800" height="600"' in page
        assert page.index(first) < page.index(second) < page.index(pdf)
        assert f'<a href="/media/{pdf}" type="application/pdf">' in page
        assert "agenda &lt;sunday&gt;.pdf" in page
        assert "48.0 kB" in page
        assert stray not in page  # only attachments, not other media of the communiqué


async def test_pending_rejected_and_suspended_assemblies_have_no_pages(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Before the suspension.")
    await add_assembly(ctx, "waiting", status=AssemblyStatus.PENDING)
    await add_assembly(ctx, "refused", status=AssemblyStatus.REJECTED)
    assert (await web.get("/actors/waiting")).status_code == 404
    assert (await web.get("/actors/refused")).status_code == 404
    assert (await web.get("/actors/nobody")).status_code == 404
    assert (await web.get("/actors/Not%20A%20Handle")).status_code == 404
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Assembly)
            .where(Assembly.handle == "ga")
            .values(status=AssemblyStatus.SUSPENDED, suspended_at=ctx.clock())
        )
    gone = await web.get("/actors/ga")
    assert gone.status_code == 410
    assert "this assembly is suspended" in gone.text.lower()
    assert_no_inline_code(gone.text)
    assert (await web.get(published.url)).status_code == 410


async def test_a_deleted_communique_is_gone(ctx: Context, web: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Soon deleted.")
    await set_communique(ctx, published.communique.id, deleted_at=ctx.clock())
    response = await web.get(published.url)
    assert response.status_code == 410
    assert "Soon deleted." not in response.text
    assert "Soon deleted." not in (await web.get("/actors/ga")).text


# --- a communiqué's permalink -----------------------------------------------------------


async def test_permalink_has_opengraph_and_twitter_tags(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga", name="Liberty Plaza General Assembly")
    text = "The **General Assembly** reached <consensus> on the winter plan. " + "More. " * 60
    published = await post(ctx, "ga", text)
    cid = published.communique.id
    pdf = await add_media(ctx, cid, position=0, media_type="application/pdf")
    later = await add_media(ctx, cid, position=2, alt_text="second")
    image = await add_media(ctx, cid, position=1, alt_text="the kitchen")
    page = (await web.get(published.url)).text
    meta = head_of(page).meta

    assert meta["og:type"] == "article"
    assert meta["og:title"] == "Liberty Plaza General Assembly"
    assert meta["og:url"] == published.url
    assert meta["og:site_name"] == "InterOcc"
    assert meta["og:image"] == f"{ctx.urls.base}/media/{image}"  # the first *image*
    assert meta["og:image:alt"] == "the kitchen"
    assert pdf not in meta["og:image"] and later not in meta["og:image"]
    published_at = published.communique.published_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert meta["article:published_time"] == published_at
    description = meta["og:description"]
    assert description.startswith(
        "The General Assembly reached <consensus> on the winter plan. More."
    )
    assert len(description) <= 200 and description.endswith("…")
    assert "<" not in description.replace("<consensus>", "")
    assert meta["twitter:card"] == "summary_large_image"
    assert meta["twitter:description"] == description
    assert meta["twitter:image"] == meta["og:image"]
    links = {(link.get("rel"), link.get("type")): link["href"] for link in head_of(page).links}
    assert links[("alternate", AP_JSON)] == published.url
    assert_no_inline_code(page)


async def test_permalink_image_falls_back_to_the_avatar_and_a_warning_hides_the_text(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await add_assembly(ctx, "ga", icon_url="/media/avatar00000000000.png")
    published = await post(ctx, "ga", "The secret plan is in the kitchen.")
    await set_communique(ctx, published.communique.id, summary="spoilers")
    meta = head_of((await web.get(published.url)).text).meta
    assert meta["og:image"] == f"{ctx.urls.base}/media/avatar00000000000.png"
    assert meta["twitter:card"] == "summary"
    assert meta["og:description"] == "Content warning: spoilers"
    assert "kitchen" not in meta["description"]


async def test_permalink_shows_byline_edit_date_and_replies(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga", name="Oscar Grant Plaza GA")
    published = await post(ctx, "ga", "General strike on the 2nd. #GeneralStrike")
    await set_communique(ctx, published.communique.id, updated_at=ctx.clock())
    async with ctx.sessions() as session, session.begin():
        session.add(
            RemoteActor(
                uri="https://mastodon.example/users/dana",
                domain="mastodon.example",
                preferred_username="dana",
                name="Dana <Rivers>",
                inbox_uri="https://mastodon.example/users/dana/inbox",
            )
        )
    from server.models import Reply

    async with ctx.sessions() as session, session.begin():
        for n, actor in enumerate(
            ["https://mastodon.example/users/dana", "https://unknown.example/a/z"]
        ):
            session.add(
                Reply(
                    uri=f"https://x.example/replies/{n}",
                    communique_id=published.communique.id,
                    actor_uri=actor,
                    content_html=f"<p>Reply number {n}</p>",
                    published_at=ctx.clock(),
                    document={},
                )
            )
    page = (await web.get(published.url)).text
    assert '<a href="' + ctx.urls.actor("ga") + '">Oscar Grant Plaza GA</a>' in page
    assert f"@ga@{ctx.urls.host}" in page
    assert "· edited <time" in page
    assert "Dana &lt;Rivers&gt; (@dana@mastodon.example)" in page
    assert ">https://unknown.example/a/z</a>" in page
    assert page.index("Reply number 0") < page.index("Reply number 1")
    assert 'class="mention hashtag"' in page
    assert_no_inline_code(page)


async def test_only_members_see_edit_and_delete(
    ctx: Context, settings: Settings, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    await approved_assembly(ctx, "other")
    published = await post(ctx, "ga", "Our communiqué.")
    public_id = published.communique.public_id
    edit = f'href="/manage/ga/communiques/{public_id}/edit"'
    delete = f'action="/manage/ga/communiques/{public_id}/delete"'

    anonymous = (await web.get(published.url)).text
    assert edit not in anonymous and delete not in anonymous

    outsider = await sign_in(ctx, settings, web, "outsider@example.org")
    await add_member(ctx, outsider, "other")
    page = (await web.get(published.url)).text
    assert "Log out" in page
    assert edit not in page and delete not in page

    member = await sign_in(ctx, settings, web, "facilitator@example.org")
    await add_member(ctx, member, "ga")
    page = (await web.get(published.url)).text
    assert edit in page
    form = re.search(rf'<form method="post" {re.escape(delete)}.*?</form>', page, re.S)
    assert form, "no delete form"
    assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]{20,}">', form.group(0))
    # Without script the delete button sits behind a <details> "Delete…" step.
    assert re.search(r'<details class="confirm">\s*<summary[^>]*>Delete…</summary>', page)
    assert_no_inline_code(page)


# --- one URL, two faces -----------------------------------------------------------------


@pytest.mark.e2e
async def test_the_same_urls_answer_html_to_browsers_and_as2_to_servers(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ga", name="Negotiating Assembly")
    published = await post(ctx, "ga", "One URL, two faces.")
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        for url in (ctx.urls.actor("ga"), published.url):
            page = await http.get(url, headers={"Accept": BROWSER})
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "Accept" in page.headers["vary"]
            assert "Negotiating Assembly" in page.text
            assert_no_inline_code(page.text)

            doc = await http.get(url, headers={"Accept": AP_JSON})
            assert doc.status_code == 200
            assert doc.headers["content-type"].startswith(AP_JSON)
            assert "Accept" in doc.headers["vary"]
            assert doc.json()["id"] == url
        assert (await http.get(published.url, headers={"Accept": AP_JSON})).json()[
            "content"
        ] == "<p>One URL, two faces.</p>"
        home = await http.get(server.base_url + "/", headers={"Accept": BROWSER})
        assert "Negotiating Assembly" in home.text


@pytest.mark.e2e
async def test_every_public_page_is_free_of_inline_code(
    ctx: Context, settings: Settings, server: ServerThread
) -> None:
    await add_assembly(ctx, "ga", icon_url="https://cdn.example/a.png", place="Oakland")
    published = await post(ctx, "ga", "A communiqué with `code` and a [link](https://x.example).")
    await add_media(ctx, published.communique.id, alt_text="photo")
    await set_communique(ctx, published.communique.id, summary="a warning")
    paths = [
        "/",
        "/?q=ga&place=oak&language=en",
        "/?q=nothing",
        "/about",
        "/actors/ga",
        published.url.removeprefix(server.base_url),
        "/actors/nobody",
    ]
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as http:
        for path in paths:
            response = await http.get(path, headers={"Accept": BROWSER})
            assert response.status_code in {200, 404}, path
            assert response.headers["content-type"].startswith("text/html"), path
            assert_no_inline_code(response.text)
            assert '<script src="/static/site.js" defer></script>' in response.text
            assert '<main id="main"' in response.text


# --- pure helpers -----------------------------------------------------------------------


def test_plain_text_drops_tags_and_keeps_words_apart() -> None:
    html = "<p>One &amp; <strong>two</strong></p><p>three<br>four</p><ul><li>five</li></ul>"
    assert plain_text(html) == "One & two three four five"
    assert plain_text("") == ""
    assert plain_text("<p>&lt;script&gt;</p>") == "<script>"


def test_excerpt_cuts_at_a_word_with_an_ellipsis() -> None:
    assert excerpt("short", 10) == "short"
    assert excerpt("  spaced   out  ", 20) == "spaced out"
    cut = excerpt("The General Assembly reached consensus tonight", 30)
    assert cut == "The General Assembly reached…"
    assert len(cut) <= 30
    assert len(excerpt("x" * 500, 200)) == 200  # no space to cut at: cut anyway


async def test_directory_ignores_assemblies_in_other_states_even_when_searched(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await add_assembly(ctx, "waiting", name="Plaza Waiting", status=AssemblyStatus.PENDING)
    await add_assembly(ctx, "shown", name="Plaza Shown")
    assert card_names((await web.get("/", params={"q": "plaza"})).text) == ["Plaza Shown"]
    async with ctx.sessions() as session:
        total = len((await session.scalars(select(Assembly))).all())
    assert total == 2


# --- the latest communiqués on the home page -----------------------------------------------


def recent_links(page: str) -> list[str]:
    """The permalinks of the home page's latest communiqués, in order."""
    section = page.split('<section class="recent"', 1)
    if len(section) < 2:
        return []
    return re.findall(r'<a class="permalink" href="([^"]+)"', section[1].split("</section>")[0])


async def test_the_home_page_leads_with_the_latest_communiques(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza General Assembly")
    await approved_assembly(ctx, "oakland", name="Occupy Oakland")
    await approved_assembly(ctx, "hidden", name="Hidden Assembly")
    await approved_assembly(ctx, "stopped", name="Stopped Assembly")
    published = [
        await post(ctx, "libertyplaza" if n % 2 else "oakland", f"Communiqué number {n}.")
        for n in range(1, 9)
    ]
    deleted = await post(ctx, "oakland", "Deleted at once.")
    await set_communique(ctx, deleted.communique.id, deleted_at=ctx.clock())
    warned = await post(ctx, "libertyplaza", "Medics at the corner of Broadway.")
    await set_communique(ctx, warned.communique.id, summary="Police activity")
    await post(ctx, "hidden", "Not listed in the directory, nor here.")
    await post(ctx, "stopped", "Suspended since.")
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Assembly).where(Assembly.handle == "hidden").values(discoverable=False)
        )
        await session.execute(
            update(Assembly)
            .where(Assembly.handle == "stopped")
            .values(status=AssemblyStatus.SUSPENDED)
        )

    page = (await web.get("/")).text
    # The six newest, of listed assemblies, newest first, each linking to its permalink.
    assert recent_links(page) == [warned.url] + [p.url for p in reversed(published)][:5]
    assert "Latest communiqués" in page
    assert "Communiqué number 8." in page and "Communiqué number 3." not in page
    assert "Occupy Oakland" in page and "Liberty Plaza General Assembly" in page
    assert f'<time datetime="{published[-1].communique.published_at:%Y-%m-%dT%H:%M:%SZ}">' in page
    # A content warning stands in for the text, as on the page.
    assert "Content warning: Police activity" in page
    assert "Medics" not in page
    assert "Not listed" not in page and "Suspended since" not in page
    assert "Deleted at once" not in page
    assert_no_inline_code(page)
    # A search, or a later page of the directory, is about assemblies only.
    assert recent_links((await web.get("/", params={"q": "oakland"})).text) == []


async def test_a_home_page_without_communiques_has_no_empty_list(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    page = (await web.get("/")).text
    assert "Latest communiqués" not in page
    assert recent_links(page) == []


# --- line breaks ------------------------------------------------------------------------


async def test_the_founding_communiques_sign_off_keeps_its_lines_everywhere(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    """docs/founding-communique.txt ends "General Assembly / Liberty Plaza / New York City"
    on three lines: so on the page, in the feed and in the Note Mastodon receives."""
    source = (Path(__file__).parents[1] / "docs" / "founding-communique.txt").read_text()
    await approved_assembly(ctx, "libertyplaza")
    published = await post(ctx, "libertyplaza", source)
    lines = "General Assembly<br>\nLiberty Plaza<br>\nNew York City"

    assert lines in published.communique.content_html
    assert lines in (await web.get(published.url)).text
    assert lines in (await web.get("/actors/libertyplaza")).text
    feed = (await web.get("/actors/libertyplaza/feed.atom")).text
    assert html.escape(lines, quote=False) in feed
    async with ctx.sessions() as session:
        assembly = await assemblies.get(session, "libertyplaza")
        note = await communiques.note_of(session, ctx.urls, assembly, published.communique)
    assert lines in note["content"]
    assert lines in note["contentMap"]["en"]
    # The long paragraphs stay paragraphs: no break inside them.
    assert "<p>This communiqué is presented by the people" in note["content"]
