"""Who signed a request: the one verification path for inbox POSTs and signed GETs.

Cheap checks first, then at most one key lookup: every check that needs no key
(``prepare_request``: Date window, Digest, signed Host, covered headers), then the cached
key, then one guarded fetch (``resolve_key``, which binds the key to its owner's own actor
document; refused for a while after it failed, and bounded per host by ``ctx.guards``), then
the signature. Nothing is written here: a fetched key is returned for the caller to store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import select

from server.activitypub.actors import ResolvedKey, host_of, resolve_key
from server.activitypub.signatures import Rejected, load_public_key, prepare_request
from server.context import Context
from server.errors import RemoteError, TooManyRequests, Unauthorized
from server.models import Assembly, AssemblyStatus, RemoteKey


@dataclass(frozen=True)
class KeptKey:
    owner_uri: str
    pem: str


StoredKey = Callable[[Context, str], Awaitable[KeptKey | None]]


async def local_key_of(ctx: Context, key_id: str) -> KeptKey | None:
    """The key of one of our own actors (an approved assembly, or the instance actor), read
    from the database: never fetched from ourselves over the network."""
    if key_id == ctx.urls.instance_key_id():
        return KeptKey(ctx.urls.instance_actor(), ctx.instance_public_key_pem)
    handle = key_id.removeprefix(ctx.urls.actor("")).removesuffix("#main-key")
    if not handle or "/" in handle or "#" in handle or key_id != ctx.urls.key_id(handle):
        return None
    async with ctx.sessions() as session:
        pem = await session.scalar(
            select(Assembly.public_key_pem).where(
                Assembly.handle == handle, Assembly.status == AssemblyStatus.APPROVED
            )
        )
    return KeptKey(ctx.urls.actor(handle), pem) if pem is not None else None


async def stored_key_of(ctx: Context, key_id: str) -> KeptKey | None:
    """The key we keep under ``key_id``, if any (ours: :func:`local_key_of`)."""
    if ctx.urls.is_local(key_id):
        return await local_key_of(ctx, key_id)
    async with ctx.sessions() as session:
        row = (
            await session.execute(
                select(RemoteKey.owner_uri, RemoteKey.public_key_pem).where(
                    RemoteKey.key_id == key_id
                )
            )
        ).first()
    return KeptKey(row[0], row[1]) if row is not None else None


class KeyUnavailable(Unauthorized):
    """The signing key could not be fetched (and no cached key was there to try)."""


@dataclass(frozen=True)
class Signer:
    """The verified key of a request and its owner; ``fetched`` is a key not yet stored."""

    key_id: str
    owner_uri: str
    fetched: ResolvedKey | None


async def verify_signer(
    ctx: Context,
    *,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    stored_key: StoredKey | None = None,
) -> Signer:
    """Raises Unauthorized (KeyUnavailable when the key cannot be had) or TooManyRequests.

    ``stored_key`` looks up a key we keep (the inbox passes one that remembers); by default
    the ``remote_keys`` table is read."""
    now, window, host = ctx.clock(), ctx.settings.signature_window, ctx.urls.host
    # The checks that need no key, once; then the signature with each key we try.
    prepared = prepare_request(
        method, target, headers, body, now=now, window=window, authority=host, expected_host=host
    )
    if isinstance(prepared, Rejected):
        raise Unauthorized(f"signature not verified: {prepared.reason}")

    def check(pem: str) -> Rejected | None:
        public_key = load_public_key(pem)
        if public_key is None:
            return Rejected("the signing key cannot be parsed")
        result = prepared(public_key)
        return result if isinstance(result, Rejected) else None

    if ctx.urls.is_local(key_id):
        # One of our own keys: the database is the truth, and nothing is fetched.
        cached = await local_key_of(ctx, key_id)
        if cached is None:
            raise KeyUnavailable("no such key on this instance")
        failure = check(cached.pem)
        if failure is not None:
            raise Unauthorized(f"signature not verified: {failure.reason}")
        return Signer(key_id, cached.owner_uri, None)
    cached = await (stored_key or stored_key_of)(ctx, key_id)
    failure = check(cached.pem) if cached is not None else None
    if cached is not None and failure is None:
        return Signer(key_id, cached.owner_uri, None)
    # Not cached, or the key may have been rotated since we cached it: fetch it (once).
    try:
        fetched = await fetch_key(ctx, key_id)
    except RemoteError as exc:
        if failure is not None:
            raise Unauthorized(f"signature not verified: {failure.reason}") from exc
        raise KeyUnavailable(f"could not obtain the signing key: {exc.message}") from exc
    failure = check(fetched.pem)
    if failure is not None:
        raise Unauthorized(f"signature not verified: {failure.reason}")
    return Signer(key_id, fetched.owner_uri, fetched)


Resolve = Callable[[Context, str], Awaitable[ResolvedKey]]


async def fetch_key(ctx: Context, key_id: str, resolve: Resolve = resolve_key) -> ResolvedKey:
    """``resolve(ctx, key_id)`` (a signature key: ``resolve_key``), unless it failed a moment
    ago or the key's host had its share of key fetches."""
    guards = ctx.guards
    failed = guards.failed_keys.get(key_id)
    if failed is not None:
        raise RemoteError(failed, detail=f"{key_id} (remembered)")
    wait = guards.key_fetches.take(host_of(key_id))
    if wait is not None:
        raise TooManyRequests("too many signing keys to look up on your host", retry_after=wait)
    try:
        return await resolve(ctx, key_id)
    except RemoteError as exc:
        guards.failed_keys.add(key_id, exc.message)
        raise
