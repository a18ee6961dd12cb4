"""@user@host in a communiqué: resolved by WebFinger, tagged, addressed and delivered."""

from __future__ import annotations

import pytest

from server import communiques, worker
from server.activitypub import mentions
from server.context import Context
from server.errors import BadRequest
from tests.helpers import approved_assembly
from tests.support.peer import Peer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


def test_find_mentions() -> None:
    text = "Hello @ana@oakland.example and @ana@Oakland.example, mail x@y.z, @bob@h:8080."
    assert mentions.find_mentions(text) == [("ana", "oakland.example"), ("bob", "h:8080")]


async def test_mentioned_actor_is_tagged_addressed_and_delivered(
    ctx: Context, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ga")
    with Peer(name="oakland") as peer:
        ana = peer.add_actor("ana")
        text = f"Greetings @ana@{peer.host}, from Liberty Plaza."
        async with ctx.sessions() as session, session.begin():
            found = await mentions.resolve(session, ctx, text)
        assert [(m.name, m.href) for m in found] == [(f"@ana@{peer.host}", ana.id)]
        async with ctx.sessions() as session, session.begin():
            published = await communiques.publish(
                session, ctx.urls, handle="ga", source=text, now=ctx.clock(), mentions=found
            )
        assert published.deliveries == 1  # no followers: only the mentioned actor
        assert await worker.run_once(ctx) == 1
        create = peer.inbox_activities("Create")[0]
        note = create["object"]
        assert {"type": "Mention", "href": ana.id, "name": f"@ana@{peer.host}"} in note["tag"]
        assert ana.id in note["cc"]
        assert 'class="u-url mention"' in note["content"] and ana.id in note["content"]

        # The edit reaches her too, even once her name is gone from the text.
        async with ctx.sessions() as session, session.begin():
            await communiques.edit(
                session, ctx.urls, url=published.url, source="Greetings all.", now=ctx.clock()
            )
        assert await worker.run_once(ctx) == 1
        assert len(peer.inbox_activities("Update")) == 1


async def test_unknown_mention_is_a_clear_error(ctx: Context, server: ServerThread) -> None:
    with Peer(name="empty") as peer:
        async with ctx.sessions() as session, session.begin():
            with pytest.raises(BadRequest, match=f"cannot find @nobody@{peer.host}"):
                await mentions.resolve(session, ctx, f"hi @nobody@{peer.host}")
