"""Correspondence: letters between assemblies (and anyone else), never public.

A letter is a Note addressed only to its recipients (no Public, no followers collection), with
a Mention tag for each so Mastodon files it as a direct message. Letters thread by
``inReplyTo``; each assembly keeps its own copy of a thread (Letter rows, ``thread`` = the
first letter's id). Incoming letters are: Notes addressed to an assembly that are not public,
any Note mentioning it, and any reply to one of its letters or communiqués. None of this is
shown on public pages nor listed in an outbox.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assemblies
from server.activitypub import outbox
from server.activitypub.jsonld import as_list, id_of
from server.activitypub.vocab import iso
from server.content import render_markdown, safe_link
from server.context import Context
from server.errors import BadRequest, NotFound
from server.following import resolve_actor
from server.models import Assembly, AssemblyStatus, Letter, RemoteActor
from server.timeline import MAX_ADDRESSED, bounded_note, content_of, is_public, parse_time
from server.urls import new_public_id

MAX_SOURCE = 20_000
MAX_RECIPIENTS = 20

Doc = dict[str, Any]


def _mention_link(actor: RemoteActor) -> str:
    name = html.escape(actor.preferred_username or "someone")
    link = safe_link(actor.url) or safe_link(actor.uri)
    if link is None:
        return f'<span class="h-card">@<span>{name}</span></span>'
    href = html.escape(link, quote=True)
    return (
        f'<span class="h-card"><a href="{href}" class="u-url mention">'
        f"@<span>{name}</span></a></span>"
    )


def _acct(actor: RemoteActor) -> str:
    return f"@{actor.preferred_username or '?'}@{actor.domain}"


async def write(
    session: AsyncSession,
    ctx: Context,
    *,
    handle: str,
    recipients: Sequence[str],
    source: str,
    now: datetime,
    in_reply_to: str | None = None,
) -> Letter:
    """Send a letter from ``handle``; with ``in_reply_to`` (a letter's id) it answers a thread.

    An answer goes to the thread's other correspondents unless ``recipients`` are given.
    """
    assembly = await assemblies.require_active(session, handle)
    if not source.strip():
        raise BadRequest("a letter needs some text", field="content")
    if len(source) > MAX_SOURCE:
        raise BadRequest(f"a letter is at most {MAX_SOURCE} characters", field="content")
    me = ctx.urls.actor(assembly.handle)
    parent: Letter | None = None
    targets = [r.strip() for r in recipients if r.strip()]
    if in_reply_to:
        parent = await _letter(session, assembly.id, in_reply_to)
        if parent is None:
            raise NotFound("no such letter in this assembly's correspondence")
        if not targets:
            targets = [parent.actor_uri, *parent.recipients]
    targets = [t for t in dict.fromkeys(targets) if t != me]
    if not targets:
        raise BadRequest("write to at least one assembly or person", field="recipients")
    if len(targets) > MAX_RECIPIENTS:
        raise BadRequest(f"at most {MAX_RECIPIENTS} recipients", field="recipients")
    actors: list[RemoteActor] = []
    for target in targets:
        try:
            actors.append(await resolve_actor(session, ctx, target))
        except BadRequest as exc:
            raise BadRequest(exc.message, field="recipients") from exc
    actors = [a for a in {a.uri: a for a in actors}.values() if a.uri != me]
    if not actors:
        raise BadRequest("write to at least one assembly or person", field="recipients")
    rendered = render_markdown(source, tag_url=ctx.urls.tag)
    mentions = " ".join(_mention_link(a) for a in actors)
    content = f"<p>{mentions}</p>{rendered.html}"
    uri = ctx.urls.letter(assembly.handle, new_public_id())
    to = [a.uri for a in actors]
    note: Doc = {
        "id": uri,
        "type": "Note",
        "attributedTo": me,
        "content": content,
        "to": to,
        "cc": [],
        "published": iso(now),
        "sensitive": False,
        "inReplyTo": parent.uri if parent else None,
        "tag": [{"type": "Mention", "href": a.uri, "name": _acct(a)} for a in actors],
    }
    await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=assembly,
        activity_type="Create",
        obj=note,
        to=to,
        inboxes=[a.inbox_uri for a in actors],
        public=False,
        now=now,
    )
    letter = Letter(
        assembly_id=assembly.id,
        uri=uri,
        outgoing=True,
        actor_uri=me,
        recipients=to,
        content_html=content,
        source=source,
        in_reply_to=parent.uri if parent else None,
        thread=parent.thread if parent else uri,
        published_at=now,
        read_at=now,
        document=note,
    )
    session.add(letter)
    await session.flush()
    return letter


async def _letter(session: AsyncSession, assembly_id: int, uri: str) -> Letter | None:
    query = select(Letter).where(Letter.assembly_id == assembly_id, Letter.uri == uri)
    return (await session.scalars(query)).first()


async def correspondents(ctx: Context, handle: str, letter_uri: str) -> list[str]:
    """Who an answer to ``letter_uri`` goes to by default (empty if there is no such
    letter): its author and its other recipients."""
    async with ctx.sessions() as session:
        assembly = await assemblies.find(session, handle)
        parent = await _letter(session, assembly.id, letter_uri) if assembly else None
    if parent is None:
        return []
    me = ctx.urls.actor(handle)
    return [u for u in dict.fromkeys([parent.actor_uri, *parent.recipients]) if u != me]


def _addressed(note: Doc) -> set[str]:
    found = {id_of(v) for k in ("to", "cc", "bto", "audience") for v in as_list(note.get(k))}
    return {u for u in found if u}


def _mentioned(note: Doc) -> set[str]:
    hrefs = set()
    for tag in as_list(note.get("tag")):
        if isinstance(tag, dict) and tag.get("type") == "Mention":
            href = id_of(tag.get("href"))
            if href:
                hrefs.add(href)
    return hrefs


async def receive(
    session: AsyncSession, ctx: Context, note: Doc, *, actor_uri: str, now: datetime
) -> bool:
    """File an incoming Note in each of our assemblies' correspondence it belongs to.

    The Note is kept as :func:`server.timeline.bounded_note` cuts it down; only its first
    tags and addressees are read (BadRequest for a poll with too many choices)."""
    note = bounded_note(note)
    prefix = ctx.urls.actor("")
    addressed, mentioned = _addressed(note), _mentioned(note)
    handles = {u.removeprefix(prefix) for u in addressed | mentioned if u.startswith(prefix)}
    in_reply_to = id_of(note.get("inReplyTo"))
    if in_reply_to and in_reply_to.startswith(prefix):
        # A reply to one of our letters or communiqués: its author's correspondence.
        handles.add(in_reply_to.removeprefix(prefix).split("/", 1)[0])
    public = is_public(note)
    filed = False
    for handle in sorted(h for h in handles if h and "/" not in h):
        assembly = await assemblies.find(session, handle)
        if assembly is None or assembly.status != AssemblyStatus.APPROVED:
            continue
        me = ctx.urls.actor(handle)
        replying = bool(in_reply_to and in_reply_to.startswith(me + "/"))
        if public and me not in mentioned and not replying:
            continue  # a public post that merely addresses us is not correspondence
        if await _letter(session, assembly.id, str(note["id"])) is not None:
            continue
        parent = await _letter(session, assembly.id, in_reply_to) if in_reply_to else None
        thread = parent.thread if parent else (in_reply_to if replying else str(note["id"]))
        session.add(
            Letter(
                assembly_id=assembly.id,
                uri=str(note["id"]),
                outgoing=False,
                actor_uri=actor_uri,
                recipients=sorted(addressed - {actor_uri})[:MAX_ADDRESSED],
                content_html=content_of(note),
                in_reply_to=in_reply_to,
                thread=thread or str(note["id"]),
                published_at=parse_time(note.get("published")) or now,
                document=note,
            )
        )
        filed = True
    await session.flush()
    return filed


@dataclass(frozen=True)
class Thread:
    uri: str
    latest: Letter
    count: int
    unread: int


async def threads(session: AsyncSession, assembly: Assembly, *, limit: int = 100) -> list[Thread]:
    """The assembly's correspondence, one entry per thread, most recent activity first."""
    stats = (
        select(
            Letter.thread,
            func.max(Letter.id).label("latest"),
            func.count(Letter.id).label("n"),
            func.count(Letter.id).filter(Letter.read_at.is_(None)).label("unread"),
        )
        .where(Letter.assembly_id == assembly.id)
        .group_by(Letter.thread)
        .order_by(func.max(Letter.id).desc())
        .limit(limit)
    )
    rows = (await session.execute(stats)).all()
    latest_ids = [row.latest for row in rows]
    letters = {
        letter.id: letter
        for letter in (await session.scalars(select(Letter).where(Letter.id.in_(latest_ids))))
    }
    return [
        Thread(uri=row.thread, latest=letters[row.latest], count=row.n, unread=row.unread)
        for row in rows
    ]


async def thread(
    session: AsyncSession, assembly: Assembly, thread_uri: str, *, now: datetime | None = None
) -> list[Letter]:
    """Every letter of one thread, oldest first; with ``now`` they are marked read."""
    query = (
        select(Letter)
        .where(Letter.assembly_id == assembly.id, Letter.thread == thread_uri)
        .order_by(Letter.id)  # arrival order: remote times have only seconds
    )
    found = list((await session.scalars(query)).all())
    if now is not None:
        for letter in found:
            letter.read_at = letter.read_at or now
        await session.flush()
    return found
