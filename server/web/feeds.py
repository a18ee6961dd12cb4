"""Atom 1.0 feeds (RFC 4287): the latest communiqués of the whole instance, of each
assembly, and of each hashtag.

``build_atom`` is pure: it turns a :class:`Feed` and its :class:`Entry` values into bytes
with xml.etree, so every string is escaped by the serialiser and the document is always
well-formed. The route handlers load rows and call it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from xml.etree import ElementTree as ET

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import assemblies, communiques, instance
from server.activitypub.vocab import iso
from server.content import tag_name
from server.context import Context
from server.errors import NotFound
from server.models import Assembly, Communique, Media
from server.urls import ACTOR_FEED, INSTANCE_FEED, TAG, Urls
from server.web.public import (
    absolute_url,
    assembly_feed_url,
    excerpt,
    latest_public,
    media_path,
    plain_text,
    tag_exists,
    tag_page,
    tag_spelling,
    tagged_communiques,
)

TAG_FEED = TAG + ".atom"

FEED_SIZE = 50
TITLE_CHARS = 100
ATOM_NS = "http://www.w3.org/2005/Atom"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MEDIA_TYPE = "application/atom+xml; charset=utf-8"
GENERATOR = "InterOcc"

# Characters XML 1.0 does not allow at all; a communiqué's source could hold one.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


@dataclass(frozen=True)
class Enclosure:
    href: str
    media_type: str
    length: int
    title: str = ""


@dataclass(frozen=True)
class Entry:
    id: str  # the communiqué's URL: its Note id, permanent
    url: str
    title: str
    published: datetime
    updated: datetime
    author_name: str
    author_uri: str
    content_html: str
    language: str
    categories: Sequence[str] = ()
    enclosures: Sequence[Enclosure] = ()


@dataclass(frozen=True)
class Feed:
    id: str
    title: str
    self_url: str
    alternate_url: str
    author_name: str
    author_uri: str
    updated: datetime  # used when there are no entries; otherwise the newest entry's
    subtitle: str = ""
    icon: str | None = None
    entries: Sequence[Entry] = field(default_factory=tuple)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text is not None:
        element.text = _clean(text)
    return element


def _person(parent: ET.Element, tag: str, name: str, uri: str) -> None:
    person = _sub(parent, tag)
    _sub(person, "name", name)
    _sub(person, "uri", uri)


def build_atom(feed: Feed) -> bytes:
    """The feed as an Atom 1.0 document, UTF-8, with an XML declaration."""
    # The default namespace is written as a plain attribute so that every element is
    # serialised unprefixed (<feed xmlns="…">), the form feed readers expect.
    root = ET.Element("feed", {"xmlns": ATOM_NS})
    _sub(root, "id", feed.id)
    _sub(root, "title", feed.title)
    if feed.subtitle:
        _sub(root, "subtitle", feed.subtitle)
    newest = max((e.updated for e in feed.entries), default=feed.updated)
    _sub(root, "updated", iso(newest))
    _sub(root, "link", rel="self", type="application/atom+xml", href=feed.self_url)
    _sub(root, "link", rel="alternate", type="text/html", href=feed.alternate_url)
    _person(root, "author", feed.author_name, feed.author_uri)
    _sub(root, "generator", GENERATOR)
    if feed.icon:
        _sub(root, "icon", feed.icon)
    for entry in feed.entries:
        item = _sub(root, "entry")
        _sub(item, "id", entry.id)
        _sub(item, "title", entry.title)
        _sub(item, "link", rel="alternate", type="text/html", href=entry.url)
        _sub(item, "published", iso(entry.published))
        _sub(item, "updated", iso(entry.updated))
        _person(item, "author", entry.author_name, entry.author_uri)
        for term in entry.categories:
            _sub(item, "category", term=term, label=f"#{term}")
        for enclosure in entry.enclosures:
            attrs = {
                "rel": "enclosure",
                "type": enclosure.media_type,
                "length": str(enclosure.length),
                "href": enclosure.href,
            }
            if enclosure.title:
                attrs["title"] = enclosure.title
            _sub(item, "link", **attrs)
        # type="html": the element's text is the HTML, escaped once by the serialiser.
        content = _sub(item, "content", entry.content_html, type="html")
        content.set(XML_LANG, _clean(entry.language))
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def entry_of(
    urls: Urls, assembly: Assembly, communique: Communique, files: Sequence[Media]
) -> Entry:
    url = urls.communique(assembly.handle, communique.public_id)
    text = plain_text(communique.content_html)
    # A content warning stands in for the text in the title, as on the page.
    title = communique.summary or text or "Communiqué"
    return Entry(
        id=url,
        url=url,
        title=excerpt(title, TITLE_CHARS),
        published=communique.published_at,
        updated=communique.updated_at or communique.published_at,
        author_name=assembly.name,
        author_uri=urls.actor(assembly.handle),
        content_html=communique.content_html,
        language=communique.language,
        categories=list(communique.hashtags),
        enclosures=[
            Enclosure(
                href=urls.base + media_path(m.file_name),
                media_type=m.media_type,
                length=m.size,
                title=m.alt_text or m.original_name,
            )
            for m in files
        ],
    )


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def atom_response(request: Request, body: bytes) -> Response:
    """The feed, or 304 when the reader already has this exact version."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPE, headers=headers)


async def instance_feed(request: Request) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        info = await instance.load(session, ctx.settings)
        rows = await latest_public(session, limit=FEED_SIZE)
        files = await communiques.attachments_of(session, [c.id for _, c in rows])
    feed = Feed(
        id=ctx.urls.feed(),
        title=info.name,
        subtitle=excerpt(info.description, 500)
        or "Communiqués of the General Assemblies on " + info.name,
        self_url=ctx.urls.feed(),
        alternate_url=ctx.urls.base + "/",
        author_name=info.name,
        author_uri=ctx.urls.base + "/",
        updated=ctx.clock(),
        entries=[entry_of(ctx.urls, a, c, files.get(c.id, [])) for a, c in rows],
    )
    return atom_response(request, build_atom(feed))


async def assembly_feed(request: Request) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        # Pending and rejected assemblies are 404, suspended ones 410, as on their pages.
        assembly = await assemblies.get_public(session, request.path_params["handle"])
        rows = await latest_public(session, limit=FEED_SIZE, assembly_id=assembly.id)
        files = await communiques.attachments_of(session, [c.id for _, c in rows])
    self_url = assembly_feed_url(ctx.urls, assembly.handle)
    feed = Feed(
        id=self_url,
        title=assembly.name,
        subtitle=excerpt(assembly.summary, 500),
        self_url=self_url,
        alternate_url=ctx.urls.actor(assembly.handle),
        author_name=assembly.name,
        author_uri=ctx.urls.actor(assembly.handle),
        updated=assembly.approved_at or assembly.created_at,
        icon=absolute_url(ctx.urls, assembly.icon_url),
        entries=[entry_of(ctx.urls, a, c, files.get(c.id, [])) for a, c in rows],
    )
    return atom_response(request, build_atom(feed))


async def tag_feed(request: Request) -> Response:
    """The latest communiqués carrying a hashtag, as its page lists them (a tag no
    communiqué ever carried is 404 here too)."""
    ctx = _ctx(request)
    tag = tag_name(request.path_params["tag"])
    if tag is None:
        raise NotFound("no hashtag looks like that")
    async with ctx.sessions() as session:
        rows, _ = await tagged_communiques(session, tag=tag, page=1, page_size=FEED_SIZE)
        if not rows and not await tag_exists(session, tag):
            raise NotFound(f"no communiqué here was ever tagged #{tag}")
        files = await communiques.attachments_of(session, [c.id for _, c in rows])
        info = await instance.load(session, ctx.settings)
    page_url = ctx.urls.tag(tag)
    title = "#" + tag_spelling(tag, rows)
    feed = Feed(
        id=page_url + ".atom",
        title=f"{title} · {info.name}",
        subtitle=f"Communiqués tagged {title} on {info.name}",
        self_url=page_url + ".atom",
        alternate_url=page_url,
        author_name=info.name,
        author_uri=ctx.urls.base + "/",
        updated=ctx.clock(),
        entries=[entry_of(ctx.urls, a, c, files.get(c.id, [])) for a, c in rows],
    )
    return atom_response(request, build_atom(feed))


# The tag's feed before its page: TAG's {tag} would match "name.atom" too.
routes = [
    Route(INSTANCE_FEED, instance_feed),
    Route(ACTOR_FEED, assembly_feed),
    Route(TAG_FEED, tag_feed),
    Route(TAG, tag_page),
]
