"""Communiqués: publish, edit and delete, each one transaction with its deliveries."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assemblies, polls, ratification, relays
from server.activitypub import delivery, integrity, outbox, proofs
from server.activitypub.mentions import Mention
from server.activitypub.vocab import CONTEXT, PUBLIC, build_attachment, build_note, build_tombstone
from server.content import LANGUAGE_RE, render_markdown, safe_link
from server.errors import BadRequest, Gone, NotFound
from server.media import media_url
from server.models import Activity, Assembly, Communique, Media, MediaPurpose, Reply
from server.timeline import bounded_note, content_of, link_of, parse_time
from server.urls import COMMUNIQUE, Urls, new_public_id

MAX_SOURCE = 50_000
MAX_SUMMARY = 500  # a content warning is a line, not a text
MAX_ATTACHMENTS = 4  # what Mastodon shows


class Keep(enum.Enum):
    """``edit(summary=KEEP)``: leave the content warning as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class Published:
    communique: Communique
    activity: Activity
    url: str
    deliveries: int
    # Media rows deleted by an edit or a delete: their files go once the transaction has
    # committed (server.media.remove_files), never before.
    removed_media: tuple[Media, ...] = ()


def _check_source(source: str) -> str:
    if not source.strip():
        raise BadRequest("a communiqué needs some text", field="content")
    if len(source) > MAX_SOURCE:
        raise BadRequest(f"a communiqué is at most {MAX_SOURCE} characters", field="content")
    return source


def _check_language(language: str) -> str:
    if not LANGUAGE_RE.match(language):
        raise BadRequest(
            f"invalid language code {language[:20]!r}: use e.g. en, es, pt-BR", field="language"
        )
    return language


def _check_summary(summary: str | None) -> str | None:
    summary = " ".join((summary or "").split())
    if len(summary) > MAX_SUMMARY:
        raise BadRequest(f"a content warning is at most {MAX_SUMMARY} characters", field="summary")
    return summary or None


def check_draft(source: str, language: str, summary: str | None) -> None:
    """What publish and edit refuse in the text alone, each error naming its form field."""
    _check_source(source)
    _check_language(language)
    _check_summary(summary)


async def _load_attachments(
    session: AsyncSession, assembly: Assembly, attachments: Sequence[Media]
) -> list[Media]:
    """This session's rows for ``attachments`` (callers may hold copies from another
    session), in the order given, checked to be this assembly's attachments."""
    if len(attachments) > MAX_ATTACHMENTS:
        raise BadRequest(f"a communiqué has at most {MAX_ATTACHMENTS} attachments")
    ids = [m.id for m in attachments]
    if len(set(ids)) != len(ids):
        raise BadRequest("the same file is attached twice")
    if not ids:
        return []
    rows = {m.id: m for m in (await session.scalars(select(Media).where(Media.id.in_(ids))))}
    for m in rows.values():
        if m.assembly_id != assembly.id or m.purpose != MediaPurpose.ATTACHMENT:
            raise BadRequest("this file cannot be attached to this assembly's communiqués")
    if len(rows) != len(ids):
        raise BadRequest("an attached file no longer exists: choose it again")
    return [rows[i] for i in ids]


def render_preview(source: str, urls: Urls | None = None) -> str:
    """The HTML a communiqué would have: the renderer and sanitiser publishing uses.

    Mentions are shown as written (linking them needs their WebFinger answers).
    """
    tag_url = urls.tag if urls is not None else (lambda tag: f"/tags/{tag.lower()}")
    return render_markdown(source, tag_url=tag_url).html


def attachment_document(urls: Urls, media: Media) -> dict[str, Any]:
    return build_attachment(
        url=media_url(urls, media),
        media_type=media.media_type,
        name=media.alt_text,
        width=media.width,
        height=media.height,
    )


def note_document(
    urls: Urls,
    assembly: Assembly,
    communique: Communique,
    attachments: Sequence[Media] = (),
) -> dict[str, Any]:
    """The Note of a communiqué; ``attachments`` are its Media rows in order
    (:func:`attachments_of`, or :func:`note_of` to have them loaded)."""
    note = build_note(
        note_id=urls.communique(assembly.handle, communique.public_id),
        actor_id=urls.actor(assembly.handle),
        followers=urls.followers(assembly.handle),
        content_html=communique.content_html,
        language=communique.language,
        published=communique.published_at,
        updated=communique.updated_at,
        hashtags=[(tag, urls.tag(tag)) for tag in communique.hashtags],
        summary=communique.summary,
        attachments=[attachment_document(urls, m) for m in attachments],
    )
    note["shares"] = urls.shares(assembly.handle, communique.public_id)
    if communique.poll:
        note.update(polls.question_fields(communique))
    if communique.ratification:
        # Readable for every fediverse app, structured for another InterOcc.
        record = communique.ratification
        note["content"] += ratification.readable_html(record)
        note["contentMap"] = {communique.language: note["content"]}
        note["ratification"] = ratification.to_document(record)
    # Mentioned actors are addressed too (Mastodon notifies them only when they are).
    note["tag"] += [
        {"type": "Mention", "href": m["href"], "name": m["name"]} for m in communique.mentions
    ]
    note["cc"] += [m["href"] for m in communique.mentions]
    return note


def context_of(urls: Urls, document: dict[str, Any]) -> list[Any]:
    """The @context for a document that is or carries a Note: with the interocc context
    when it uses interocc terms (only then, so other software has nothing more to load)."""
    if "ratification" in document or "ratification" in (document.get("object") or {}):
        return [*CONTEXT, urls.base + ratification.CONTEXT_PATH]
    return list(CONTEXT)


def proven_note(
    urls: Urls, assembly: Assembly, communique: Communique, attachments: Sequence[Media] = ()
) -> dict[str, Any]:
    """The Note as its URL serves it: with its @context and the assembly's FEP-8b32 proof,
    made when the communiqué last changed, so one version always carries the same proof."""
    note = note_document(urls, assembly, communique, attachments)
    document = {"@context": context_of(urls, note), **note}
    made = communique.updated_at or communique.published_at
    return proofs.prove_object(document, proofs.signing_keys(urls, assembly), made)


def outbox_item(
    urls: Urls,
    assembly: Assembly,
    create: dict[str, Any],
    communique: Communique,
    attachments: Sequence[Media] = (),
) -> dict[str, Any]:
    """A communiqué's Create as its outbox lists it: the Create as recorded, carrying the Note
    as it is now (with its own proof). The Create's proof and signature covered the Note as
    first sent, so they are left out rather than served broken."""
    item = {k: v for k, v in create.items() if k not in ("@context", "proof", "signature")}
    item["object"] = proven_note(urls, assembly, communique, attachments)
    return item


@dataclass(frozen=True)
class OriginCheck:
    """What the permalink says of the communiqué's own proof."""

    key_id: str | None  # the key that signed it; None: the assembly has no proof key
    verified: bool


def check_origin(
    urls: Urls, assembly: Assembly, communique: Communique, attachments: Sequence[Media] = ()
) -> OriginCheck:
    """Verify the proof of the Note we serve with the key the actor publishes."""
    if not assembly.ed25519_private_key_pem:
        return OriginCheck(None, False)
    document = proven_note(urls, assembly, communique, attachments)
    public = integrity.ed25519_public_of(assembly.ed25519_private_key_pem)
    made = communique.updated_at or communique.published_at
    result = integrity.verify(document, public, now=made)
    key_id = urls.assertion_key_id(assembly.handle)
    return OriginCheck(key_id, isinstance(result, integrity.Verified))


async def note_of(
    session: AsyncSession, urls: Urls, assembly: Assembly, communique: Communique
) -> dict[str, Any]:
    """:func:`note_document` with the attachments read from the database."""
    found = await attachments_of(session, [communique.id])
    return note_document(urls, assembly, communique, found.get(communique.id, []))


async def attachments_of(
    session: AsyncSession, communique_ids: Sequence[int]
) -> dict[int, list[Media]]:
    """The attachments of several communiqués at once, by communiqué id, in order."""
    if not communique_ids:
        return {}
    query = (
        select(Media)
        .where(Media.communique_id.in_(communique_ids), Media.purpose == MediaPurpose.ATTACHMENT)
        .order_by(Media.communique_id, Media.position, Media.id)
    )
    out: dict[int, list[Media]] = {}
    for m in (await session.scalars(query)).all():
        assert m.communique_id is not None
        out.setdefault(m.communique_id, []).append(m)
    return out


def _link_attachments(communique: Communique, attachments: Sequence[Media]) -> None:
    for position, m in enumerate(attachments):
        m.communique_id = communique.id
        m.position = position


def _link_mentions(content_html: str, mentions: Sequence[Mention]) -> str:
    for m in mentions:
        # The page URL comes from the mentioned actor's document: http(s) only, else the
        # mention stays text.
        url = safe_link(m.url) or safe_link(m.href)
        if url is None:
            continue
        user = html.escape(m.name.split("@")[1])
        link = (
            f'<span class="h-card"><a href="{html.escape(url, quote=True)}" '
            f'class="u-url mention">@<span>{user}</span></a></span>'
        )
        content_html = re.sub(
            r"(?<![\w@/])" + re.escape(html.escape(m.name)) + r"(?![\w@])",
            link.replace("\\", "\\\\"),  # the link as is, never a template of \1 groups
            content_html,
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
    wake: asyncio.Event | None,
    extra_inboxes: Sequence[str] = (),
) -> Published:
    inboxes = await delivery.follower_inboxes(session, assembly.id)
    inboxes += [m["inbox"] for m in communique.mentions] + list(extra_inboxes)
    inboxes += await relays.inboxes(session)  # public communiqués go to subscribed relays
    sent = await outbox.send(
        session,
        urls,
        wake,
        assembly=assembly,
        activity_type=activity_type,
        obj=obj,
        to=[PUBLIC],
        cc=[urls.followers(assembly.handle)],
        inboxes=inboxes,
        public=True,
        now=now,
        communique_id=communique.id,
        context=context_of(urls, obj),
    )
    return Published(
        communique=communique,
        activity=sent.activity,
        url=urls.communique(assembly.handle, communique.public_id),
        deliveries=len(sent.deliveries),
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
    summary: str | None = None,
    attachments: Sequence[Media] = (),
    decision: dict[str, Any] | None = None,
    poll: dict[str, Any] | None = None,
    wake: asyncio.Event | None = None,
) -> Published:
    """A new communiqué, its Create{Note} and one delivery per follower inbox.

    ``mentions`` are resolved beforehand (server.activitypub.mentions.resolve): the
    mentioned actors are tagged, addressed and sent the Note. ``summary`` is a content
    warning. ``attachments`` are Media rows stored beforehand (server.media.store_upload)
    for this assembly; they are linked in the order given.
    ``wake`` is the in-process delivery worker's event (``ctx.wake``), set once the
    caller's transaction commits; None where no worker waits on it (the CLI, tests).
    """
    assembly = await assemblies.require_active(session, handle)
    rendered = render_markdown(_check_source(source), tag_url=urls.tag)
    files = await _load_attachments(session, assembly, attachments)
    if any(m.communique_id is not None for m in files):
        raise BadRequest("this file is already attached to another communiqué")
    communique = Communique(
        public_id=new_public_id(),
        assembly_id=assembly.id,
        source=source,
        content_html=_link_mentions(rendered.html, mentions),
        language=_check_language(language),
        summary=_check_summary(summary),
        hashtags=rendered.hashtags,
        mentions=_mention_rows(mentions),
        ratification=decision,
        poll=poll,
        published_at=now,
    )
    session.add(communique)
    await session.flush()
    _link_attachments(communique, files)
    await session.flush()
    return await _send(
        session,
        urls,
        assembly,
        communique,
        "Create",
        note_document(urls, assembly, communique, files),
        now,
        wake,
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
    summary: str | None | Keep = KEEP,
    language: str | None = None,
    attachments: Sequence[Media] | None = None,
    wake: asyncio.Event | None = None,
) -> Published:
    """New text for a communiqué: an Update carrying the whole Note with ``updated``.

    ``summary`` (the content warning) and ``language`` are kept unless given.
    ``attachments``, when given, is the whole new list in order: attachments of the
    communiqué left out are deleted (their rows now; their files by the caller, after
    commit, from ``Published.removed_media``), new ones must be unattached Media rows of
    this assembly. ``wake`` as for :func:`publish`.
    """
    assembly, communique = await find_by_url(session, urls, url)
    await assemblies.require_active(session, assembly.handle)
    if communique.deleted_at is not None:
        raise Gone("this communiqué was deleted")
    rendered = render_markdown(_check_source(source), tag_url=urls.tag)
    current = (await attachments_of(session, [communique.id])).get(communique.id, [])
    files = (
        current if attachments is None else await _load_attachments(session, assembly, attachments)
    )
    if any(m.communique_id not in {None, communique.id} for m in files):
        raise BadRequest("this file is already attached to another communiqué")
    if language is not None:
        communique.language = _check_language(language)
    if not isinstance(summary, Keep):
        communique.summary = _check_summary(summary)
    communique.source = source
    communique.content_html = _link_mentions(rendered.html, mentions)
    communique.hashtags = rendered.hashtags
    # Those mentioned before get the Update too, so their copy does not go stale.
    earlier = [m["inbox"] for m in communique.mentions]
    communique.mentions = _mention_rows(mentions)
    communique.updated_at = now
    kept = {m.id for m in files}
    removed = tuple(m for m in current if m.id not in kept)
    for m in removed:
        await session.delete(m)
    _link_attachments(communique, files)
    await session.flush()
    published = await _send(
        session,
        urls,
        assembly,
        communique,
        "Update",
        note_document(urls, assembly, communique, files),
        now,
        wake,
        earlier,
    )
    return dataclasses.replace(published, removed_media=removed)


async def delete(
    session: AsyncSession,
    urls: Urls,
    *,
    url: str,
    now: datetime,
    wake: asyncio.Event | None = None,
) -> Published:
    """Delete: the Note becomes a Tombstone (410) and followers get a Delete. ``wake`` as
    for :func:`publish`."""
    assembly, communique = await find_by_url(session, urls, url)
    await assemblies.require_active(session, assembly.handle)
    if communique.deleted_at is not None:
        raise Gone("this communiqué was already deleted")
    communique.deleted_at = now
    # Its files go with it (rows now; files by the caller after commit, see Published).
    removed = tuple((await attachments_of(session, [communique.id])).get(communique.id, []))
    for m in removed:
        await session.delete(m)
    await session.flush()
    tombstone = build_tombstone(
        object_id=urls.communique(assembly.handle, communique.public_id), deleted=now
    )
    published = await _send(session, urls, assembly, communique, "Delete", tombstone, now, wake)
    return dataclasses.replace(published, removed_media=removed)


async def create_activity_of(session: AsyncSession, communique_id: int) -> Activity | None:
    query = select(Activity).where(
        Activity.communique_id == communique_id, Activity.type == "Create"
    )
    return (await session.scalars(query)).first()


async def recent(
    session: AsyncSession, assembly_id: int, *, offset: int = 0, limit: int = 20
) -> Sequence[Communique]:
    """An assembly's communiqués not deleted, newest first."""
    query = (
        select(Communique)
        .where(Communique.assembly_id == assembly_id, Communique.deleted_at.is_(None))
        .order_by(Communique.published_at.desc(), Communique.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return (await session.scalars(query)).all()


async def store_reply(
    session: AsyncSession,
    *,
    communique_id: int,
    note: dict[str, Any],
    actor_uri: str,
    now: datetime,
) -> Reply | None:
    """Keep a remote reply to one of our communiqués (``note`` checked against its actor by
    the caller) as :func:`server.timeline.bounded_note` cuts it down: content sanitised, its
    link http(s) or none. None if it is kept already; BadRequest for a poll with too many
    choices."""
    note = bounded_note(note)
    uri = str(note["id"])
    if await session.scalar(select(Reply.id).where(Reply.uri == uri)) is not None:
        return None
    reply = Reply(
        uri=uri,
        communique_id=communique_id,
        actor_uri=actor_uri,
        content_html=content_of(note),
        url=link_of(note.get("url")),
        published_at=parse_time(note.get("published")) or now,
        document=note,
        received_at=now,
    )
    session.add(reply)
    await session.flush()
    return reply


async def update_reply(
    session: AsyncSession, reply: Reply, note: dict[str, Any], *, now: datetime
) -> None:
    """A reply edited by its author: the same cuts as :func:`store_reply`."""
    note = bounded_note(note)
    reply.content_html = content_of(note)
    reply.url = link_of(note.get("url"))
    reply.document = note
    reply.updated_at = parse_time(note.get("updated")) or now
    await session.flush()


async def replies_of(session: AsyncSession, communique_id: int) -> Sequence[Reply]:
    query = (
        select(Reply)
        .where(Reply.communique_id == communique_id)
        .order_by(Reply.published_at, Reply.id)
    )
    return (await session.scalars(query)).all()


async def close_due_polls(
    session: AsyncSession, urls: Urls, *, now: datetime, wake: asyncio.Event | None = None
) -> int:
    """Close the polls whose time is up: an Update with the final tally goes to the
    followers and to every voter. Returns how many were closed. The worker calls it and
    delivers right after, so it passes no ``wake``."""
    closed = 0
    for communique in await polls.due(session, now):
        assembly = await session.get(Assembly, communique.assembly_id)
        if assembly is None:
            continue
        communique.poll_closed_at = now
        await session.flush()
        voters = await polls.voter_inboxes(session, communique.id)
        await _send(
            session,
            urls,
            assembly,
            communique,
            "Update",
            await note_of(session, urls, assembly, communique),
            now,
            wake,
            voters,
        )
        closed += 1
    return closed
