"""Co-signing: an assembly endorses a communiqué by announcing it to its followers.

Outgoing, the Announce goes to the co-signer's followers and to the communiqué's author (so
the author can list the co-signature). Incoming, an Announce of one of our communiqués is a
Share; the communiqué's page lists those made by assemblies (Group actors) as co-signers, and
the Note's ``shares`` collection lists every Announce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server import assemblies, communiques
from server.activitypub import delivery, outbox
from server.activitypub.actors import fetch_document
from server.activitypub.jsonld import id_of
from server.activitypub.proofs import Provenance
from server.activitypub.vocab import PUBLIC
from server.context import Context
from server.errors import BadRequest, Conflict, NotFound, RemoteError
from server.following import prefetch, resolve_actor
from server.models import Activity, RemoteActor, Share
from server.timeline import NOTE_TYPES, store_post

Doc = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """What is being co-signed: the Note's id, its author, and the author's inbox."""

    note_id: str
    author_uri: str
    note: Doc | None  # the remote Note as fetched (None for one of ours)


async def find_target(ctx: Context, url: str) -> Target:
    """Look the communiqué up (a network fetch for a remote one: call outside a transaction)."""
    url = url.strip()
    if not url.startswith(("https://", "http://")) or len(url) > 2048:
        raise BadRequest("give the communiqué's URL", field="url")
    if ctx.urls.is_local(url):
        async with ctx.sessions() as session:
            assembly, item = await communiques.find_by_url(session, ctx.urls, url)
            if item.deleted_at is not None:
                raise BadRequest("this communiqué was deleted", field="url")
            return Target(url, ctx.urls.actor(assembly.handle), None)
    try:
        note = await fetch_document(ctx, url)
    except RemoteError as exc:
        raise BadRequest(f"cannot fetch that communiqué: {exc.message}", field="url") from exc
    author = id_of(note.get("attributedTo"))
    if note.get("type") not in NOTE_TYPES or not author:
        raise BadRequest("that URL is not a post", field="url")
    await prefetch(ctx, author)  # the author's actor, stored before the write transaction
    return Target(str(note["id"]), author, note)


async def cosign(
    session: AsyncSession, ctx: Context, *, handle: str, target: Target, now: datetime
) -> Activity:
    assembly = await assemblies.require_active(session, handle)
    me = ctx.urls.actor(assembly.handle)
    if target.author_uri == me:
        raise BadRequest("an assembly does not co-sign its own communiqué", field="url")
    done = await session.scalar(
        select(Activity.id).where(
            Activity.assembly_id == assembly.id,
            Activity.type == "Announce",
            Activity.document["object"].as_string() == target.note_id,
        )
    )
    if done is not None:
        raise Conflict("this assembly already co-signed it", field="url")
    if await delivery.blocking_domain(session, target.author_uri) is not None:
        raise BadRequest("the author's domain is blocked on this instance", field="url")
    # Cached by find_target (remote) or read locally (ours): no request in this transaction.
    author: RemoteActor = await resolve_actor(session, ctx, target.author_uri)
    if target.note is not None:
        await store_post(session, target.note, actor_uri=target.author_uri, now=now)
    # The author's followers are addressed too: the author's server forwards the Announce
    # to them (we cannot know who they are), so they see who co-signed.
    author_followers = id_of(author.document.get("followers"))
    cc = [ctx.urls.followers(assembly.handle), target.author_uri]
    if author_followers:
        cc.append(author_followers)
    inboxes = await delivery.follower_inboxes(session, assembly.id)
    if target.note is None:
        # The author is an assembly of this instance: its followers are known here, so
        # they get the Announce directly (forwarding would find it already on record).
        _author, _item = await communiques.find_by_url(session, ctx.urls, target.note_id)
        inboxes += await delivery.follower_inboxes(session, _author.id)
    sent = await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=assembly,
        activity_type="Announce",
        obj=target.note_id,
        to=[PUBLIC],
        cc=cc,
        inboxes=[*inboxes, author.delivery_inbox],
        public=True,
        now=now,
    )
    return sent.activity


async def record_share(
    session: AsyncSession,
    ctx: Context,
    *,
    announce: Doc,
    actor_uri: str,
    now: datetime,
    provenance: Provenance | None = None,
) -> bool:
    """An Announce of one of our communiqués: remember who shared it, and how the Announce
    was shown to be theirs (``provenance``: the key and the scheme, shown on the permalink)."""
    object_id = id_of(announce.get("object"))
    if not object_id or not ctx.urls.is_local(object_id):
        return False
    try:
        _assembly, item = await communiques.find_by_url(session, ctx.urls, object_id)
    except NotFound:
        return False
    if item.deleted_at is not None:
        return False
    existing = (
        await session.scalars(
            select(Share).where(Share.communique_id == item.id, Share.actor_uri == actor_uri)
        )
    ).first()
    actor = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == actor_uri))).first()
    if existing is None:
        existing = Share(communique_id=item.id, actor_uri=actor_uri, created_at=now)
        session.add(existing)
    existing.announce_uri = str(announce["id"])
    existing.actor_name = (actor.name or actor.preferred_username) if actor else None
    existing.actor_type = actor.type if actor else None
    existing.verified_by = provenance.key_id if provenance else None
    existing.verified_with = str(provenance.scheme) if provenance else None
    await session.flush()
    return True


async def undo_share(session: AsyncSession, *, announce_uri: str, actor_uri: str) -> bool:
    result = await session.execute(
        delete(Share).where(Share.announce_uri == announce_uri, Share.actor_uri == actor_uri)
    )
    return bool(getattr(result, "rowcount", 0))


async def shares_of(session: AsyncSession, communique_id: int) -> Sequence[Share]:
    query = select(Share).where(Share.communique_id == communique_id).order_by(Share.created_at)
    return (await session.scalars(query)).all()


async def share_count(session: AsyncSession, communique_id: int) -> int:
    query = select(func.count(Share.id)).where(Share.communique_id == communique_id)
    return int((await session.scalar(query)) or 0)
