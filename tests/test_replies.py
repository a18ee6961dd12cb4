"""Replies from the fediverse are stored, sanitised and linked to their communiqué."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server.context import Context
from server.models import Reply
from tests.helpers import approved_assembly, count, post
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"


@pytest.fixture
def peer() -> Peer:
    with Peer(name="replier") as p:
        yield p


def reply_create(
    actor: PeerActor, note_url: str, n: int, content: str, **extra: Any
) -> dict[str, Any]:
    note = {
        "id": f"{actor.id}/statuses/{n}",
        "type": "Note",
        "attributedTo": actor.id,
        "inReplyTo": note_url,
        "content": content,
        "published": "2026-11-28T12:00:00.123456789Z",
        "to": [PUBLIC],
        **extra,
    }
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{note['id']}/activity",
        "type": "Create",
        "actor": actor.id,
        "to": [PUBLIC],
        "object": note,
    }


async def test_reply_is_stored_sanitised_shown_updated_and_deleted(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "We invite all assemblies to reply.")
    dana = peer.add_actor("dana")
    create = reply_create(
        dana, published.url, 1, "<p>Solidarity from <b>Oakland</b>!<script>alert(1)</script></p>"
    )
    response = await peer.post_activity(dana, f"{server.base_url}/inbox", create)
    assert response.status_code == 202
    async with ctx.sessions() as session:
        reply = (await session.scalars(select(Reply))).one()
    assert reply.uri == create["object"]["id"]
    assert reply.content_html == "<p>Solidarity from <b>Oakland</b>!</p>"
    assert reply.published_at.microsecond == 123456

    async with httpx.AsyncClient() as http:
        page = await http.get(published.url, headers={"Accept": "text/html"})
    assert "Solidarity from <b>Oakland</b>!" in page.text
    assert "<script>" not in page.text

    update = {
        **create,
        "id": f"{create['object']['id']}/update",
        "type": "Update",
        "object": {**create["object"], "content": "<p>Edited</p>"},
    }
    assert (await peer.post_activity(dana, f"{server.base_url}/inbox", update)).status_code == 202
    async with ctx.sessions() as session:
        assert (await session.scalars(select(Reply))).one().content_html == "<p>Edited</p>"

    delete = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{create['object']['id']}#delete",
        "type": "Delete",
        "actor": dana.id,
        "object": {"id": create["object"]["id"], "type": "Tombstone"},
    }
    assert (await peer.post_activity(dana, f"{server.base_url}/inbox", delete)).status_code == 202
    assert await count(ctx, Reply) == 0


async def test_forged_attribution_and_foreign_objects_are_refused(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Communiqué.")
    eve, frank = peer.add_actor("eve"), peer.add_actor("frank")
    forged = reply_create(eve, published.url, 2, "<p>in Frank's name</p>", attributedTo=frank.id)
    response = await peer.post_activity(eve, f"{server.base_url}/inbox", forged)
    assert response.status_code == 403
    foreign = reply_create(eve, published.url, 3, "<p>x</p>")
    foreign["object"]["id"] = "https://elsewhere.example/notes/3"
    response = await peer.post_activity(eve, f"{server.base_url}/inbox", foreign)
    assert response.status_code == 403
    # Not a reply to us: accepted, but nothing is kept.
    unrelated = reply_create(eve, "https://elsewhere.example/notes/9", 4, "<p>x</p>")
    assert (await peer.post_activity(eve, f"{server.base_url}/inbox", unrelated)).status_code == 202
    assert await count(ctx, Reply) == 0
