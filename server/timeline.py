"""An assembly's dashboard timeline: public posts written or announced by actors it follows.

A post is stored once (RemotePost, content sanitised on arrival) and linked to each following
assembly by a TimelineEntry, so ten assemblies following one actor cost one copy.

Every remote post we keep (here, in letters and as replies) is first cut down by
:func:`bounded_note`: the first MAX_TAGS tags, MAX_ADDRESSED entries of each addressing
list and MAX_ATTACHMENTS attachments are kept and the rest dropped; its links are absolute
http(s) URLs or gone (server.content.safe_link); a poll with more than
polls.MAX_REMOTE_CHOICES choices is refused whole (BadRequest).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import polls
from server.activitypub.jsonld import AS_PUBLIC, as_list, id_of
from server.content import safe_link, sanitise_html
from server.following import assemblies_following
from server.models import RemotePost, TimelineEntry

MAX_HTML = 100_000
NOTE_TYPES = {"Note", "Article", "Page", "Question"}
MAX_TAGS = 64  # hashtags, mentions and emoji of one post, together
MAX_ADDRESSED = 64  # entries kept of each of to, cc, bto, bcc and audience
MAX_ATTACHMENTS = 16  # Misskey's limit, the largest in common use (Mastodon sends 4)
MAX_LINKS = 8  # entries of a url list looked at for an http(s) one (PeerTube sends a few)
ADDRESSING = ("to", "cc", "bto", "bcc", "audience")

Doc = dict[str, Any]


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        # Fedify sends nanoseconds; fromisoformat takes at most microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_public(doc: Doc) -> bool:
    return AS_PUBLIC in {id_of(v) for k in ("to", "cc") for v in as_list(doc.get(k))}


def content_of(note: Doc) -> str:
    content = note.get("content")
    if not isinstance(content, str):
        mapped = note.get("contentMap")
        content = next(iter(mapped.values()), "") if isinstance(mapped, dict) and mapped else ""
    return sanitise_html(str(content))[:MAX_HTML]


def link_of(value: object) -> str | None:
    """The first absolute http(s) URL of a link property: a URL, a Link or object, or a list
    of them (``url`` may be any of these)."""
    for item in as_list(value)[:MAX_LINKS]:
        url = safe_link(id_of(item))
        if url is not None:
            return url
    return None


def _with_safe_links(item: object) -> Doc | None:
    """A tag or attachment with its ``href`` and ``url`` made plain http(s) URLs; None (the
    item is dropped) when it is no object or one of its links is not http(s)."""
    if not isinstance(item, dict):
        return None
    out = dict(item)
    for key in ("href", "url"):
        if key in out:
            link = link_of(out[key])
            if link is None:
                return None
            out[key] = link
    icon = out.pop("icon", None)  # a custom emoji's image
    if icon is not None and (safe_icon := _with_safe_links(icon)) is not None:
        out["icon"] = safe_icon
    return out


def bounded_note(note: Doc) -> Doc:
    """A copy of a remote post fit to keep (see the module's docstring): lists truncated to
    their caps, links http(s) only. Raises BadRequest for a poll with too many choices."""
    polls.check_remote_choices(note)
    out = dict(note)
    for key in ADDRESSING:
        if key in out:
            out[key] = as_list(out[key])[:MAX_ADDRESSED]
    for key, cap in (("tag", MAX_TAGS), ("attachment", MAX_ATTACHMENTS)):
        if key in out:
            kept = (_with_safe_links(item) for item in as_list(out[key])[:cap])
            out[key] = [item for item in kept if item is not None]
    url = link_of(out.pop("url", None))
    if url is not None:
        out["url"] = url
    return out


def _summary_of(note: Doc) -> str | None:
    summary = note.get("summary")
    if isinstance(summary, str) and summary.strip():
        return sanitise_html(summary)[:2000]
    return None


async def store_post(
    session: AsyncSession, note: Doc, *, actor_uri: str, now: datetime
) -> RemotePost:
    """Insert or refresh the stored copy of a remote post (``note`` normalised and checked)."""
    note = bounded_note(note)
    uri = str(note["id"])
    post = (await session.scalars(select(RemotePost).where(RemotePost.uri == uri))).first()
    if post is None:
        post = RemotePost(uri=uri, actor_uri=actor_uri, received_at=now)
        session.add(post)
    types = [t for t in as_list(note.get("type")) if isinstance(t, str)]
    post.type = next((t for t in types if t in NOTE_TYPES), "Note")
    post.content_html = content_of(note)
    post.summary = _summary_of(note)
    post.url = link_of(note.get("url"))
    post.in_reply_to = id_of(note.get("inReplyTo"))
    post.public = is_public(note)
    post.published_at = parse_time(note.get("published")) or post.published_at or now
    post.updated_at = parse_time(note.get("updated"))
    post.document = note
    await session.flush()
    return post


async def _link(
    session: AsyncSession,
    assembly_ids: Sequence[int],
    *,
    post_uri: str,
    activity_uri: str,
    announced_by: str | None,
    now: datetime,
) -> int:
    existing = set(
        (
            await session.scalars(
                select(TimelineEntry.assembly_id).where(
                    TimelineEntry.activity_uri == activity_uri,
                    TimelineEntry.assembly_id.in_(assembly_ids),
                )
            )
        ).all()
    )
    added = [
        TimelineEntry(
            assembly_id=i,
            post_uri=post_uri,
            activity_uri=activity_uri,
            announced_by=announced_by,
            created_at=now,
        )
        for i in dict.fromkeys(assembly_ids)
        if i not in existing
    ]
    session.add_all(added)
    await session.flush()
    return len(added)


async def on_create(
    session: AsyncSession, note: Doc, *, actor_uri: str, activity_uri: str, now: datetime
) -> bool:
    """A public post by an actor some of our assemblies follow: onto their timelines.

    A poll with too many choices is refused (BadRequest) whoever follows its author."""
    note = bounded_note(note)
    if not is_public(note):
        return False
    followers = await assemblies_following(session, actor_uri)
    if not followers:
        return False
    post = await store_post(session, note, actor_uri=actor_uri, now=now)
    await _link(
        session, followers, post_uri=post.uri, activity_uri=activity_uri, announced_by=None, now=now
    )
    return True


async def on_announce(
    session: AsyncSession,
    note: Doc,
    *,
    author_uri: str,
    announcer_uri: str,
    activity_uri: str,
    now: datetime,
) -> bool:
    """A boost by a followed actor of ``note`` (fetched from its origin by the caller)."""
    note = bounded_note(note)
    followers = await assemblies_following(session, announcer_uri)
    if not followers or not is_public(note):
        return False
    post = await store_post(session, note, actor_uri=author_uri, now=now)
    await _link(
        session,
        followers,
        post_uri=post.uri,
        activity_uri=activity_uri,
        announced_by=announcer_uri,
        now=now,
    )
    return True


async def on_update(session: AsyncSession, note: Doc, *, actor_uri: str, now: datetime) -> bool:
    note = bounded_note(note)
    post = (
        await session.scalars(
            select(RemotePost).where(
                RemotePost.uri == str(note["id"]), RemotePost.actor_uri == actor_uri
            )
        )
    ).first()
    if post is None:
        return False
    await store_post(session, note, actor_uri=actor_uri, now=now)
    return True


async def on_delete(
    session: AsyncSession, object_uri: str, *, actor_uri: str, now: datetime
) -> bool:
    post = (
        await session.scalars(
            select(RemotePost).where(
                RemotePost.uri == object_uri, RemotePost.actor_uri == actor_uri
            )
        )
    ).first()
    if post is None or post.deleted_at is not None:
        return False
    post.deleted_at = now
    post.content_html = ""
    post.document = {"id": post.uri, "type": "Tombstone"}
    await session.flush()
    return True


async def entries(
    session: AsyncSession, assembly_id: int, *, limit: int = 50, before: int | None = None
) -> list[tuple[TimelineEntry, RemotePost]]:
    """Newest first; ``before`` an entry id for the next page."""
    query = (
        select(TimelineEntry, RemotePost)
        .join(RemotePost, RemotePost.uri == TimelineEntry.post_uri)
        .where(TimelineEntry.assembly_id == assembly_id, RemotePost.deleted_at.is_(None))
        .order_by(TimelineEntry.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(TimelineEntry.id < before)
    return [(row[0], row[1]) for row in (await session.execute(query)).all()]
