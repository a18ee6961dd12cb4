"""Authorized fetch: who signed a GET, verified the way the inbox verifies a POST.

With INTEROCC_AUTHORIZED_FETCH on, the routes serve actor-scoped ActivityStreams documents
(communiqués, collections, the whole actor document) only to a remote actor whose HTTP
signature holds and whose domain is not blocked: Mastodon's "secure mode". The steps are
the inbox's, in its order and through the same functions: signature syntax
(``parse_signature``) → domain block of the key (before any request to it) → every check
that needs no key (``prepare_request``: Date window, signed Host, covered headers) → the
cached key, else one guarded fetch (``resolve_key``, refused for a while after it failed and
bounded per host, as ``ctx.guards`` bounds the inbox's) → the signature → domain block
of the key's owner → the fetched key stored. A request that fails changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.exc import IntegrityError

from server.activitypub import delivery
from server.activitypub.actors import store_resolved
from server.activitypub.signatures import Rejected, parse_signature
from server.activitypub.verification import Signer, verify_signer
from server.context import Context
from server.errors import Forbidden, Unauthorized

BLOCKED = "this instance does not serve your domain"


async def verify_signed_get(
    ctx: Context, *, method: str, target: str, headers: Mapping[str, str]
) -> Signer:
    """The verified signer of a GET (or HEAD) request with no body.

    ``target`` is the request target as received (path and ``?query``). Raises Unauthorized
    (401) when the request is unsigned or its signature does not hold, Forbidden (403) when
    the key or its owner is on a blocked domain, TooManyRequests (429) when the key's host
    has had its share of key fetches.
    """
    info = parse_signature(headers)
    if isinstance(info, Rejected):
        raise Unauthorized(f"sign this request: {info.reason}")
    # Refused before any key is fetched: a blocked domain gets no request from us at all.
    async with ctx.sessions() as session:
        if await delivery.blocking_domain(session, info.key_id) is not None:
            raise Forbidden(BLOCKED)
    signer = await verify_signer(
        ctx, method=method, target=target, headers=headers, body=b"", key_id=info.key_id
    )
    return await _admitted(ctx, signer)


async def _admitted(ctx: Context, signer: Signer) -> Signer:
    """The owner's domain must not be blocked either (a key document may name an owner
    elsewhere); then a freshly fetched key is kept, so the next request needs no fetch."""
    async with ctx.sessions() as session:
        if await delivery.blocking_domain(session, signer.owner_uri) is not None:
            raise Forbidden(BLOCKED)
    if signer.fetched is None:
        return signer
    try:
        async with ctx.sessions() as session, session.begin():
            await store_resolved(session, ctx, signer.fetched)
    except IntegrityError:
        pass  # a simultaneous request by the same signer stored it first
    return signer
