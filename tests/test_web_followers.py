"""Acceptance: an assembly's facilitators answer follow requests and remove followers.

A Mastodon-like peer follows over loopback; the facilitator's browser is an httpx client;
the worker is driven by hand and the peer checks the signature of every Accept and Reject.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import select

from server import instance, worker
from server.context import Context
from server.models import Activity, Follower, FollowerStatus, MemberRole, RemoteActor
from tests.helpers import approved_assembly, count
from tests.helpers_web import add_member, create_user, form_error, log_in, submit
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PAGE = "/manage/careful/followers"


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


@pytest.fixture
async def facilitator(ctx: Context, server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """Signed in as a facilitator of @careful (which approves followers by hand); another
    person facilitates @other."""
    await approved_assembly(
        ctx, "careful", name="Careful Assembly", manually_approves_followers=True
    )
    await approved_assembly(ctx, "other", name="Other Assembly")
    await add_member(ctx, await create_user(ctx, "fac@example.org"), "careful")
    await add_member(ctx, await create_user(ctx, "out@example.org"), "other", MemberRole.ADMIN)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        await log_in(client, "fac@example.org")
        yield client


async def row_of(ctx: Context, actor: PeerActor) -> Follower | None:
    async with ctx.sessions() as session:
        query = select(Follower).join(RemoteActor).where(RemoteActor.uri == actor.id)
        return (await session.scalars(query)).first()


async def row_id(ctx: Context, actor: PeerActor) -> int:
    row = await row_of(ctx, actor)
    assert row is not None
    return row.id


def embedded(follow: dict[str, object], ctx: Context, handle: str = "careful") -> dict[str, object]:
    """The Follow as Mastodon expects it inside our Accept or Reject."""
    return {
        "id": follow["id"],
        "type": "Follow",
        "actor": follow["actor"],
        "object": ctx.urls.actor(handle),
    }


async def test_approve_reject_and_remove(
    ctx: Context, peer: Peer, facilitator: httpx.AsyncClient
) -> None:
    alice, bob = peer.add_actor("alice"), peer.add_actor("bob")
    alice_follow = await peer.follow(alice, f"careful@{ctx.urls.host}")
    bob_follow = await peer.follow(bob, f"careful@{ctx.urls.host}")
    assert await worker.run_once(ctx) == 0  # manual approval: nothing sent yet

    page = (await facilitator.get(PAGE)).text
    assert f'<a href="{alice.id}" rel="nofollow noopener">@alice@127.0.0.1</a>' in page
    assert "@bob@127.0.0.1" in page
    assert "Nobody follows this assembly yet." in page

    # Approve: Accept{Follow} with the Follow embedded, and alice is a follower.
    response = await submit(facilitator, PAGE, action=f"{PAGE}/{await row_id(ctx, alice)}/approve")
    assert response.status_code == 303 and response.headers["location"] == PAGE
    row = await row_of(ctx, alice)
    assert row is not None and row.status == FollowerStatus.ACCEPTED
    assert await worker.run_once(ctx) == 1
    [accept] = peer.inbox_activities("Accept")
    assert accept["actor"] == ctx.urls.actor("careful")
    assert accept["object"] == embedded(alice_follow, ctx)

    # Reject: Reject{Follow}, and the request is gone.
    bob_id = await row_id(ctx, bob)
    await submit(facilitator, PAGE, action=f"{PAGE}/{bob_id}/reject")
    assert await row_of(ctx, bob) is None
    assert await worker.run_once(ctx) == 1
    [reject] = peer.inbox_activities("Reject")
    assert reject["object"] == embedded(bob_follow, ctx)

    page = (await facilitator.get(PAGE)).text
    assert "Followers (1)" in page and "No follow request is waiting." in page
    assert ">@alice@127.0.0.1</a>" in page and ">@bob@127.0.0.1</a>" not in page

    # Remove: a Reject of the accepted Follow, as Mastodon removes followers.
    response = await submit(facilitator, PAGE, action=f"{PAGE}/{await row_id(ctx, alice)}/remove")
    assert response.status_code == 303
    assert await row_of(ctx, alice) is None
    assert await worker.run_once(ctx) == 1
    rejects = peer.inbox_activities("Reject")
    assert len(rejects) == 2 and rejects[1]["object"] == embedded(alice_follow, ctx)
    assert "@alice@127.0.0.1 no longer follows the assembly." in (await facilitator.get(PAGE)).text

    # Answering twice is refused on the page and sends nothing.
    again = await submit(facilitator, PAGE, action=f"{PAGE}/{bob_id}/reject")
    assert again.status_code == 404


async def test_wrong_state_is_refused(
    ctx: Context, peer: Peer, facilitator: httpx.AsyncClient
) -> None:
    carol = peer.add_actor("carol")
    await peer.follow(carol, f"careful@{ctx.urls.host}")
    carol_id = await row_id(ctx, carol)
    refused = await submit(facilitator, PAGE, action=f"{PAGE}/{carol_id}/remove")
    assert refused.status_code == 409
    assert form_error(refused.text) == "this account does not follow the assembly"
    assert await count(ctx, Activity) == 0


async def test_requests_held_for_the_admin_are_not_the_assemblys_yet(
    ctx: Context, peer: Peer, facilitator: httpx.AsyncClient
) -> None:
    async with ctx.sessions() as session, session.begin():
        await instance.save(
            session,
            name="InterOcc",
            description="",
            rules="",
            registration_mode="open",
            follow_approval=True,
        )
    dave = peer.add_actor("dave")
    await peer.follow(dave, f"careful@{ctx.urls.host}")
    page = (await facilitator.get(PAGE)).text
    assert "1 more request waits for the instance's administrators first." in page
    assert "@dave@" not in page
    refused = await submit(facilitator, PAGE, action=f"{PAGE}/{await row_id(ctx, dave)}/approve")
    assert refused.status_code == 409
    row = await row_of(ctx, dave)
    assert row is not None and row.held_for_admin and row.status == FollowerStatus.PENDING
    assert await count(ctx, Activity) == 0


async def test_other_peoples_assemblies_are_out_of_reach(
    ctx: Context, peer: Peer, facilitator: httpx.AsyncClient, server: ServerThread
) -> None:
    erin, frank = peer.add_actor("erin"), peer.add_actor("frank")
    await peer.follow(erin, f"careful@{ctx.urls.host}")
    await peer.follow(frank, f"other@{ctx.urls.host}")  # accepted at once: no manual approval
    assert await worker.run_once(ctx) == 1
    erin_id, frank_id = await row_id(ctx, erin), await row_id(ctx, frank)

    async def states() -> list[tuple[int, str]]:
        async with ctx.sessions() as session:
            rows = (await session.scalars(select(Follower).order_by(Follower.id))).all()
            return [(r.id, r.status.value) for r in rows]

    before, activities = await states(), await count(ctx, Activity)

    # The facilitator of @careful, on @other's page and buttons: 403.
    assert (await facilitator.get("/manage/other/followers")).status_code == 403
    for verb in ("approve", "reject", "remove"):
        url = f"/manage/other/followers/{frank_id}/{verb}"
        response = await submit(facilitator, PAGE, action=url)
        assert response.status_code == 403, verb
        # Nor through their own assembly's URL with the other's follower id.
        response = await submit(facilitator, PAGE, action=f"{PAGE}/{frank_id}/{verb}")
        assert response.status_code == 404, verb
    assert (await facilitator.get("/manage/nosuch/followers")).status_code == 404

    # The facilitator of @other on @careful's: 403 too.
    async with httpx.AsyncClient(base_url=server.base_url) as outsider:
        await log_in(outsider, "out@example.org")
        assert (await outsider.get(PAGE)).status_code == 403
        response = await submit(
            outsider, "/manage/other/followers", action=f"{PAGE}/{erin_id}/approve"
        )
        assert response.status_code == 403

    # Visitors are sent to log in.
    async with httpx.AsyncClient(base_url=server.base_url) as visitor:
        response = await visitor.get(PAGE)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={PAGE}"

    assert await states() == before
    assert await count(ctx, Activity) == activities
    assert await worker.run_once(ctx) == 0
