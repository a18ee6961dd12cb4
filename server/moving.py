"""Moving an assembly to another identity, as Mastodon moves an account.

An assembly lists its other identities (on a sibling instance, say) as aliases: its actor's
``alsoKnownAs``. To move, the new identity must list the old one in *its* ``alsoKnownAs``
(each side vouches for the other); then ``Move{actor: old, object: old, target: new}`` goes to
every follower's inbox, and their servers (Mastodon, GoToSocial, Misskey, Fedify apps…)
check the new identity's aliases and follow it instead. The old actor then carries
``movedTo``, its pages say where it went, and it can no longer publish.

Network lookups (WebFinger, the target's actor document) happen in :func:`prepare`,
outside any transaction; the changes are made in the caller's transaction.

The other way (:func:`receive_move`): an actor our assemblies follow, or that follows them,
moves; our follows move with it, and its new identity is accepted as a follower at once.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server import archive, assemblies, following
from server.activitypub import delivery, outbox
from server.activitypub.actors import fetch_actor, fetch_document, store_actor
from server.activitypub.client import SignatureAuth
from server.activitypub.jsonld import as_list, id_of
from server.activitypub.signatures import load_private_key
from server.activitypub.vocab import PUBLIC, build_activity, build_assembly_actor
from server.context import Context
from server.errors import BadRequest, Conflict, Forbidden, InterOccError, NotFound, RemoteError
from server.models import Activity, Assembly, AssemblyStatus, Following, RemoteActor

MAX_ALIASES = 10

Doc = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """Another identity, as it is now: its actor id and the aliases it lists."""

    uri: str
    aliases: frozenset[str]


async def prepare(ctx: Context, target: str) -> None:
    """Resolve ``target`` (@name@host or an actor URL) over the network, outside any
    transaction, so that the calls below find it cached."""
    await following.prefetch(ctx, target)


async def _resolve(session: AsyncSession, ctx: Context, target: str) -> str:
    actor = await following.resolve_actor(session, ctx, target)
    return actor.uri


async def add_alias(session: AsyncSession, ctx: Context, *, handle: str, target: str) -> str:
    """List ``target`` among the assembly's other identities; returns its actor id."""
    assembly = await assemblies.require_active(session, handle)
    uri = await _resolve(session, ctx, target)
    if uri == ctx.urls.actor(assembly.handle):
        raise BadRequest("an assembly is not an alias of itself")
    aliases = list(assembly.also_known_as or [])
    if uri in aliases:
        raise Conflict(f"{uri} is already an alias of {assembly.handle}")
    if len(aliases) >= MAX_ALIASES:
        raise BadRequest(f"an assembly has at most {MAX_ALIASES} aliases")
    assembly.also_known_as = [*aliases, uri]
    await _announce(session, ctx, assembly, now=ctx.clock())
    return uri


async def remove_alias(session: AsyncSession, ctx: Context, *, handle: str, target: str) -> str:
    """Take ``target`` (an alias's actor id, handle or URL) off the assembly's aliases."""
    assembly = await assemblies.get(session, handle)
    aliases = list(assembly.also_known_as or [])
    uri = target.strip() if target.strip() in aliases else await _resolve(session, ctx, target)
    if uri not in aliases:
        raise NotFound(f"{uri} is not an alias of {assembly.handle}")
    assembly.also_known_as = [a for a in aliases if a != uri]
    await _announce(session, ctx, assembly, now=ctx.clock())
    return uri


async def current_target(ctx: Context, target: str) -> Target:
    """The identity ``target`` names, with the aliases its actor lists *now*: fetched from
    its origin (or read here, for an assembly of this instance), never from a cache."""
    async with ctx.sessions() as session:
        uri = await _resolve(session, ctx, target)
        if ctx.urls.is_local(uri):
            handle = uri.removeprefix(ctx.urls.actor(""))
            local = (
                await session.scalars(select(Assembly).where(Assembly.handle == handle))
            ).first()
            if local is None or local.status != AssemblyStatus.APPROVED:
                raise BadRequest(f"{uri} is not an assembly that federates")
            return Target(uri, frozenset(local.also_known_as or []))
    try:
        document = await fetch_document(ctx, uri)
    except RemoteError as exc:
        raise BadRequest(f"cannot read {uri}: {exc.message}") from exc
    aliases = {id_of(a) for a in as_list(document.get("alsoKnownAs"))}
    return Target(uri, frozenset(a for a in aliases if a))


async def move(
    session: AsyncSession, ctx: Context, *, handle: str, target: Target, now: datetime
) -> Activity:
    """Move the assembly to ``target``: refused unless the target names this assembly among
    its aliases. Sends the Move to every follower inbox and marks the assembly moved."""
    assembly = await assemblies.require_active(session, handle)
    origin = ctx.urls.actor(assembly.handle)
    if target.uri == origin:
        raise BadRequest("an assembly cannot move to itself")
    if origin not in target.aliases:
        raise BadRequest(
            f"{target.uri} does not list {origin} among its aliases (alsoKnownAs): "
            "add this assembly as an alias there first"
        )
    if target.uri not in (assembly.also_known_as or []):
        assembly.also_known_as = [*(assembly.also_known_as or []), target.uri]
    sent = await outbox.send(
        session,
        ctx.urls,
        ctx.wake,
        assembly=assembly,
        activity_type="Move",
        obj=origin,
        target=target.uri,
        to=[ctx.urls.followers(assembly.handle)],
        inboxes=await delivery.follower_inboxes(session, assembly.id),
        public=True,
        now=now,
    )
    assembly.moved_to = target.uri
    assembly.moved_at = now
    await _announce(session, ctx, assembly, now=now)
    return sent.activity


async def _announce(
    session: AsyncSession, ctx: Context, assembly: Assembly, *, now: datetime
) -> None:
    """Followers' servers get the actor as it now is (aliases, movedTo)."""
    await session.flush()
    await assemblies.announce_profile(
        session,
        ctx.urls,
        assembly=assembly,
        actor_document=build_assembly_actor(ctx.urls, assembly),
        now=now,
        wake=ctx.wake,
    )


# -- a Move from elsewhere ------------------------------------------------------------------


async def receive_move(
    session: AsyncSession,
    ctx: Context,
    *,
    origin: str,
    target: str,
    target_document: Doc | None,
    now: datetime,
) -> bool:
    """A verified ``Move`` of ``origin`` (the signer, who is also the object) to ``target``.

    Believed only if the target, as its origin serves it now (``target_document``, fetched
    before the transaction; read here for an assembly of this instance), names ``origin``
    among its aliases: Mastodon's check. Then every assembly of ours that follows
    ``origin`` follows ``target`` instead (Undo, then Follow), and ``origin`` is marked
    moved, so that when ``target`` follows an assembly that ``origin`` followed, it is
    accepted at once (:func:`server.followers.receive_follow`). Returns False if it
    changed nothing.
    """
    if target == origin:
        raise BadRequest("a Move needs a target other than its object")
    if ctx.urls.is_local(target):
        handle = target.removeprefix(ctx.urls.actor(""))
        local = (await session.scalars(select(Assembly).where(Assembly.handle == handle))).first()
        if local is None or local.status != AssemblyStatus.APPROVED:
            raise Forbidden("the Move's target is no assembly of this instance")
        aliases = set(local.also_known_as or [])
        target_actor = await fetch_actor(session, ctx, target)
    else:
        if target_document is None or id_of(target_document.get("id")) != target:
            raise Forbidden("the Move's target could not be read from its origin")
        aliases = {a for a in map(id_of, as_list(target_document.get("alsoKnownAs"))) if a}
        target_actor = await store_actor(session, ctx, target_document)
    if origin not in aliases:
        raise Forbidden("the Move's target does not name its object among its aliases")
    moved = (await session.scalars(select(RemoteActor).where(RemoteActor.uri == origin))).first()
    if moved is not None:
        moved.moved_to = target
    follows = (
        await session.scalars(
            select(Assembly)
            .join(Following, Assembly.id == Following.assembly_id)
            .where(Following.target_uri == origin)
        )
    ).all()
    for assembly in follows:
        await following.unfollow(session, ctx, handle=assembly.handle, target=origin, now=now)
        if assembly.moved_to or assembly.status != AssemblyStatus.APPROVED:
            continue
        if await following.find(session, assembly.id, target_actor.uri) is None:
            await following.follow(
                session, ctx, handle=assembly.handle, target=target_actor.uri, now=now
            )
    await session.flush()
    return moved is not None or bool(follows)


# -- recovery, when the old server is gone ----------------------------------------------------

RECOVERY_CONCURRENCY = 8


@dataclass(frozen=True)
class Recovered:
    old: str
    new: str
    sent: tuple[str, ...]  # inboxes that took the Move (2xx)
    failed: tuple[tuple[str, str], ...]  # (inbox, why)


def recovery_inboxes(followers: list[Any]) -> list[str]:
    """One inbox per server (the shared inbox where there is one), as the archive lists the
    followers; anything that is not an http(s) URL is left out."""
    found: dict[str, None] = {}
    for follower in followers:
        if not isinstance(follower, dict):
            continue
        endpoints = follower.get("endpoints")
        shared = endpoints.get("sharedInbox") if isinstance(endpoints, dict) else None
        inbox = shared or follower.get("inbox")
        if isinstance(inbox, str) and inbox.startswith(("https://", "http://")):
            found[inbox] = None
    return list(found)


async def recover(ctx: Context, *, handle: str) -> Recovered:
    """Tell the followers of an assembly's old identity, whose server is gone, to follow the
    assembly here: a ``Move{object: old, target: new}`` signed with the OLD key (kept by
    the import, server/archive.py), sent straight to every follower inbox of the archive.

    Servers that cached the old key when the old server lived (Mastodon does) verify it
    without asking the old server, check that the new identity names the old one in
    ``alsoKnownAs`` (the import set it) and follow the new one. Running it again sends the
    Move again (to retry the inboxes that failed).
    """
    now = ctx.clock()
    async with ctx.sessions() as session:
        assembly = await assemblies.require_active(session, handle)
        record = await archive.import_record(session, assembly.handle)
        blocked = await delivery.blocked_domains(session)
    if record is None:
        raise BadRequest(f"{assembly.handle} was not imported from an archive: nothing to recover")
    old, new = str(record.get("old_actor", "")), ctx.urls.actor(assembly.handle)
    if old not in (assembly.also_known_as or []):
        raise BadRequest(f"{assembly.handle} no longer names {old} among its aliases")
    key = load_private_key(str(record.get("old_private_key_pem", "")))
    if key is None:
        raise BadRequest("the old identity's key cannot be read")
    key_id = str(record.get("old_key_id", ""))
    document = build_activity(
        activity_id=f"{old}#moves/{int(now.timestamp())}",
        activity_type="Move",
        actor_id=old,
        obj=old,
        target=new,
        to=[PUBLIC],
        published=now,
    )
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    auth = SignatureAuth(key_id, key, ctx.clock)
    gate = asyncio.Semaphore(RECOVERY_CONCURRENCY)
    sent: list[str] = []
    failed: list[tuple[str, str]] = []

    async def one(inbox: str) -> None:
        if delivery.is_blocked_host(delivery.host_of_uri(inbox), blocked):
            failed.append((inbox, delivery.DOMAIN_BLOCKED))
            return
        async with gate:
            try:
                answer = await ctx.client.post(inbox, body, auth=auth)
            except (httpx.HTTPError, TimeoutError, OSError, InterOccError) as exc:
                why = exc.message if isinstance(exc, InterOccError) else type(exc).__name__
                failed.append((inbox, why))
                return
        if answer.is_success:
            sent.append(inbox)
        else:
            failed.append((inbox, f"HTTP {answer.status_code}"))

    followers = record.get("followers")
    await asyncio.gather(
        *(one(i) for i in recovery_inboxes(followers if isinstance(followers, list) else []))
    )
    return Recovered(old, new, tuple(sorted(sent)), tuple(sorted(failed)))
