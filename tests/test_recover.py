"""Recovery when the old server is gone: an assembly exported from instance A, imported on
instance B, and A stopped for good. B sends A's followers a Move signed with A's old key.

The Mastodon-like peer cached A's key while A lived (it verified A's Accept with it), so it
verifies the Move without A; as Mastodon does, it then fetches the target, checks that B's
assembly names A's in ``alsoKnownAs``, and follows B (the test plays that part of the
peer). B's next communiqué reaches it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server import archive, assemblies, moving
from server.context import Context
from server.errors import BadRequest
from server.models import Media
from tests.helpers import approved_assembly, post
from tests.support.peer import Peer
from tests.support.servers import ServerThread
from tests.test_committees_e2e import drain

pytestmark = pytest.mark.e2e

PASSPHRASE = "the camps are gone, the assemblies are not"


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


async def test_recover_followers_with_the_old_server_gone(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "plaza")
    old, new = ctx.urls.actor("plaza"), ctx_b.urls.actor("plaza")
    alice = peer.add_actor("alice")
    await peer.follow(alice, f"plaza@{ctx.urls.host}")
    await drain(ctx)
    [accept] = peer.inbox_activities("Accept")  # verified: the peer cached A's key
    assert f"{old}#main-key" in peer.key_cache
    await post(ctx, "plaza", "Before the eviction.")
    await drain(ctx)

    async with ctx.sessions() as session, session.begin():
        exported = await archive.export_assembly(
            session, ctx.settings, ctx.urls, handle="plaza", now=ctx.clock()
        )
    sealed = archive.encrypt(exported.zip_data, PASSPHRASE)
    server.stop()  # A is gone for good

    stored: list[Media] = []
    async with ctx_b.sessions() as session, session.begin():
        await archive.import_archive(
            session,
            ctx_b.settings,
            ctx_b.urls,
            archive=archive.open_archive(sealed, PASSPHRASE),
            handle="plaza",
            now=ctx_b.clock(),
            stored=stored,
        )
    # Pending on B until B's admin approves: nothing can be sent before.
    with pytest.raises(BadRequest, match="pending"):
        await moving.recover(ctx_b, handle="plaza")
    async with ctx_b.sessions() as session, session.begin():
        await assemblies.approve(session, "plaza", now=ctx_b.clock())

    done = await moving.recover(ctx_b, handle="plaza")
    assert (done.old, done.new, done.failed) == (old, new, ())
    assert done.sent in ((alice.shared_inbox,), (alice.inbox,))
    [move] = peer.inbox_activities("Move")  # verified with the cached key, A being down
    assert move["actor"] == move["object"] == old and move["target"] == new
    fetched = (await peer.fetch(move["target"])).json()
    assert fetched["alsoKnownAs"] == [old]
    await peer.follow(alice, f"plaza@{ctx_b.urls.host}")
    await drain(ctx_b)
    assert [a for a in peer.inbox_activities("Accept") if a["actor"] == new]

    published = await post(ctx_b, "plaza", "We are back.")
    await drain(ctx_b)
    creates = [c["object"]["id"] for c in peer.inbox_activities("Create") if c["actor"] == new]
    assert creates == [published.url]
