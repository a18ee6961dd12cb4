"""Public pages: the home page and directory, /about, an assembly's page, a communiqué's
permalink, a hashtag's page, and "follow from your server".

The assembly and communiqué pages share their URLs with the AS2 documents; the routes in
server.federation.routes negotiate and call :func:`assembly_page` / :func:`communique_page`
for the HTML face. A tag page's route is declared in server.web.feeds, after its Atom feed's
(``/tags/{tag}`` would take ``/tags/{tag}.atom`` too).

The read queries these pages need (directory search, attachments, counts, tags) are small
functions here taking ``(session, *, values)``, so the handlers stay thin; the Atom feeds
(server.web.feeds) reuse them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import accounts, assemblies, communiques, cosign, instance
from server.activitypub import delivery
from server.activitypub.limits import RateLimiter
from server.content import plain_to_html, safe_link, tag_name
from server.context import Context
from server.errors import (
    BadRequest,
    Gone,
    InterOccError,
    NotFound,
    RemoteError,
    TooManyRequests,
    UnsafeAddress,
)
from server.models import (
    Assembly,
    AssemblyStatus,
    Communique,
    Follower,
    FollowerStatus,
    Media,
    Membership,
    RemoteActor,
)
from server.urls import Urls
from server.web.pages import render
from server.web.session import current_user, read_form, text

log = logging.getLogger(__name__)

PAGE_SIZE = 20  # communiqués per page of an assembly, and of a tag
HOME_RECENT = 6  # the latest communiqués on the home page (two rows of three)
DIRECTORY_PAGE_SIZE = 24  # cards per page of the directory (a multiple of 2, 3 and 4)
MAX_PAGE = 100_000
MAX_SEARCH = 100  # characters kept of each search field
DESCRIPTION_CHARS = 200  # og:description and friends
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{1,8})*$")


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


# --- plain text out of our sanitised HTML ---------------------------------------------

_BLOCKS = {"p", "br", "li", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "hr"}


class _TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain_text(html: str) -> str:
    """The words of an HTML fragment, tags dropped and whitespace collapsed."""
    parser = _TextOf()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).split())


def excerpt(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-–—") + "…"


def absolute_url(urls: Urls, url: str | None) -> str | None:
    """An http(s) URL as is, one of our paths made absolute; anything else None."""
    if not url:
        return None
    if url.startswith("/") and not url.startswith("//"):
        return urls.base + url
    if url.startswith(("https://", "http://")):
        return url
    return None


def assembly_feed_url(urls: Urls, handle: str) -> str:
    return urls.actor_feed(handle)


def media_path(file_name: str) -> str:
    # The media route (server/web/media.py) serves uploads at /media/{file_name}.
    return "/media/" + file_name


def is_image(media: Media) -> bool:
    return media.media_type.startswith("image/")


# --- queries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectorySearch:
    """What the directory's GET form asks for; every field optional."""

    q: str = ""
    place: str = ""
    language: str = ""

    @classmethod
    def from_request(cls, request: Request) -> DirectorySearch:
        params = request.query_params
        return cls(
            q=" ".join(params.get("q", "").split())[:MAX_SEARCH],
            place=" ".join(params.get("place", "").split())[:MAX_SEARCH],
            language=params.get("language", "").strip().lower()[:MAX_SEARCH],
        )

    @property
    def active(self) -> bool:
        return bool(self.q or self.place or self.language)


def _directory_filter(search: DirectorySearch) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [
        Assembly.status == AssemblyStatus.APPROVED,
        Assembly.discoverable.is_(True),
    ]
    if search.q:
        where.append(
            or_(
                Assembly.name.icontains(search.q, autoescape=True),
                Assembly.handle.icontains(search.q.lstrip("@"), autoescape=True),
                Assembly.summary.icontains(search.q, autoescape=True),
            )
        )
    if search.place:
        where.append(Assembly.place.icontains(search.place, autoescape=True))
    if search.language:
        if not LANGUAGE_RE.match(search.language):
            where.append(Assembly.id.is_(None))  # no code looks like that: nothing matches
        else:
            # ``languages`` is a JSON list of codes; its text form holds each code in double
            # quotes on SQLite and PostgreSQL alike, so "es" matches es and es-MX, not est.
            text = func.lower(cast(Assembly.languages, String))
            where.append(
                or_(
                    text.like(f'%"{search.language}"%'),
                    text.like(f'%"{search.language}-%'),
                )
            )
    return where


async def search_directory(
    session: AsyncSession, *, search: DirectorySearch, page: int, page_size: int
) -> tuple[Sequence[Assembly], int]:
    """Approved, discoverable assemblies matching ``search``, by name; and how many in all."""
    where = _directory_filter(search)
    total = int(await session.scalar(select(func.count(Assembly.id)).where(*where)) or 0)
    rows = (
        await session.scalars(
            select(Assembly)
            .where(*where)
            .order_by(func.lower(Assembly.name), Assembly.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
    ).all()
    return rows, total


async def directory_languages(session: AsyncSession) -> list[str]:
    """The language codes listed assemblies declare, for the search form's choices."""
    query = (
        select(Assembly.languages)
        .where(Assembly.status == AssemblyStatus.APPROVED, Assembly.discoverable.is_(True))
        .limit(5000)
    )
    found: set[str] = set()
    for codes in (await session.scalars(query)).all():
        found.update(str(c).lower() for c in codes or [] if isinstance(c, str))
    return sorted(c for c in found if LANGUAGE_RE.match(c))


async def follower_counts(session: AsyncSession, assembly_ids: Sequence[int]) -> dict[int, int]:
    if not assembly_ids:
        return {}
    query = (
        select(Follower.assembly_id, func.count(Follower.id))
        .where(
            Follower.assembly_id.in_(assembly_ids),
            Follower.status == FollowerStatus.ACCEPTED,
        )
        .group_by(Follower.assembly_id)
    )
    return {row[0]: int(row[1]) for row in (await session.execute(query)).all()}


async def communique_counts(session: AsyncSession, assembly_ids: Sequence[int]) -> dict[int, int]:
    if not assembly_ids:
        return {}
    query = (
        select(Communique.assembly_id, func.count(Communique.id))
        .where(Communique.assembly_id.in_(assembly_ids), Communique.deleted_at.is_(None))
        .group_by(Communique.assembly_id)
    )
    return {row[0]: int(row[1]) for row in (await session.execute(query)).all()}


async def recent_communiques(
    session: AsyncSession, *, assembly_id: int, page: int, page_size: int
) -> Sequence[Communique]:
    """One page of an assembly's communiqués, newest first, deleted ones left out."""
    query = (
        select(Communique)
        .where(Communique.assembly_id == assembly_id, Communique.deleted_at.is_(None))
        .order_by(Communique.published_at.desc(), Communique.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return (await session.scalars(query)).all()


def _listed() -> list[ColumnElement[bool]]:
    """The communiqués anyone may read: not deleted, of an assembly that is approved (a
    moved one included, as its own page still lists them; pending, rejected and suspended
    ones have no pages). Join Assembly to use it."""
    return [Communique.deleted_at.is_(None), Assembly.status == AssemblyStatus.APPROVED]


async def latest_public(
    session: AsyncSession, *, limit: int, assembly_id: int | None = None
) -> list[tuple[Assembly, Communique]]:
    """The newest communiqués of one assembly, or of every listed one: those the directory
    shows (approved and discoverable), as the instance's feed has them."""
    query = (
        select(Assembly, Communique)
        .join(Communique, Communique.assembly_id == Assembly.id)
        .where(*_listed())
        .order_by(Communique.published_at.desc(), Communique.id.desc())
        .limit(limit)
    )
    if assembly_id is None:
        query = query.where(Assembly.discoverable.is_(True))
    else:
        query = query.where(Assembly.id == assembly_id)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]


# A tag with letters beyond ASCII is matched loosely in SQL and then exactly here; at most
# this many of its newest candidates are read.
TAG_SCAN = 5000


def _tag_like(tag: str) -> ColumnElement[bool]:
    """Communiqués whose ``hashtags`` may hold ``tag`` (lower case), in any case.

    ``hashtags`` is a JSON list whose text form holds each tag in double quotes, on SQLite
    and PostgreSQL alike. Lower-casing that text compares ASCII letters without regard to
    case, exactly. A letter beyond ASCII is stored escaped (``\\u00d6``, which keeps its
    case) or as itself, depending on who wrote the row: it matches anything, and the
    caller checks such candidates exactly (:func:`_carries`).
    """
    pattern = ""
    for char in tag:
        if char.isascii():
            pattern += "!" + char if char in "%_!" else char
        elif not pattern.endswith("%"):
            pattern += "%"
    column = func.lower(cast(Communique.hashtags, String))
    return column.like('%"' + pattern + '"%', escape="!")


def _carries(hashtags: object, tag: str) -> bool:
    return isinstance(hashtags, list) and any(
        isinstance(t, str) and t.lower() == tag for t in hashtags
    )


async def tagged_communiques(
    session: AsyncSession, *, tag: str, page: int, page_size: int
) -> tuple[list[tuple[Assembly, Communique]], int]:
    """One page of the readable communiqués carrying ``tag`` (as :func:`tag_name` gives
    it), newest first, and how many there are in all.

    Every approved assembly's, discoverable or not: whoever tags a communiqué joins that
    public conversation, and a tag link in its own text must lead to a page that lists it
    (Mastodon's hashtag timelines do not leave out non-discoverable accounts either).
    """
    where = [*_listed(), _tag_like(tag)]
    newest = (Communique.published_at.desc(), Communique.id.desc())
    joined = select(Assembly, Communique).join(Communique, Communique.assembly_id == Assembly.id)
    if tag.isascii():  # the pattern is exact
        count = select(func.count(Communique.id)).join(Assembly).where(*where)
        total = int(await session.scalar(count) or 0)
        query = joined.where(*where).order_by(*newest)
        query = query.offset((page - 1) * page_size).limit(page_size)
    else:
        candidates = await session.execute(
            select(Communique.id, Communique.hashtags)
            .join(Assembly)
            .where(*where)
            .order_by(*newest)
            .limit(TAG_SCAN)
        )
        ids = [row[0] for row in candidates.all() if _carries(row[1], tag)]
        total = len(ids)
        chosen = ids[(page - 1) * page_size : page * page_size]
        query = joined.where(Communique.id.in_(chosen)).order_by(*newest)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()], total


async def tag_exists(session: AsyncSession, tag: str) -> bool:
    """Whether any communiqué stored here ever carried ``tag``: deleted ones and those of
    assemblies no longer listed included. Mastodon knows a tag from its first use on and
    never forgets it: a tag it knows has a page, even an empty one; any other is 404."""
    query = select(Communique.hashtags).where(_tag_like(tag))
    if tag.isascii():
        return (await session.scalar(query.limit(1))) is not None
    return any(_carries(h, tag) for h in (await session.scalars(query.limit(TAG_SCAN))).all())


def tag_spelling(tag: str, items: Sequence[tuple[Assembly, Communique]]) -> str:
    """The tag as the newest communiqué carrying it spells it (``#GeneralStrike``)."""
    for _, communique in items:
        for written in communique.hashtags or []:
            if isinstance(written, str) and written.lower() == tag:
                return written
    return tag


async def reply_authors(session: AsyncSession, actor_uris: Sequence[str]) -> dict[str, str]:
    """``@user@domain`` for the repliers whose actor documents we hold."""
    if not actor_uris:
        return {}
    query = select(RemoteActor).where(RemoteActor.uri.in_(set(actor_uris)))
    labels: dict[str, str] = {}
    for actor in (await session.scalars(query)).all():
        if actor.preferred_username:
            acct = f"@{actor.preferred_username}@{actor.domain}"
            name = excerpt(actor.name or "", 60)
            labels[actor.uri] = f"{name} ({acct})" if name else acct
    return labels


async def is_member(session: AsyncSession, *, assembly_id: int, user_id: int) -> bool:
    query = select(Membership.id).where(
        Membership.assembly_id == assembly_id, Membership.user_id == user_id
    )
    return (await session.scalar(query)) is not None


# --- pages ------------------------------------------------------------------------------


def page_number(request: Request) -> int:
    """``?page=N`` (1 when absent); anything but a sane positive number is a 400."""
    raw = request.query_params.get("page")
    if raw is None or raw == "":
        return 1
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest("page must be a positive number")
    return int(raw)


def _page_link(request: Request, page: int) -> str:
    """This page's URL with its search kept and ``page`` changed (page 1 has none)."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "page" and v]
    if page > 1:
        params.append(("page", str(page)))
    return request.url.path + (f"?{urlencode(params)}" if params else "")


async def _description_html(ctx: Context) -> str:
    """The instance's description: plain text an admin wrote, as escaped paragraphs."""
    async with ctx.sessions() as session:
        info = await instance.load(session, ctx.settings)
    return plain_to_html(info.description)


async def home(request: Request) -> Response:
    ctx = _ctx(request)
    search = DirectorySearch.from_request(request)
    page = page_number(request)
    async with ctx.sessions() as session:
        found, total = await search_directory(
            session, search=search, page=page, page_size=DIRECTORY_PAGE_SIZE
        )
        ids = [a.id for a in found]
        followers = await follower_counts(session, ids)
        counts = await communique_counts(session, ids)
        languages = await directory_languages(session)
        # The latest communiqués lead the front page, not a search or a later page of it.
        recent = (
            [] if search.active or page > 1 else await latest_public(session, limit=HOME_RECENT)
        )
    if page > 1 and not found:
        raise NotFound("there is no such page of the directory")
    cards = [
        {
            "assembly": a,
            "acct": f"@{a.handle}@{ctx.urls.host}",
            "excerpt": excerpt(a.summary, 180),
            "followers": followers.get(a.id, 0),
            "communiques": counts.get(a.id, 0),
            "icon": absolute_url(ctx.urls, a.icon_url),
        }
        for a in found
    ]
    return await render(
        request,
        "home.html",
        search=search,
        cards=cards,
        total=total,
        languages=languages,
        description_html=await _description_html(ctx),
        newer=_page_link(request, page - 1) if page > 1 else None,
        older=_page_link(request, page + 1) if page * DIRECTORY_PAGE_SIZE < total else None,
        page=page,
        recent=[_teaser(ctx.urls, a, c) for a, c in recent],
    )


def _teaser(urls: Urls, assembly: Assembly, communique: Communique) -> dict[str, Any]:
    """A communiqué in a list of the latest: who, when, where, and its first words (or its
    content warning, which stands in for the text as it does on the page)."""
    if communique.summary:
        words = "Content warning: " + communique.summary
    else:
        words = plain_text(communique.content_html)
    return {
        "assembly": assembly,
        "communique": communique,
        "url": urls.communique(assembly.handle, communique.public_id),
        "icon": absolute_url(urls, assembly.icon_url),
        "excerpt": excerpt(words, 220),
        "warned": bool(communique.summary),
    }


async def about(request: Request) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        listed, _ = await search_directory(session, search=DirectorySearch(), page=1, page_size=1)
    handle = listed[0].handle if listed else "assembly"
    return await render(
        request,
        "about.html",
        description_html=await _description_html(ctx),
        example=f"@{handle}@{ctx.urls.host}",
    )


async def assembly_page(
    request: Request, assembly: Assembly, *, follow: FollowForm | None = None, status: int = 200
) -> Response:
    ctx = _ctx(request)
    page = page_number(request)
    async with ctx.sessions() as session:
        items = await recent_communiques(
            session, assembly_id=assembly.id, page=page, page_size=PAGE_SIZE
        )
        total = await assemblies.communique_count(session, assembly.id)
        followers = await assemblies.follower_count(session, assembly.id)
        files = await communiques.attachments_of(session, [c.id for c in items])
    if page > 1 and not items:
        raise NotFound("there is no such page of communiqués")
    return await render(
        request,
        "assembly.html",
        status=status,
        follow=follow or FollowForm(),
        follow_action=REMOTE_FOLLOW.format(handle=assembly.handle),
        assembly=assembly,
        summary_html=plain_to_html(assembly.summary),
        communiques=items,
        attachments=files,
        total=total,
        followers=followers,
        acct=f"@{assembly.handle}@{ctx.urls.host}",
        icon=absolute_url(ctx.urls, assembly.icon_url),
        header_image=absolute_url(ctx.urls, assembly.header_url),
        description=excerpt(assembly.summary, DESCRIPTION_CHARS),
        page=page,
        newer=_page_link(request, page - 1) if page > 1 else None,
        older=_page_link(request, page + 1) if page * PAGE_SIZE < total else None,
        feed_url=assembly_feed_url(ctx.urls, assembly.handle),
    )


async def communique_page(
    request: Request,
    assembly: Assembly,
    item: Communique,
    *,
    follow: FollowForm | None = None,
    status: int = 200,
) -> Response:
    ctx = _ctx(request)
    user = await current_user(request)
    async with ctx.sessions() as session:
        replies = await communiques.replies_of(session, item.id)
        authors = await reply_authors(session, [r.actor_uri for r in replies])
        # Co-signers are the assemblies (Group actors) that announced it; other boosts are
        # counted in the shares collection but not listed as signatures.
        cosigners = [s for s in await cosign.shares_of(session, item.id) if s.actor_type == "Group"]
        files = (await communiques.attachments_of(session, [item.id])).get(item.id, [])
        member = user is not None and await is_member(
            session, assembly_id=assembly.id, user_id=user.id
        )
    first_image = next((m for m in files if is_image(m)), None)
    image = (
        ctx.urls.base + media_path(first_image.file_name)
        if first_image is not None
        else absolute_url(ctx.urls, assembly.icon_url)
    )
    if item.summary:
        # A content warning hides the text on the page; link previews must not show it.
        description = excerpt("Content warning: " + item.summary, DESCRIPTION_CHARS)
    else:
        description = excerpt(plain_text(item.content_html), DESCRIPTION_CHARS)
    return await render(
        request,
        "communique.html",
        status=status,
        follow=follow or FollowForm(),
        follow_action=REMOTE_FOLLOW.format(handle=assembly.handle),
        assembly=assembly,
        communique=item,
        replies=replies,
        reply_authors=authors,
        cosigners=cosigners,
        attachments={item.id: files},
        acct=f"@{assembly.handle}@{ctx.urls.host}",
        icon=absolute_url(ctx.urls, assembly.icon_url),
        permalink=ctx.urls.communique(assembly.handle, item.public_id),
        feed_url=assembly_feed_url(ctx.urls, assembly.handle),
        description=description,
        og_image=image,
        og_image_alt=first_image.alt_text if first_image is not None else "",
        member=member,
        manage_url=f"/manage/{assembly.handle}/communiques/{item.public_id}",
        origin=communiques.check_origin(ctx.urls, assembly, item, files),
    )


async def tag_page(request: Request) -> Response:
    ctx = _ctx(request)
    tag = tag_name(request.path_params["tag"])
    if tag is None:
        raise NotFound("no hashtag looks like that")
    page = page_number(request)
    async with ctx.sessions() as session:
        items, total = await tagged_communiques(session, tag=tag, page=page, page_size=PAGE_SIZE)
        if page > 1 and not items:
            raise NotFound("there is no such page of communiqués")
        if not items and not await tag_exists(session, tag):
            raise NotFound(f"no communiqué here was ever tagged #{tag}")
        files = await communiques.attachments_of(session, [c.id for _, c in items])
    return await render(
        request,
        "tag.html",
        tag=tag,
        spelling=tag_spelling(tag, items),
        items=[
            {
                "assembly": a,
                "communique": c,
                "acct": f"@{a.handle}@{ctx.urls.host}",
                "icon": absolute_url(ctx.urls, a.icon_url),
            }
            for a, c in items
        ],
        attachments=files,
        total=total,
        page=page,
        newer=_page_link(request, page - 1) if page > 1 else None,
        older=_page_link(request, page + 1) if page * PAGE_SIZE < total else None,
        feed_url=ctx.urls.tag(tag) + ".atom",
    )


# --- follow from your server --------------------------------------------------------------
#
# Mastodon's remote follow: the visitor gives their handle; we ask their server (WebFinger)
# for its OStatus subscribe template and send them there, with {uri} filled with the
# assembly's actor id, as Mastodon's own RemoteFollow fills it. Their server then shows its
# "Follow?" prompt to them, signed in.

REMOTE_FOLLOW = "/actors/{handle}/remote-follow"
SUBSCRIBE_REL = "http://ostatus.org/schema/1.0/subscribe"
MAX_VISITOR_HANDLE = 300
MAX_LINKS = 100  # links of a WebFinger answer looked at
REMOTE_FOLLOWS_PER_MINUTE = 10  # per client network, per process
# @user@host as people type it; the host may carry a port (tests on loopback).
VISITOR_HANDLE_RE = re.compile(
    r"@?([A-Za-z0-9_][A-Za-z0-9_.-]{0,99})@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?)"
)


@dataclass(frozen=True)
class FollowForm:
    """The follow box as a page shows it: the handle typed and why it did not work."""

    acct: str = ""
    error: str | None = None


def parse_visitor_handle(raw: str) -> tuple[str, str]:
    """(user, host) of the handle a visitor typed: ``@ana@example.social``, without the
    first @, or as an ``acct:`` URI; BadRequest otherwise."""
    value = raw.strip().removeprefix("acct:")
    match = VISITOR_HANDLE_RE.fullmatch(value) if len(value) <= MAX_VISITOR_HANDLE else None
    if match is None:
        raise BadRequest(
            "type your handle as it appears on your profile, like @you@mastodon.social"
        )
    return match.group(1), match.group(2).lower()


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def subscribe_url(template: object, *, uri: str, answered_at: str) -> str | None:
    """Where to send the visitor: the subscribe ``template`` of the WebFinger answer served
    at ``answered_at`` (its final URL), with ``{uri}`` filled; None if it will not do.

    Only an absolute http(s) URL without credentials (never javascript: or data:), on the
    very origin that answered: that is where Mastodon, Pleroma and Misskey put theirs (a
    server whose handles live on another domain redirects its WebFinger to its own, and the
    redirect is followed). A template elsewhere would make this server a redirector to
    whatever site the answer names, and no server we know needs it.
    """
    if not isinstance(template, str) or "{uri}" not in template:
        return None
    # Filled as RFC 6570 fills a simple {uri}: everything but unreserved characters
    # percent-encoded, so the actor id stays one query value.
    url = safe_link(template.replace("{uri}", quote(uri, safe="")))
    if url is None or _origin(url) != _origin(answered_at):
        return None
    return url


async def fetch_subscribe_template(ctx: Context, user: str, host: str) -> tuple[object, str]:
    """The subscribe template the WebFinger answer for ``acct:user@host`` gives (None if it
    gives none) and the URL that answer came from; RemoteError if there is no answer."""
    resource = quote(f"acct:{user}@{host}", safe=":@")
    # WebFinger is https only; plain http is tried where private addresses are allowed
    # (tests on loopback), as server.activitypub.mentions does.
    schemes = ["https", "http"] if ctx.settings.allow_private_addresses else ["https"]
    last: RemoteError | None = None
    for scheme in schemes:
        url = f"{scheme}://{host}/.well-known/webfinger?resource={resource}"
        try:
            fetched = await ctx.client.fetch_json(url, accept="application/jrd+json")
        except UnsafeAddress:
            raise  # the same host by another scheme is no safer: no second try
        except RemoteError as exc:
            last = exc
            continue
        links = fetched.document.get("links")
        for link in links[:MAX_LINKS] if isinstance(links, list) else []:
            if isinstance(link, dict) and link.get("rel") == SUBSCRIBE_REL:
                return link.get("template"), fetched.url
        return None, fetched.url
    assert last is not None
    raise last


async def remote_follow_destination(ctx: Context, *, assembly: Assembly, acct: str) -> str:
    """The page of the visitor's own server where they confirm following ``assembly``.
    Every refusal is an InterOccError whose message tells the visitor what went wrong."""
    user, host = parse_visitor_handle(acct)
    name = f"@{user}@{host}"
    if host == ctx.urls.host:
        raise BadRequest(f"{name} is on this server: type the handle of your own fediverse account")
    async with ctx.sessions() as session:
        blocked = await delivery.blocking_domain(session, f"https://{host}/")
    if blocked is not None:
        raise BadRequest(f"{host} is blocked on this server: it cannot follow its assemblies")
    try:
        # One bound for the whole look-up (redirects and a second scheme included): the
        # visitor is waiting.
        async with asyncio.timeout(ctx.settings.fetch_timeout):
            template, answered_at = await fetch_subscribe_template(ctx, user, host)
    except UnsafeAddress as exc:
        raise RemoteError(
            f"{host} is not a server on the public internet", detail=str(exc)
        ) from exc
    except TimeoutError as exc:
        raise RemoteError(f"{host} did not answer in time: try again later") from exc
    except RemoteError as exc:
        raise RemoteError(f"could not find {name}: {exc.message}", detail=exc.detail) from exc
    if template is None:
        raise RemoteError(
            f"{host} does not offer following from other sites: search for "
            f"@{assembly.handle}@{ctx.urls.host} in your app instead"
        )
    url = subscribe_url(template, uri=ctx.urls.actor(assembly.handle), answered_at=answered_at)
    if url is None:
        raise RemoteError(
            f"{host} answered with an address we will not send you to: search for "
            f"@{assembly.handle}@{ctx.urls.host} in your app instead",
            detail=f"subscribe template {str(template)[:200]!r} from {answered_at}",
        )
    return url


def _follow_limiter(request: Request) -> RateLimiter:
    # Built on first use and kept on the app, one per process like the inbox's limits.
    limiter = getattr(request.app.state, "remote_follow_limiter", None)
    if not isinstance(limiter, RateLimiter):
        limiter = request.app.state.remote_follow_limiter = RateLimiter(REMOTE_FOLLOWS_PER_MINUTE)
    return limiter


async def remote_follow(request: Request) -> Response:
    """POST: the follow box. Its answer is a page that sends the browser on, not a 303:
    our CSP's ``form-action 'self'`` applies to a form's redirects too (Chromium and WebKit
    check every hop, w3c/webappsec-csp#8), so a redirect to the visitor's server would be
    blocked; a page's own navigation is not."""
    ctx = _ctx(request)
    form = await read_form(request)
    acct = text(form, "acct", max_length=MAX_VISITOR_HANDLE + 1).strip()
    public_id = text(form, "communique", max_length=64)
    async with ctx.sessions() as session:
        assembly = await assemblies.get_public(session, request.path_params["handle"])
    client = request.client.host if request.client else "unknown"
    try:
        wait = _follow_limiter(request).take(accounts.client_network(client))
        if wait is not None:
            raise TooManyRequests(
                f"too many attempts from your network: wait {wait} seconds and try again",
                retry_after=wait,
            )
        destination = await remote_follow_destination(ctx, assembly=assembly, acct=acct)
    except InterOccError as exc:
        # Caught here to show the reason beside the box; logged as the app logs refusals.
        log.info("remote follow of %s refused: %s (%s)", assembly.handle, exc.message, exc.detail)
        follow = FollowForm(acct=acct[:MAX_VISITOR_HANDLE], error=exc.message)
        response = await _page_with_follow_box(request, assembly, public_id, follow, exc.status)
        if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    response = await render(
        request,
        "remote_follow.html",
        assembly=assembly,
        destination=destination,
        destination_host=urlsplit(destination).netloc,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def _page_with_follow_box(
    request: Request, assembly: Assembly, public_id: str, follow: FollowForm, status: int
) -> Response:
    """The page the follow box was sent from, again, with the refusal beside the box."""
    if public_id:
        ctx = _ctx(request)
        try:
            async with ctx.sessions() as session:
                _, item = await communiques.get(session, assembly.handle, public_id)
        except (NotFound, Gone, BadRequest):
            item = None
        if item is not None and item.deleted_at is None:
            return await communique_page(request, assembly, item, follow=follow, status=status)
    return await assembly_page(request, assembly, follow=follow, status=status)


DIRECTORY_PAGE = 200


async def directory_json(request: Request) -> Response:
    """The public directory as JSON: the same search as the home page (q, place, language,
    page), for other instances, aggregators and scripts announcing who exists."""
    ctx = _ctx(request)
    search = DirectorySearch.from_request(request)
    page = page_number(request)
    async with ctx.sessions() as session:
        info = await instance.load(session, ctx.settings)
        found, total = await search_directory(
            session, search=search, page=page, page_size=DIRECTORY_PAGE
        )
        ids = [a.id for a in found]
        followers = await follower_counts(session, ids)
        counts = await communique_counts(session, ids)
    entries = [
        {
            "handle": f"@{a.handle}@{ctx.urls.host}",
            "name": a.name,
            "url": ctx.urls.actor(a.handle),
            "summary": a.summary,
            "place": a.place,
            "languages": list(a.languages or []),
            "avatar": absolute_url(ctx.urls, a.icon_url),
            "followers": followers.get(a.id, 0),
            "communiques": counts.get(a.id, 0),
            "feed": ctx.urls.actor_feed(a.handle),
            "since": a.approved_at.strftime("%Y-%m-%dT%H:%M:%SZ") if a.approved_at else None,
        }
        for a in found
    ]
    body: dict[str, Any] = {
        "instance": {"name": info.name, "url": ctx.urls.base + "/", "software": "InterOcc"},
        "total": total,
        "page": page,
        "assemblies": entries,
    }
    if page * DIRECTORY_PAGE < total:
        body["next"] = str(request.url.include_query_params(page=page + 1))
    return JSONResponse(body, headers={"Access-Control-Allow-Origin": "*"})


routes = [
    Route("/", home),
    Route("/about", about),
    Route("/directory.json", directory_json),
    Route(REMOTE_FOLLOW, remote_follow, methods=["POST"]),
]
