"""Public pages: the home page and directory, /about, an assembly's page, a communiqué's
permalink.

The assembly and communiqué pages share their URLs with the AS2 documents; the routes in
server.federation.routes negotiate and call :func:`assembly_page` / :func:`communique_page`
for the HTML face.

The read queries these pages need (directory search, attachments, counts) are small
functions here taking ``(session, *, values)``, so the handlers stay thin; the Atom feeds
(server.web.feeds) reuse them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import assemblies, communiques, cosign, instance
from server.content import plain_to_html
from server.context import Context
from server.errors import BadRequest, NotFound
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
from server.web.session import current_user

PAGE_SIZE = 20  # communiqués per page of an assembly
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
    )


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


async def assembly_page(request: Request, assembly: Assembly) -> Response:
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


async def communique_page(request: Request, assembly: Assembly, item: Communique) -> Response:
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
]
