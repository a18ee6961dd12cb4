"""Inbox handlers: one per activity type, each thin: read the normalised activity, check it
against its actor, call the domain.

A handler runs inside the processing transaction (``server.federation.inbox.receive``) and
returns False when the activity asked nothing of us (ignored). Raising an ``InterOccError``
refuses the activity: nothing it did is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import (
    assemblies,
    communiques,
    cosign,
    followers,
    following,
    letters,
    moderation,
    moving,
    polls,
    relays,
    timeline,
)
from server.activitypub.actors import (
    fetch_actor,
    forget_actor,
    parse_actor,
    same_origin,
    store_actor,
)
from server.activitypub.jsonld import as_list, id_of
from server.activitypub.proofs import Provenance
from server.content import MAX_LINK
from server.context import Context
from server.errors import BadRequest, Forbidden, NotFound
from server.federation import forwarding
from server.models import (
    Assembly,
    Follower,
    RemoteActor,
    Reply,
)

log = logging.getLogger(__name__)

Doc = dict[str, Any]
NOTE_TYPES = timeline.NOTE_TYPES


@dataclass(frozen=True)
class Incoming:
    ctx: Context
    session: AsyncSession
    activity: Doc  # normalised
    actor_uri: str
    inbox_assembly: Assembly | None  # None for the shared inbox
    raw: Doc | None = None  # the activity as it arrived (for forwarding)
    prefetched: Doc | None = None  # an Announce's object, fetched before the transaction
    provenance: Provenance | None = None  # how the actor's authorship was shown


Handler = Callable[[Incoming], Awaitable[bool]]  # returns False when the activity was ignored
HANDLERS: dict[str, Handler] = {}


def handles(activity_type: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[activity_type] = fn
        return fn

    return register


async def _local_assembly(incoming: Incoming, uri: str | None) -> Assembly:
    """The assembly a URI names, if it may be followed (server.followers); NotFound
    otherwise."""
    urls = incoming.ctx.urls
    path = urls.local_path(uri or "")
    prefix = urls.actor("")
    if path is None or not (uri or "").startswith(prefix):
        raise NotFound("the object is not an assembly on this instance")
    handle = (uri or "").removeprefix(prefix)
    return followers.require_followable(await assemblies.find(incoming.session, handle))


@handles("Follow")
async def handle_follow(incoming: Incoming) -> bool:
    """Resolve the assembly and the follower's actor (a fetch if we have not cached it);
    what follows is server.followers' policy."""
    ctx, session, activity = incoming.ctx, incoming.session, incoming.activity
    assembly = await _local_assembly(incoming, id_of(activity.get("object")))
    actor = await fetch_actor(session, ctx, incoming.actor_uri)
    return await followers.receive_follow(
        session,
        ctx,
        assembly=assembly,
        actor=actor,
        follow_uri=str(activity["id"]),
        now=ctx.clock(),
    )


@handles("Undo")
async def handle_undo(incoming: Incoming) -> bool:
    session, activity = incoming.session, incoming.activity
    obj = activity.get("object")
    inner_type = obj.get("type") if isinstance(obj, dict) else None
    object_id = id_of(obj)
    check_undo(activity, incoming.actor_uri)
    if isinstance(obj, dict):
        if inner_type == "Announce" and object_id:
            return await cosign.undo_share(
                session, announce_uri=object_id, actor_uri=incoming.actor_uri
            )
        if inner_type not in {None, "Follow"}:
            return False  # Undo of a Like: nothing of ours to change
    query = select(Follower).join(RemoteActor).where(RemoteActor.uri == incoming.actor_uri)
    if isinstance(obj, dict) and inner_type == "Follow" and id_of(obj.get("object")):
        target = await _local_assembly(incoming, id_of(obj.get("object")))
        query = query.where(Follower.assembly_id == target.id)
    elif object_id:
        query = query.where(Follower.follow_uri == object_id)
    else:
        raise BadRequest("Undo without an object")
    rows = (await session.scalars(query)).all()
    for row in rows:
        await session.delete(row)
    await session.flush()
    if not rows and object_id and not isinstance(obj, dict):
        # Undo naming its object by id only: it may be an Announce (a withdrawn co-signature).
        return await cosign.undo_share(
            session, announce_uri=object_id, actor_uri=incoming.actor_uri
        )
    return bool(rows)


@handles("Flag")
async def handle_flag(incoming: Incoming) -> bool:
    """A report about our actors or communiqués. Mastodon sends a Flag when its user asks to
    forward a report: from its instance actor, ``object`` the reported actor then statuses,
    ``content`` the comment. Kept once per Flag id, and only if it names something of ours."""
    activity = incoming.activity
    objects = [uri for uri in (id_of(o) for o in as_list(activity.get("object"))) if uri]
    comment = activity.get("content")
    if not isinstance(comment, str):
        mapped = activity.get("contentMap")
        comment = next(iter(mapped.values()), "") if isinstance(mapped, dict) and mapped else ""
    report = await moderation.store_report(
        incoming.session,
        incoming.ctx.urls,
        uri=str(activity["id"]),
        actor_uri=incoming.actor_uri,
        objects=objects,
        comment=str(comment),
        document=activity,
        now=incoming.ctx.clock(),
    )
    return report is not None


def _note_of(incoming: Incoming) -> Doc | None:
    """The embedded Note/Article/Page of a Create or Update, checked against its actor."""
    return checked_note(incoming.activity, incoming.actor_uri)


def checked_note(activity: Doc, actor_uri: str) -> Doc | None:
    """The Note/Article/Page an activity embeds, or None; Forbidden/BadRequest when it claims
    another origin or another author. Reads the document alone, so the inbox request runs
    it too (on the body as it arrived) to refuse a forgery at once."""
    obj = activity.get("object")
    if not isinstance(obj, dict) or not set(as_list(obj.get("type"))) & NOTE_TYPES:
        return None
    object_id = id_of(obj)
    if not object_id or not same_origin(object_id, actor_uri):
        raise Forbidden("the object is not on the actor's origin")
    in_reply_to = id_of(obj.get("inReplyTo"))
    if len(object_id) > MAX_LINK or (in_reply_to is not None and len(in_reply_to) > MAX_LINK):
        raise BadRequest(f"the object's ids are longer than {MAX_LINK} characters")
    # Every author named (attributedTo may be a list) is the actor: a list must not slip
    # another author past the check.
    authors = [id_of(a) for a in as_list(obj.get("attributedTo"))]
    if any(author != actor_uri for author in authors):
        raise Forbidden("the object is attributed to someone else")
    # Capped and with safe links before any handler sees it (server/timeline.py).
    return timeline.bounded_note(obj)


def check_undo(activity: Doc, actor_uri: str) -> None:
    """An Undo may only undo the actor's own activity (document alone, like checked_note)."""
    obj = activity.get("object")
    if isinstance(obj, dict) and id_of(obj.get("actor")) not in {None, actor_uri}:
        raise Forbidden("cannot undo another actor's activity")


@handles("Create")
async def handle_create(incoming: Incoming) -> bool:
    """A Note: a reply to one of our communiqués (kept, linked), a letter or mention for an
    assembly's correspondence, and/or a post for the timelines of assemblies that follow
    its author."""
    note = _note_of(incoming)
    if note is None:
        return False
    ctx, session, now = incoming.ctx, incoming.session, incoming.ctx.clock()
    vote = await _vote(incoming, note)
    if vote is not None:
        return vote
    reply = await _store_reply(incoming, note)
    letter = await letters.receive(session, ctx, note, actor_uri=incoming.actor_uri, now=now)
    posted = await timeline.on_create(
        session,
        note,
        actor_uri=incoming.actor_uri,
        activity_uri=str(incoming.activity["id"]),
        now=now,
    )
    return reply or letter or posted


async def _vote(incoming: Incoming, note: Doc) -> bool | None:
    """A vote in one of our straw polls (True counted, False a repeat), or None if the Note
    is not a vote. A vote in a closed poll is refused: nothing is stored."""
    choice = polls.vote_of(note)
    in_reply_to = id_of(note.get("inReplyTo"))
    if choice is None or not in_reply_to or not incoming.ctx.urls.is_local(in_reply_to):
        return None
    try:
        _assembly, communique = await communiques.find_by_url(
            incoming.session, incoming.ctx.urls, in_reply_to
        )
    except NotFound:
        return None
    if not communique.poll or communique.deleted_at is not None:
        return None
    return await polls.record_vote(
        incoming.session,
        communique,
        choice=choice,
        actor_uri=incoming.actor_uri,
        vote_uri=str(note["id"]),
        now=incoming.ctx.clock(),
    )


async def _store_reply(incoming: Incoming, note: Doc) -> bool:
    """A reply to one of our communiqués, kept sanitised and linked to it."""
    in_reply_to = id_of(note.get("inReplyTo"))
    if not in_reply_to or not incoming.ctx.urls.is_local(in_reply_to):
        return False
    try:
        _assembly, communique = await communiques.find_by_url(
            incoming.session, incoming.ctx.urls, in_reply_to
        )
    except NotFound:
        return False
    if communique.deleted_at is not None:
        return False
    if not timeline.is_public(note):
        # A reply addressed to the assembly alone (or to followers) is correspondence: it
        # goes to the assembly's letters, never under the communiqué on a public page.
        return False
    reply = await communiques.store_reply(
        incoming.session,
        communique_id=communique.id,
        note=note,
        actor_uri=incoming.actor_uri,
        now=incoming.ctx.clock(),
    )
    return reply is not None


@handles("Delete")
async def handle_delete(incoming: Incoming) -> bool:
    object_id = id_of(incoming.activity.get("object"))
    if object_id == incoming.actor_uri:
        return await forget_actor(incoming.session, incoming.actor_uri)
    if not object_id:
        return False
    posted = await timeline.on_delete(
        incoming.session, object_id, actor_uri=incoming.actor_uri, now=incoming.ctx.clock()
    )
    reply = (
        await incoming.session.scalars(
            select(Reply).where(Reply.uri == object_id, Reply.actor_uri == incoming.actor_uri)
        )
    ).first()
    if reply is None:
        return posted
    await incoming.session.delete(reply)
    await incoming.session.flush()
    return True


@handles("Update")
async def handle_update(incoming: Incoming) -> bool:
    note = _note_of(incoming)
    if note is not None:
        posted = await timeline.on_update(
            incoming.session, note, actor_uri=incoming.actor_uri, now=incoming.ctx.clock()
        )
        reply = (
            await incoming.session.scalars(
                select(Reply).where(Reply.uri == note["id"], Reply.actor_uri == incoming.actor_uri)
            )
        ).first()
        if reply is None:
            return posted
        if not timeline.is_public(note):
            # Edited to a narrower audience: it leaves the public page.
            await incoming.session.delete(reply)
            await incoming.session.flush()
            return True
        await communiques.update_reply(incoming.session, reply, note, now=incoming.ctx.clock())
        return True
    if id_of(incoming.activity.get("object")) != incoming.actor_uri:
        return False
    # The actor as its origin serves it (see prefetch), never the embedded copy: an Update
    # cannot install a key or an inbox that the actor's own document does not list.
    fresh = incoming.prefetched
    if fresh is None or id_of(fresh.get("id")) != incoming.actor_uri:
        return False
    try:
        parse_actor(fresh)
    except BadRequest:
        return False
    known = await incoming.session.scalar(
        select(RemoteActor.id).where(RemoteActor.uri == incoming.actor_uri)
    )
    if known is None:
        return False
    await store_actor(incoming.session, incoming.ctx, fresh)
    return True


def _follow_id(incoming: Incoming) -> str | None:
    obj = incoming.activity.get("object")
    if isinstance(obj, dict) and obj.get("type") not in {None, "Follow"}:
        return None
    return id_of(obj)


async def _answer(incoming: Incoming, *, accepted: bool) -> bool:
    """An Accept or Reject of one of our Follows; only the followed actor's answer counts."""
    follow_uri = _follow_id(incoming)
    if not follow_uri:
        return False
    return await following.answered(
        incoming.session,
        follow_uri=follow_uri,
        actor_uri=incoming.actor_uri,
        accepted=accepted,
        now=incoming.ctx.clock(),
    )


@handles("Accept")
async def handle_accept(incoming: Incoming) -> bool:
    return await _answer(incoming, accepted=True)


@handles("Reject")
async def handle_reject(incoming: Incoming) -> bool:
    return await _answer(incoming, accepted=False)


@handles("Announce")
async def handle_announce(incoming: Incoming) -> bool:
    """A co-signature of one of our communiqués (a Share, forwarded to the author's
    followers when the Announce addresses them), or a boost by an actor our assemblies
    follow (onto their timelines)."""
    ctx, session, activity = incoming.ctx, incoming.session, incoming.activity
    object_id = id_of(activity.get("object"))
    if not object_id:
        return False
    now = ctx.clock()
    if ctx.urls.is_local(object_id):
        shared = await cosign.record_share(
            session,
            ctx,
            announce=activity,
            actor_uri=incoming.actor_uri,
            now=now,
            provenance=incoming.provenance,
        )
        if shared and incoming.raw is not None:
            await forwarding.forward_to_followers(
                session, ctx, activity=activity, raw=incoming.raw, object_uri=object_id, now=now
            )
        return shared
    note = incoming.prefetched
    if note is None or id_of(note.get("id")) != object_id:
        return False
    author = id_of(note.get("attributedTo"))
    if not author or not same_origin(author, object_id):
        return False
    if await relays.is_relay(session, incoming.actor_uri):
        # A relay's Announce: another server's public post, kept (sanitised) for whoever
        # follows its author here; it goes on no timeline by itself.
        if not timeline.is_public(note):
            return False
        await timeline.store_post(session, note, actor_uri=author, now=now)
        await timeline.on_create(
            session, note, actor_uri=author, activity_uri=str(activity["id"]), now=now
        )
        return True
    return await timeline.on_announce(
        session,
        note,
        author_uri=author,
        announcer_uri=incoming.actor_uri,
        activity_uri=str(activity["id"]),
        now=now,
    )


def check_move(activity: Doc, actor_uri: str) -> str:
    """A Move moves its own actor (the signer) to a target; returns the target."""
    if id_of(activity.get("object")) != actor_uri:
        raise Forbidden("a Move moves its own actor, no one else")
    target = id_of(activity.get("target"))
    if not target or not target.startswith(("https://", "http://")) or len(target) > MAX_LINK:
        raise BadRequest("a Move needs a target actor")
    return target


@handles("Move")
async def handle_move(incoming: Incoming) -> bool:
    """An actor moves to another identity: server.moving checks the target names it back
    and moves our follows (the target's document was fetched before the transaction)."""
    target = check_move(incoming.activity, incoming.actor_uri)
    return await moving.receive_move(
        incoming.session,
        incoming.ctx,
        origin=incoming.actor_uri,
        target=target,
        target_document=incoming.prefetched,
        now=incoming.ctx.clock(),
    )
