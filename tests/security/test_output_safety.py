"""Output safety: only absolute http(s) URLs from other servers ever become links, and what a
remote post carries is kept to caps.

The rule for links is server.content.safe_link, applied when remote data is stored and again
by the ``safe_link`` template filter wherever a page renders a remote URL; remote HTML is
cleaned by nh3 to http(s) and mailto: links. Each hostile case asserts what was stored and
what the page shows: every href and src on the page is one of our own paths or an absolute
http(s) URL, and the hostile value is nowhere among them.

The caps (server.timeline, server.polls): a remote post keeps its first 64 tags (mentions
included), 64 entries of each addressing list and 16 attachments, the rest dropped; a poll
with more than 20 choices is refused whole (400) and nothing of it is stored.

Remote posts are stored here through the domain functions the inbox calls (on_create,
letters.receive, communiques.store_reply); the end-to-end cases post signed activities to
the real inbox over loopback.
"""

from __future__ import annotations

import html
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from server import accounts, assemblies, communiques, letters, polls, timeline
from server.activitypub.mentions import Mention
from server.app import create_app
from server.config import Settings
from server.content import safe_link, sanitise_html
from server.context import Context
from server.errors import BadRequest
from server.models import (
    Follower,
    FollowerStatus,
    Following,
    FollowStatus,
    Letter,
    RemoteActor,
    RemotePost,
    Reply,
    Share,
    TimelineEntry,
)
from server.web.session import cookie_name
from tests.helpers import approved_assembly, count, post
from tests.helpers_web import add_member, create_user
from tests.security.support import (
    AS,
    Attacker,
    actor_document,
    attacker_server,
    signed_post,
    snapshot,
)
from tests.support.servers import ServerThread

PUBLIC = f"{AS}#Public"
AUTHOR = "https://mastodon.example/users/dana"
BROWSER = "text/html,application/xhtml+xml"

# Values a remote server may put where a URL belongs, none of which may become a link.
HOSTILE_URLS = [
    pytest.param("javascript:alert(document.cookie)", id="javascript"),
    pytest.param("JAVASCRIPT:alert(1)", id="javascript-upper"),
    pytest.param("JaVaScRiPt:alert(1)", id="javascript-mixed"),
    pytest.param("  javascript:alert(1)", id="javascript-leading-spaces"),
    pytest.param("\tjavascript:alert(1)", id="javascript-leading-tab"),
    pytest.param("java\tscript:alert(1)", id="javascript-inner-tab"),
    pytest.param("java\nscript:alert(1)", id="javascript-inner-newline"),
    pytest.param("\x01javascript:alert(1)", id="javascript-leading-control"),
    pytest.param("data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", id="data"),
    pytest.param("vbscript:msgbox(1)", id="vbscript"),
    pytest.param("//evil.example/phish", id="protocol-relative"),
    pytest.param("/admin/accounts?evil=1", id="relative-path"),
    pytest.param("evil/relative", id="relative"),
    pytest.param("https:evil.example/x", id="https-without-slashes"),
    pytest.param("https://ours.example@evil.example/", id="credentials"),
    pytest.param("https://evil.example\\@good.example/", id="backslash"),
    pytest.param("https://evil.example/\x00", id="nul"),
    pytest.param("https://evil.example/ x", id="space"),
    pytest.param("https://" + "a" * 3000 + ".example/", id="too-long"),
]
# The same attacks in the places fewer pages show.
HOSTILE_SAMPLE = [
    p for p in HOSTILE_URLS if p.id in {"javascript", "javascript-inner-tab", "data", "vbscript"}
] + [p for p in HOSTILE_URLS if p.id in {"protocol-relative", "relative-path", "credentials"}]


def _value(param: Any) -> str:
    return str(param.values[0])


# ---- reading a rendered page -----------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        rel = dict(attrs).get("rel") or ""
        for name, value in attrs:
            if name in {"href", "src", "action", "formaction"} and value is not None:
                if tag == "link" and rel == "icon" and value.startswith("data:image/svg+xml"):
                    continue  # our own favicon, in base.html
                self.links.append((tag, name, value))


def links_of(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    parser.close()
    return [value for _tag, _name, value in parser.links]


def _ours_or_http(value: str) -> bool:
    local = value.startswith(("/", "?", "#")) and not value.startswith("//")
    return local or safe_link(value) == value


def assert_only_safe_links(page: str, *hostile: str) -> None:
    found = links_of(page)
    assert found, "no links at all: the page did not render"
    assert [v for v in found if not _ours_or_http(v)] == []
    for value in hostile:
        assert value not in found


# ---- the world: an assembly, a facilitator signed in, a followed author -----------------------


@pytest.fixture
async def web(settings: Settings, ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    """A facilitator of "sol" in a browser talking to the app in process."""
    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    user_id = await create_user(ctx, "ana@example.org")
    await add_member(ctx, user_id, "sol")
    async with ctx.sessions() as session, session.begin():
        user = await accounts.find_by_email(session, "ana@example.org")
        assert user is not None
        token = await accounts.start_session(
            session, user, now=ctx.clock(), lifetime=timedelta(hours=1)
        )
        sol = await assemblies.get(session, "sol")
        session.add(
            Following(
                assembly_id=sol.id,
                target_uri=AUTHOR,
                inbox_uri=f"{AUTHOR}/inbox",
                follow_uri=ctx.urls.actor("sol") + "#follows/1",
                status=FollowStatus.ACCEPTED,
                created_at=ctx.clock(),
            )
        )
    app = create_app(settings, ctx=ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=settings.base_url, headers={"Accept": BROWSER}
        ) as client:
            client.cookies.set(cookie_name(settings, "session"), token)
            yield client


def hostile_note(n: int, hostile: str, **extra: Any) -> dict[str, Any]:
    """A public Note by AUTHOR with ``hostile`` as its url, a tag's href, an attachment's url
    and a link in its content, each beside a good one that must survive."""
    return {
        "id": f"https://mastodon.example/users/dana/statuses/{n}",
        "type": "Note",
        "attributedTo": AUTHOR,
        "url": hostile,
        "content": (
            f'<p>Read <a href="{html.escape(hostile)}">this</a> and '
            '<a href="https://mastodon.example/tags/ok">#ok</a></p>'
        ),
        "published": "2026-11-28T12:00:00Z",
        "to": [PUBLIC],
        "tag": [
            {"type": "Hashtag", "href": hostile, "name": "#evil"},
            {"type": "Hashtag", "href": "https://mastodon.example/tags/ok", "name": "#ok"},
        ],
        "attachment": [
            {"type": "Document", "mediaType": "image/png", "url": hostile, "name": "evil"},
            {
                "type": "Document",
                "mediaType": "image/png",
                "url": "https://files.example/ok.png",
                "name": "ok",
            },
        ],
        **extra,
    }


def assert_kept_only_the_good_links(
    document: dict[str, Any], content_html: str, hostile: str
) -> None:
    assert "url" not in document
    assert [t["name"] for t in document["tag"]] == ["#ok"]
    assert [a["url"] for a in document["attachment"]] == ["https://files.example/ok.png"]
    # In HTML a NUL reads as U+FFFD, which leaves a harmless http(s) link: hence "safe", not
    # "gone", for the content.
    content_links = links_of(content_html)
    assert "https://mastodon.example/tags/ok" in content_links
    assert hostile not in content_links
    assert [link for link in content_links if safe_link(link) != link] == []


# ---- the rule itself -------------------------------------------------------------------------


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_safe_link_refuses_what_is_not_an_absolute_http_url(url: str) -> None:
    assert safe_link(url) is None


@pytest.mark.parametrize("value", [None, 42, ["https://ok.example/"], {"href": "https://x/"}, ""])
def test_safe_link_refuses_what_is_no_url_string(value: object) -> None:
    assert safe_link(value) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://mastodon.example/@dana/113",
        "http://assembly.example:8080/notes/1?x=1#top",
        "HTTPS://Mastodon.Example/@dana",
        "https://café.example/tags/été",
        "https://[2001:db8::1]/x",
    ],
)
def test_safe_link_keeps_an_absolute_http_url_as_it_is(url: str) -> None:
    assert safe_link(url) == url


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java&#x09;script:alert(1)",
        "&#106;avascript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;",
        "vbscript:msgbox(1)",
        "//evil.example/",
        "/manage/sol/following",
        "https:evil.example",
        "https://ours.example@evil.example/",
    ],
)
def test_remote_html_keeps_no_link_but_http_and_mailto(href: str) -> None:
    cleaned = sanitise_html(
        f'<p><a href="{href}">bad</a> <a href="https://ok.example/">good</a>'
        ' <a href="mailto:ga@ok.example">mail</a></p>'
    )
    assert links_of(cleaned) == ["https://ok.example/", "mailto:ga@ok.example"]
    assert ">bad</a>" in cleaned  # the text stays, without its link


# ---- hostile links, stored and rendered ------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE_URLS)
async def test_a_hostile_link_in_a_timeline_post_is_neither_stored_nor_shown(
    ctx: Context, web: httpx.AsyncClient, hostile: str
) -> None:
    note = hostile_note(1, hostile)
    async with ctx.sessions() as session, session.begin():
        assert await timeline.on_create(
            session, note, actor_uri=AUTHOR, activity_uri=f"{note['id']}/activity", now=ctx.clock()
        )
    async with ctx.sessions() as session:
        stored = (await session.scalars(select(RemotePost))).one()
    assert stored.url is None
    assert_kept_only_the_good_links(stored.document, stored.content_html, hostile)

    page = await web.get("/manage/sol/timeline")
    assert page.status_code == 200
    assert_only_safe_links(page.text, hostile)
    assert note["id"] in links_of(page.text)  # "Open" falls back to the post's id


@pytest.mark.parametrize("hostile", HOSTILE_SAMPLE)
async def test_a_hostile_link_in_a_reply_is_neither_stored_nor_shown(
    ctx: Context, web: httpx.AsyncClient, hostile: str
) -> None:
    published = await post(ctx, "sol", "We invite all assemblies to reply.")
    note = hostile_note(2, hostile, inReplyTo=published.url)
    async with ctx.sessions() as session, session.begin():
        reply = await communiques.store_reply(
            session,
            communique_id=published.communique.id,
            note=note,
            actor_uri=AUTHOR,
            now=ctx.clock(),
        )
    assert reply is not None
    async with ctx.sessions() as session:
        stored = (await session.scalars(select(Reply))).one()
    assert stored.url is None
    assert_kept_only_the_good_links(stored.document, stored.content_html, hostile)

    page = await web.get(published.url)
    assert page.status_code == 200
    assert "Read " in page.text
    assert_only_safe_links(page.text, hostile)
    assert note["id"] in links_of(page.text)  # the byline links the reply's id instead


async def test_an_edited_reply_gets_the_same_treatment(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    published = await post(ctx, "sol", "Edits too.")
    good = hostile_note(3, "https://mastodon.example/@dana/3", inReplyTo=published.url)
    async with ctx.sessions() as session, session.begin():
        reply = await communiques.store_reply(
            session,
            communique_id=published.communique.id,
            note=good,
            actor_uri=AUTHOR,
            now=ctx.clock(),
        )
        assert reply is not None and reply.url == "https://mastodon.example/@dana/3"
        edited = {**good, "url": "javascript:alert(1)", "tag": [{"href": "vbscript:x"}] * 500}
        await communiques.update_reply(session, reply, edited, now=ctx.clock())
    async with ctx.sessions() as session:
        stored = (await session.scalars(select(Reply))).one()
    assert stored.url is None
    assert stored.document["tag"] == []
    assert_only_safe_links((await web.get(published.url)).text, "javascript:alert(1)")


@pytest.mark.parametrize("hostile", HOSTILE_SAMPLE)
async def test_a_hostile_link_in_a_letter_is_neither_stored_nor_shown(
    ctx: Context, web: httpx.AsyncClient, hostile: str
) -> None:
    note = hostile_note(4, hostile, to=[ctx.urls.actor("sol")])
    async with ctx.sessions() as session, session.begin():
        assert await letters.receive(session, ctx, note, actor_uri=AUTHOR, now=ctx.clock())
    async with ctx.sessions() as session:
        stored = (await session.scalars(select(Letter))).one()
    assert_kept_only_the_good_links(stored.document, stored.content_html, hostile)

    page = await web.get(f"/manage/sol/letters/thread?uri={quote(stored.thread, safe='')}")
    assert page.status_code == 200
    assert "Read " in page.text
    assert_only_safe_links(page.text, hostile)


# ---- rows stored before the rule: the template filter alone keeps the pages safe ---------------

LEGACY = "javascript:alert(document.domain)"


async def test_the_timeline_never_links_a_stored_hostile_url(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    async with ctx.sessions() as session, session.begin():
        sol = await assemblies.get(session, "sol")
        session.add(
            RemotePost(
                uri="https://mastodon.example/notes/1",
                actor_uri=f"{LEGACY}//author",
                url=LEGACY,
                content_html="<p>old</p>",
                document={
                    "ratification": {
                        "type": "Ratification",
                        "decidedOn": "2026-11-01",
                        "process": "Consensus",
                        "minutes": LEGACY,
                    }
                },
                published_at=ctx.clock(),
            )
        )
        session.add(
            TimelineEntry(
                assembly_id=sol.id,
                post_uri="https://mastodon.example/notes/1",
                activity_uri="https://mastodon.example/notes/1/activity",
                announced_by=f"{LEGACY}//booster",
                created_at=ctx.clock(),
            )
        )
    page = (await web.get("/manage/sol/timeline")).text
    assert "<p>old</p>" in page
    assert_only_safe_links(page, LEGACY, f"{LEGACY}//author", f"{LEGACY}//booster")
    assert "https://mastodon.example/notes/1" in links_of(page)
    assert f"{LEGACY}//author" in page  # shown as text


async def test_the_communique_page_never_links_a_stored_hostile_url(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    published = await post(ctx, "sol", "A communiqué.")
    async with ctx.sessions() as session, session.begin():
        session.add(
            Reply(
                uri="https://mastodon.example/replies/1",
                communique_id=published.communique.id,
                actor_uri=AUTHOR,
                content_html="<p>stored before</p>",
                url=LEGACY,  # as the inbox stored a reply's url before the rule
                published_at=ctx.clock(),
                document={},
            )
        )
        session.add(
            Share(
                communique_id=published.communique.id,
                actor_uri=LEGACY,
                announce_uri="https://mastodon.example/announces/1",
                actor_name="A co-signer",
                actor_type="Group",
                created_at=ctx.clock(),
            )
        )
    page = (await web.get(published.url)).text
    assert "stored before" in page and "A co-signer" in page
    assert_only_safe_links(page, LEGACY)
    assert "https://mastodon.example/replies/1" in links_of(page)


async def test_the_followers_page_never_links_a_hostile_profile_url(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    async with ctx.sessions() as session, session.begin():
        sol = await assemblies.get(session, "sol")
        actor = RemoteActor(
            uri=AUTHOR,
            domain="mastodon.example",
            preferred_username="dana",
            inbox_uri=f"{AUTHOR}/inbox",
            url=LEGACY,
        )
        session.add(actor)
        await session.flush()
        session.add(
            Follower(
                assembly_id=sol.id,
                actor_id=actor.id,
                follow_uri=f"{AUTHOR}#follow",
                status=FollowerStatus.ACCEPTED,
                created_at=ctx.clock(),
            )
        )
    page = (await web.get("/manage/sol/followers")).text
    assert "@dana@mastodon.example" in page
    assert_only_safe_links(page, LEGACY)


async def test_the_letters_pages_never_link_a_hostile_author(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    async with ctx.sessions() as session, session.begin():
        sol = await assemblies.get(session, "sol")
        session.add(
            Letter(
                assembly_id=sol.id,
                uri="https://mastodon.example/letters/1",
                actor_uri=LEGACY,
                recipients=[],
                content_html="<p>a letter</p>",
                thread="https://mastodon.example/letters/1",
                published_at=ctx.clock(),
                document={},
            )
        )
    listing = (await web.get("/manage/sol/letters")).text
    thread = await web.get(
        "/manage/sol/letters/thread?uri=" + quote("https://mastodon.example/letters/1", safe="")
    )
    assert "a letter" in thread.text
    for page in (listing, thread.text):
        assert_only_safe_links(page, LEGACY)


async def test_a_mention_whose_page_is_not_http_links_the_actor_id(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    # The mentioned actor's own document supplies the page URL linked in our communiqué.
    mention = Mention(
        name="@dana@mastodon.example", href=AUTHOR, inbox=f"{AUTHOR}/inbox", url=LEGACY
    )
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session,
            ctx.urls,
            handle="sol",
            source="Greetings @dana@mastodon.example",
            now=ctx.clock(),
            mentions=[mention],
        )
    assert links_of(published.communique.content_html) == [AUTHOR]
    assert_only_safe_links((await web.get(published.url)).text, LEGACY)


# ---- caps ------------------------------------------------------------------------------------


def mentions(n: int) -> list[dict[str, str]]:
    return [
        {"type": "Mention", "href": f"https://mastodon.example/users/u{i}", "name": f"@u{i}"}
        for i in range(n)
    ]


def attachments(n: int) -> list[dict[str, str]]:
    return [
        {"type": "Document", "mediaType": "image/png", "url": f"https://files.example/{i}.png"}
        for i in range(n)
    ]


def question(n: int, key: str = "oneOf") -> dict[str, Any]:
    return {
        "id": f"https://mastodon.example/users/dana/statuses/q{n}",
        "type": "Question",
        "attributedTo": AUTHOR,
        "content": "<p>Which day?</p>",
        "to": [PUBLIC],
        key: [{"type": "Note", "name": f"Option {i}"} for i in range(n)],
    }


async def _on_create(ctx: Context, note: dict[str, Any]) -> bool:
    async with ctx.sessions() as session, session.begin():
        return await timeline.on_create(
            session, note, actor_uri=AUTHOR, activity_uri=f"{note['id']}/activity", now=ctx.clock()
        )


async def _stored(ctx: Context) -> RemotePost:
    async with ctx.sessions() as session:
        return (await session.scalars(select(RemotePost))).one()


@pytest.mark.parametrize(
    ("sent", "kept"), [(5000, timeline.MAX_TAGS), (timeline.MAX_TAGS, timeline.MAX_TAGS), (3, 3)]
)
async def test_a_post_keeps_its_first_mentions_up_to_the_cap(
    ctx: Context, web: httpx.AsyncClient, sent: int, kept: int
) -> None:
    await _on_create(ctx, hostile_note(5, "https://mastodon.example/@dana/5", tag=mentions(sent)))
    stored = await _stored(ctx)
    assert [t["name"] for t in stored.document["tag"]] == [f"@u{i}" for i in range(kept)]
    assert len(json.dumps(stored.document)) < 20_000


@pytest.mark.parametrize(
    ("sent", "kept"),
    [(1000, timeline.MAX_ATTACHMENTS), (timeline.MAX_ATTACHMENTS + 1, timeline.MAX_ATTACHMENTS)],
)
async def test_a_post_keeps_its_first_attachments_up_to_the_cap(
    ctx: Context, web: httpx.AsyncClient, sent: int, kept: int
) -> None:
    note = hostile_note(6, "https://mastodon.example/@dana/6", attachment=attachments(sent))
    await _on_create(ctx, note)
    stored = await _stored(ctx)
    assert [a["url"] for a in stored.document["attachment"]] == [
        f"https://files.example/{i}.png" for i in range(kept)
    ]


async def test_a_post_keeps_its_first_addressees_up_to_the_cap(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    crowd = [f"https://mastodon.example/users/u{i}" for i in range(5000)]
    await _on_create(ctx, hostile_note(7, "https://x.example/7", to=[PUBLIC, *crowd], cc=crowd))
    stored = await _stored(ctx)
    assert stored.document["to"] == [PUBLIC, *crowd[: timeline.MAX_ADDRESSED - 1]]
    assert stored.document["cc"] == crowd[: timeline.MAX_ADDRESSED]
    assert len(json.dumps(stored.document)) < 20_000


async def test_a_letter_with_5000_mentions_and_addressees_keeps_the_caps(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    sol = ctx.urls.actor("sol")
    crowd = [f"https://mastodon.example/users/u{i}" for i in range(5000)]
    note = hostile_note(
        8,
        "https://mastodon.example/@dana/8",
        to=[sol, *crowd],
        cc=crowd,
        tag=[{"type": "Mention", "href": sol, "name": "@sol"}, *mentions(5000)],
    )
    note.pop("url")
    async with ctx.sessions() as session, session.begin():
        assert await letters.receive(session, ctx, note, actor_uri=AUTHOR, now=ctx.clock())
    async with ctx.sessions() as session:
        letter = (await session.scalars(select(Letter))).one()
    assert len(letter.document["tag"]) == timeline.MAX_TAGS
    assert len(letter.document["to"]) == timeline.MAX_ADDRESSED
    assert len(letter.recipients) == timeline.MAX_ADDRESSED
    assert len(json.dumps(letter.document)) + len(json.dumps(letter.recipients)) < 30_000


async def test_a_mention_beyond_the_cap_files_no_letter(
    ctx: Context, web: httpx.AsyncClient
) -> None:
    # Truncation is the rule: only the first tags are read, so a mention of ours after 64
    # others is not seen (the Note is public, so nothing else files it).
    sol = ctx.urls.actor("sol")
    note = hostile_note(
        9, "https://x.example/9", tag=[*mentions(64), {"type": "Mention", "href": sol}]
    )
    async with ctx.sessions() as session, session.begin():
        assert not await letters.receive(session, ctx, note, actor_uri=AUTHOR, now=ctx.clock())
    assert await count(ctx, Letter) == 0


@pytest.mark.parametrize(
    ("choices", "key"),
    [(10_000, "oneOf"), (10_000, "anyOf"), (polls.MAX_REMOTE_CHOICES + 1, "oneOf")],
)
async def test_a_poll_with_too_many_choices_is_refused_and_nothing_stored(
    ctx: Context, web: httpx.AsyncClient, choices: int, key: str
) -> None:
    with pytest.raises(BadRequest, match=f"at most 20 choices, this one has {choices}"):
        await _on_create(ctx, question(choices, key))
    assert await count(ctx, RemotePost) == 0
    assert await count(ctx, TimelineEntry) == 0


async def test_a_poll_at_the_cap_is_kept_whole(ctx: Context, web: httpx.AsyncClient) -> None:
    assert await _on_create(ctx, question(polls.MAX_REMOTE_CHOICES))
    stored = await _stored(ctx)
    assert stored.type == "Question"
    assert len(stored.document["oneOf"]) == polls.MAX_REMOTE_CHOICES


async def test_a_poll_with_too_many_choices_is_refused_whoever_follows_its_author(
    ctx: Context,
) -> None:
    # No assembly follows anyone here: the refusal does not depend on who would see it.
    with pytest.raises(BadRequest):
        await _on_create(ctx, question(10_000))
    async with ctx.sessions() as session, session.begin():
        with pytest.raises(BadRequest):
            await letters.receive(session, ctx, question(10_000), actor_uri=AUTHOR, now=ctx.clock())


# ---- end to end, through the inbox -----------------------------------------------------------


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    yield from attacker_server()


def create(actor_id: str, note: dict[str, Any]) -> dict[str, Any]:
    return {
        "@context": AS,
        "id": f"{note['id']}/activity",
        "type": "Create",
        "actor": actor_id,
        "to": [PUBLIC],
        "object": note,
    }


async def _followed_author(ctx: Context, attacker: Attacker) -> Any:
    await approved_assembly(ctx, "sol")
    author, _doc = actor_document(attacker, "dana")
    async with ctx.sessions() as session, session.begin():
        sol = await assemblies.get(session, "sol")
        session.add(
            Following(
                assembly_id=sol.id,
                target_uri=author.id,
                inbox_uri=f"{author.id}/inbox",
                follow_uri=ctx.urls.actor("sol") + "#follows/1",
                status=FollowStatus.ACCEPTED,
                created_at=ctx.clock(),
            )
        )
    return author


def _by(author: Any, note: dict[str, Any], n: str) -> dict[str, Any]:
    return {**note, "id": f"{author.id}/statuses/{n}", "attributedTo": author.id}


async def _post_as(ctx: Context, author: Any, note: dict[str, Any]) -> httpx.Response:
    return await signed_post(
        ctx.urls.shared_inbox(),
        create(author.id, note),
        key_id=author.key_id,
        private_key=author.private_key,
    )


@pytest.mark.e2e
@pytest.mark.parametrize("choices", [10_000, 500, polls.MAX_REMOTE_CHOICES + 1])
async def test_a_poll_with_too_many_choices_at_the_inbox_is_a_400_and_stores_nothing(
    ctx: Context, server: ServerThread, attacker: Attacker, choices: int
) -> None:
    # 10,000 choices are over the inbox's bound on a document's values (server/activitypub/
    # bounds.py) before any handler; 500 pass it and meet the poll's own cap.
    author = await _followed_author(ctx, attacker)
    first = await _post_as(ctx, author, _by(author, hostile_note(0, "https://x.example/0"), "0"))
    assert first.status_code == 202  # the key and actor are cached now
    before = await snapshot(ctx)
    answer = await _post_as(ctx, author, _by(author, question(choices), "q"))
    assert answer.status_code == 400
    if choices < 1000:
        assert f"at most 20 choices, this one has {choices}" in answer.json()["error"]
    assert await snapshot(ctx) == before


@pytest.mark.e2e
async def test_a_poll_at_the_cap_at_the_inbox_is_kept(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    author = await _followed_author(ctx, attacker)
    answer = await _post_as(ctx, author, _by(author, question(polls.MAX_REMOTE_CHOICES), "q"))
    assert answer.status_code == 202
    assert len((await _stored(ctx)).document["oneOf"]) == polls.MAX_REMOTE_CHOICES


@pytest.mark.e2e
@pytest.mark.parametrize(("sent", "status"), [(5000, 400), (1000, 202)])
async def test_a_note_with_thousands_of_mentions_at_the_inbox_is_refused_or_kept_with_64(
    ctx: Context, server: ServerThread, attacker: Attacker, sent: int, status: int
) -> None:
    # 5,000 mentions are over the inbox's bound on values; 1,000 pass it and are cut to 64.
    author = await _followed_author(ctx, attacker)
    note = _by(author, hostile_note(1, "javascript:alert(1)", tag=mentions(sent)), "m")
    answer = await _post_as(ctx, author, note)
    assert answer.status_code == status
    if status == 400:
        assert await count(ctx, RemotePost) == 0
        return
    stored = await _stored(ctx)
    assert stored.url is None
    assert [t["name"] for t in stored.document["tag"]] == [f"@u{i}" for i in range(64)]


@pytest.mark.e2e
async def test_a_note_with_1000_attachments_at_the_inbox_is_kept_with_16(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    author = await _followed_author(ctx, attacker)
    note = _by(author, hostile_note(2, "https://x.example/2", attachment=attachments(1000)), "a")
    assert (await _post_as(ctx, author, note)).status_code == 202
    assert len((await _stored(ctx)).document["attachment"]) == timeline.MAX_ATTACHMENTS


@pytest.mark.e2e
async def test_a_reply_with_a_javascript_url_at_the_inbox_is_shown_without_it(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    author = await _followed_author(ctx, attacker)
    published = await post(ctx, "sol", "Reply to us.")
    note = _by(author, hostile_note(3, "javascript:alert(1)", inReplyTo=published.url), "r")
    assert (await _post_as(ctx, author, note)).status_code == 202
    assert await count(ctx, Reply) == 1
    async with httpx.AsyncClient(trust_env=False) as http:
        page = await http.get(published.url, headers={"Accept": BROWSER})
    assert "Read " in page.text
    assert_only_safe_links(page.text, "javascript:alert(1)")
    assert note["id"] in links_of(page.text)
