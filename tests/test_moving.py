"""An assembly moves to another instance while the old one lives (Mastodon's protocol).

Two InterOcc instances and a Mastodon-like peer on loopback. The peer does with the Move
what Mastodon does: it checks the signature (the object is the signer), fetches the target
and checks that it lists the origin in ``alsoKnownAs``, then unfollows the origin and
follows the target. The test plays that part of the peer, step by step.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from server import communiques, moving
from server.context import Context
from server.errors import BadRequest, Conflict
from server.models import Activity, Assembly
from tests.helpers import approved_assembly, post
from tests.support.peer import AP_JSON, Peer
from tests.support.servers import ServerThread
from tests.test_committees_e2e import drain

pytestmark = pytest.mark.e2e


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


async def test_a_move_while_the_old_instance_lives(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "plaza", name="Liberty Plaza GA")
    await approved_assembly(ctx_b, "plaza", name="Liberty Plaza GA (in exile)")
    old, new = ctx.urls.actor("plaza"), ctx_b.urls.actor("plaza")
    alice = peer.add_actor("alice")
    follow_old = await peer.follow(alice, f"plaza@{ctx.urls.host}")
    await drain(ctx)
    assert peer.inbox_activities("Accept")

    # A move to an identity that does not name this one is refused, and changes nothing.
    await moving.prepare(ctx, new)
    refused = await moving.current_target(ctx, new)
    with pytest.raises(BadRequest, match="does not list"):
        async with ctx.sessions() as session, session.begin():
            await moving.move(session, ctx, handle="plaza", target=refused, now=ctx.clock())

    # The new identity lists the old one; then the old one moves.
    await moving.prepare(ctx_b, f"@plaza@{ctx.urls.host}")
    async with ctx_b.sessions() as session, session.begin():
        assert (
            await moving.add_alias(session, ctx_b, handle="plaza", target=f"@plaza@{ctx.urls.host}")
            == old
        )
    target = await moving.current_target(ctx, new)
    assert old in target.aliases
    async with ctx.sessions() as session, session.begin():
        await moving.move(session, ctx, handle="plaza", target=target, now=ctx.clock())
    await drain(ctx, ctx_b)

    [move] = peer.inbox_activities("Move")
    assert move["actor"] == move["object"] == old and move["target"] == new
    # As Mastodon: the target, fetched now, must name the origin among its aliases.
    fetched = (await peer.fetch(move["target"])).json()
    assert old in fetched["alsoKnownAs"]
    await peer.unfollow(alice, follow_old)
    await peer.follow(alice, f"plaza@{ctx_b.urls.host}")
    await drain(ctx, ctx_b)
    accepts = [a for a in peer.inbox_activities("Accept") if a["actor"] == new]
    assert len(accepts) == 1

    # The new identity's next communiqué reaches the follower.
    published = await post(ctx_b, "plaza", "We meet again, elsewhere.")
    await drain(ctx_b)
    creates = [c for c in peer.inbox_activities("Create") if c["actor"] == new]
    assert [c["object"]["id"] for c in creates] == [published.url]

    # The old actor says where it went; its page too; it can no longer publish.
    async with httpx.AsyncClient(trust_env=False) as http:
        document = (await http.get(old, headers={"Accept": AP_JSON})).json()
        page = (await http.get(old, headers={"Accept": "text/html"})).text
    assert document["movedTo"] == new and new in document.get("alsoKnownAs", [])
    assert "This assembly has moved" in page and new in page
    with pytest.raises(Conflict, match="has moved"):
        async with ctx.sessions() as session, session.begin():
            await communiques.publish(
                session, ctx.urls, handle="plaza", source="Still here?", now=ctx.clock()
            )
    async with ctx.sessions() as session:
        moved = (await session.scalars(select(Assembly).where(Assembly.handle == "plaza"))).one()
        moves = (await session.scalars(select(Activity).where(Activity.type == "Move"))).all()
    assert moved.moved_to == new and moved.moved_at is not None
    assert len(moves) == 1
