"""Private data on a public path: a non-public reply is correspondence, never a public reply.

A Note addressed only to the assembly (or to someone's followers, or to the public only in
``bcc``) that answers a communiqué goes to the assembly's letters. It is never stored among the
communiqué's replies, so it is on no public page, feed or collection; a public reply edited to a
narrower audience leaves the page.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.context import Context
from server.models import Letter, Reply
from tests.helpers import approved_assembly, count, post
from tests.security.support import AS, Attacker, Keyed, actor_document, signed_post
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PUBLIC = f"{AS}#Public"
SECRET_WORDS = "the meeting place is the old library basement"


def create(author: Keyed, in_reply_to: str, n: int, **addressing: Any) -> dict[str, Any]:
    note = f"{author.id}/notes/{n}"
    return {
        "@context": AS,
        "id": f"{note}/activity",
        "type": "Create",
        "actor": author.id,
        **addressing,
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": author.id,
            "inReplyTo": in_reply_to,
            "content": f"<p>{SECRET_WORDS}</p>",
            **addressing,
        },
    }


async def public_views(ctx: Context, server: ServerThread, communique_url: str) -> str:
    """The communiqué's page, its AS2 document and both Atom feeds, as one text."""
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        page = await http.get(communique_url, headers={"Accept": "text/html"})
        document = await http.get(communique_url, headers={"Accept": "application/activity+json"})
        feed = await http.get(ctx.urls.actor_feed("ga"))
        instance_feed = await http.get(ctx.urls.feed())
    assert page.status_code == document.status_code == feed.status_code == 200
    return page.text + document.text + feed.text + instance_feed.text


@pytest.mark.parametrize(
    "addressing",
    [
        {"to": ["ASSEMBLY"]},
        {"to": ["ASSEMBLY"], "cc": []},
        {"to": ["FOLLOWERS"], "cc": ["ASSEMBLY"]},
        {"to": ["ASSEMBLY"], "bcc": [PUBLIC]},
        {"to": ["ASSEMBLY"], "bto": [PUBLIC]},
        {"to": ["ASSEMBLY"], "audience": PUBLIC},
        {"cc": ["ASSEMBLY"]},
    ],
    ids=[
        "to-assembly",
        "empty-cc",
        "followers-only",
        "public-in-bcc",
        "public-in-bto",
        "public-audience",
        "cc-only",
    ],
)
async def test_private_reply_goes_to_letters_not_to_the_page(
    ctx: Context, server: ServerThread, attacker: Attacker, addressing: dict[str, Any]
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Where do we meet?")
    author, _doc = actor_document(attacker, "comrade")
    names = {"ASSEMBLY": ctx.urls.actor("ga"), "FOLLOWERS": f"{author.id}/followers"}

    def fill(value: Any) -> Any:
        return [names.get(v, v) for v in value] if isinstance(value, list) else value

    activity = create(author, published.url, 1, **{k: fill(v) for k, v in addressing.items()})
    answer = await signed_post(
        ctx.urls.shared_inbox(), activity, key_id=author.key_id, private_key=author.private_key
    )
    assert answer.status_code == 202
    assert await count(ctx, Reply) == 0
    assert await count(ctx, Letter) == 1
    assert SECRET_WORDS not in await public_views(ctx, server, published.url)


async def test_public_reply_is_shown_and_leaves_when_edited_private(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Where do we meet?")
    author, _doc = actor_document(attacker, "comrade")
    public = create(author, published.url, 2, to=[PUBLIC], cc=[ctx.urls.actor("ga")])
    answer = await signed_post(
        ctx.urls.shared_inbox(), public, key_id=author.key_id, private_key=author.private_key
    )
    assert answer.status_code == 202
    assert await count(ctx, Reply) == 1
    assert SECRET_WORDS in await public_views(ctx, server, published.url)

    narrowed = {**public, "id": f"{author.id}/notes/2#update", "type": "Update"}
    narrowed["object"] = {**public["object"], "to": [ctx.urls.actor("ga")], "cc": []}
    narrowed["to"], narrowed["cc"] = [ctx.urls.actor("ga")], []
    answer = await signed_post(
        ctx.urls.shared_inbox(), narrowed, key_id=author.key_id, private_key=author.private_key
    )
    assert answer.status_code == 202
    assert await count(ctx, Reply) == 0
    assert SECRET_WORDS not in await public_views(ctx, server, published.url)
