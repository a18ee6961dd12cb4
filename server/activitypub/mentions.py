"""@user@host mentions in a communiqué: resolved by WebFinger before publishing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub import delivery
from server.activitypub.actors import fetch_actor
from server.context import Context
from server.errors import BadRequest, RemoteError

MENTION_RE = re.compile(
    r"(?<![\w@/])@([A-Za-z0-9_][A-Za-z0-9_.-]*)@([A-Za-z0-9.-]+\.?[A-Za-z0-9-]*(?::\d{1,5})?)"
)
MAX_MENTIONS = 20


@dataclass(frozen=True)
class Mention:
    name: str  # "@user@host" as written
    href: str  # the actor id
    inbox: str  # where the mentioned actor gets the Note (its shared inbox when it has one)
    url: str  # a page for people, for the link in the content


def find_mentions(source: str) -> list[tuple[str, str]]:
    """(user, host) pairs in order of first appearance, without duplicates."""
    found = dict.fromkeys((m.group(1), m.group(2).lower()) for m in MENTION_RE.finditer(source))
    return list(found)[:MAX_MENTIONS]


async def _webfinger(ctx: Context, user: str, host: str) -> str:
    resource = quote(f"acct:{user}@{host}", safe=":@")
    # WebFinger is https only; plain http is tried only where private addresses are allowed
    # (tests on loopback).
    schemes = ["https", "http"] if ctx.settings.allow_private_addresses else ["https"]
    last: RemoteError | None = None
    for scheme in schemes:
        url = f"{scheme}://{host}/.well-known/webfinger?resource={resource}"
        try:
            fetched = await ctx.client.fetch_json(url, accept="application/jrd+json")
        except RemoteError as exc:
            last = exc
            continue
        for link in fetched.document.get("links") or []:
            if (
                isinstance(link, dict)
                and link.get("rel") == "self"
                and isinstance(link.get("href"), str)
                and "activity+json" in str(link.get("type", "")) + "ld+json"
            ):
                return str(link["href"])
        raise RemoteError("no ActivityPub actor in the WebFinger answer", detail=url)
    assert last is not None
    raise last


async def resolve(session: AsyncSession, ctx: Context, source: str) -> list[Mention]:
    """Every remote @user@host in the text, resolved; BadRequest names one that is not."""
    mentions = []
    for user, host in find_mentions(source):
        if host == ctx.urls.host:
            continue  # a local assembly: nothing to deliver across the network
        # No WebFinger query to a blocked domain, and nothing would be delivered there.
        if await delivery.blocking_domain(session, f"https://{host}/") is not None:
            raise BadRequest(f"cannot mention @{user}@{host}: its domain is blocked here")
        try:
            actor = await fetch_actor(session, ctx, await _webfinger(ctx, user, host))
        except RemoteError as exc:
            raise BadRequest(f"cannot find @{user}@{host}: {exc.message}") from exc
        mentions.append(
            Mention(
                name=f"@{user}@{host}",
                href=actor.uri,
                inbox=actor.delivery_inbox,
                url=actor.url or actor.uri,
            )
        )
    return mentions
