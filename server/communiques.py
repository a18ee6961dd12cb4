"""Communiqués: publish, edit and delete, each one transaction with its deliveries."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import activities, assemblies
from server.activitypub import delivery
from server.activitypub.mentions import Mention
from server.activitypub.vocab import PUBLIC, build_note, build_tombstone
from server.content import render_markdown
from server.errors import BadRequest, Gone, NotFound
from server.models import Activity, Assembly, Communique, Reply
from server.urls import COMMUNIQUE, Urls, new_public_id

MAX_SOURCE = 50_000
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Published:
    communique: Communique
    activity: Activity
    url: str
    deliveries: int


def _check_source(source: str) -> str:
    if not source.strip():
        raise BadRequest("a communiqué needs some text")
    if len(source) > MAX_SOURCE:
        raise BadRequest(f"a communiqué is at most {MAX_SOURCE} characters")
    return source


def _check_language(language: str) -> str:
    if not LANGUAGE_RE.match(language):
        raise BadRequest(f"invalid language code {language[:20]!r}: use e.g. en, es, pt-BR")
    return language


def note_document(urls: Urls, assembly: Assembly, communique: Communique) -> dict[str, Any]:
    note = build_note(
        note_id=urls.communique(assembly.handle, communique.public_id),
        actor_id=urls.actor(assembly.handle),
        followers=urls.followers(assembly.handle),
        content_html=communique.content_html,
        language=communique.language,
        published=communique.published_at,
        updated=communique.updated_at,
        hashtags=[(tag, urls.tag(tag)) for tag in communique.hashtags],
    )
    # Mentioned actors are addressed too (Mastodon notifies them only when they are).
    note["tag"] += [
        {"type": "Mention", "href": m["href"], "name": m["name"]} for m in communique.mentions
    ]
    note["cc"] += [m["href"] for m in communique.mentions]
    return note


def _link_mentions(content_html: str, mentions: Sequence[Mention]) -> str:
    for m in mentions:
        user = html.escape(m.name.split("@")[1])
        link = (
            f'<span class="h-card"><a href="{html.escape(m.url, quote=True)}" '
            f'class="u-url mention">@<span>{user}</span></a></span>'
        )
        content_html = re.sub(
            r"(?<![\w@/])" + re.escape(html.escape(m.name)) + r"(?![\w@])", link, content_html
        )
    return content_html


def _mention_rows(mentions: Sequence[Mention]) -> list[dict[str, str]]:
    return [{"name": m.name, "href": m.href, "inbox": m.inbox, "url": m.url} for m in mentions]


async def _send(
    session: AsyncSession,
    urls: Urls,
    assembly: Assembly,
    communique: Communique,
    activity_type: str,
    obj: dict[str, Any],
    now: datetime,
    extra_inboxes: Sequence[str] = (),
) -> Published:
    activity = await activities.record(
        session,
        urls,
        assembly=assembly,
        activity_type=activity_type,
        obj=obj,
        to=[PUBLIC],
        cc=[urls.followers(assembly.handle)],
        public=True,
        now=now,
        communique_id=communique.id,
    )
    inboxes = await delivery.follower_inboxes(session, assembly.id)
    inboxes += [m["inbox"] for m in communique.mentions] + list(extra_inboxes)
    rows = await delivery.enqueue(session, activity, inboxes, now=now)
    return Published(
        communique=communique,
        activity=activity,
        url=urls.communique(assembly.handle, communique.public_id),
        deliveries=len(rows),
    )


async def publish(
    session: AsyncSession,
    urls: Urls,
    *,
    handle: str,
    source: str,
    language: str = "en",
    now: datetime,
    mentions: Sequence[Mention] = (),
) -> Published:
    """A new communiqué, its Create{Note} and one delivery per follower inbox.

    ``mentions`` are resolved beforehand (server.activitypub.mentions.resolve): the
    mentioned actors are tagged, addressed and sent the Note.
    """
    assembly = await assemblies.require_active(session, handle)
    rendered = render_markdown(_check_source(source), tag_url=urls.tag)
    communique = Communique(
        public_id=new_public_id(),
        assembly_id=assembly.id,
        source=source,
        content_html=_link_mentions(rendered.html, mentions),
        language=_check_language(language),
        hashtags=rendered.hashtags,
        mentions=_mention_rows(mentions),
        published_at=now,
    )
    session.add(communique)
    await session.flush()
    return await _send(
        session,
        urls,
        assembly,
        communique,
        "Create",
        note_document(urls, assembly, communique),
        now,
    )


async def find_by_url(session: AsyncSession, urls: Urls, url: str) -> tuple[Assembly, Communique]:
    """The communiqué an URL of ours names (deleted ones included)."""
    path = urls.local_path(url.strip())
    prefix, _, _ = COMMUNIQUE.partition("{handle}")
    parts = path.removeprefix(prefix).split("/") if path and path.startswith(prefix) else []
    if len(parts) != 3 or parts[1] != "communiques":
        raise NotFound(f"{url[:200]} is not the URL of a communiqué on this instance")
    return await get(session, parts[0], parts[2])


async def get(session: AsyncSession, handle: str, public_id: str) -> tuple[Assembly, Communique]:
    query = (
        select(Assembly, Communique)
        .join(Communique, Communique.assembly_id == Assembly.id)
        .where(Assembly.handle == handle, Communique.public_id == public_id)
    )
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound("no such communiqué")
    return row[0], row[1]


async def edit(
    session: AsyncSession,
    urls: Urls,
    *,
    url: str,
    source: str,
    now: datetime,
    mentions: Sequence[Mention] = (),
) -> Published:
    """New text for a communiqué: an Update carrying the whole Note with ``updated``."""
    assembly, communique = await find_by_url(session, urls, url)
    await assemblies.require_active(session, assembly.handle)
    if communique.deleted_at is not None:
        raise Gone("this communiqué was deleted")
    rendered = render_markdown(_check_source(source), tag_url=urls.tag)
    communique.source = source
    communique.content_html = _link_mentions(rendered.html, mentions)
    communique.hashtags = rendered.hashtags
    # Those mentioned before get the Update too, so their copy does not go stale.
    earlier = [m["inbox"] for m in communique.mentions]
    communique.mentions = _mention_rows(mentions)
    communique.updated_at = now
    await session.flush()
    return await _send(
        session,
        urls,
        assembly,
        communique,
        "Update",
        note_document(urls, assembly, communique),
        now,
        earlier,
    )


async def delete(session: AsyncSession, urls: Urls, *, url: str, now: datetime) -> Published:
    """Delete: the Note becomes a Tombstone (410) and followers get a Delete."""
    assembly, communique = await find_by_url(session, urls, url)
    await assemblies.require_active(session, assembly.handle)
    if communique.deleted_at is not None:
        raise Gone("this communiqué was already deleted")
    communique.deleted_at = now
    await session.flush()
    tombstone = build_tombstone(
        object_id=urls.communique(assembly.handle, communique.public_id), deleted=now
    )
    return await _send(session, urls, assembly, communique, "Delete", tombstone, now)


async def create_activity_of(session: AsyncSession, communique_id: int) -> Activity | None:
    query = select(Activity).where(
        Activity.communique_id == communique_id, Activity.type == "Create"
    )
    return (await session.scalars(query)).first()


async def replies_of(session: AsyncSession, communique_id: int) -> Sequence[Reply]:
    query = (
        select(Reply)
        .where(Reply.communique_id == communique_id)
        .order_by(Reply.published_at, Reply.id)
    )
    return (await session.scalars(query)).all()
