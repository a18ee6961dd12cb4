"""Federation policy: domain blocks in the inbox and in delivery, the instance's follow
approval, and reports (Flag) received from other servers.

Domain blocks need a peer on another domain than ours: our app listens on 127.0.0.1, so the
blocked peer is reached as ``localhost`` (the same loopback, another name).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server import followers, instance, moderation, worker
from server.activitypub import delivery, mentions
from server.context import Context
from server.errors import BadRequest
from server.models import (
    Activity,
    Delivery,
    DeliveryStatus,
    Follower,
    FollowerStatus,
    InboxActivity,
    RemoteActor,
    RemoteKey,
    Report,
)
from tests.helpers import approved_assembly, count, post
from tests.helpers_web import create_user, log_in, submit
from tests.support.peer import AS_CONTEXT, Peer, PeerActor
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


class LocalhostPeer(Peer):
    """A peer whose actors live on ``localhost``, a domain other than our 127.0.0.1."""

    @property
    def base_url(self) -> str:
        return super().base_url.replace("127.0.0.1", "localhost")


@pytest.fixture
def far() -> Iterator[Peer]:
    with LocalhostPeer(name="far") as p:
        yield p


@pytest.fixture
def near() -> Iterator[Peer]:
    with Peer(name="near") as p:
        yield p


async def block(ctx: Context, domain: str) -> moderation.Blocked:
    async with ctx.sessions() as session, session.begin():
        return await moderation.block_domain(
            session, domain=domain, reason="test", own_host=ctx.urls.host, now=ctx.clock()
        )


# -- pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "domain"),
    [
        ("social.example", "social.example"),
        ("  Social.EXAMPLE.  ", "social.example"),
        ("https://social.example/@alice", "social.example"),
        ("http://social.example:8443", "social.example"),
        ("social.example:8443", "social.example"),
        ("*.social.example", "social.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
    ],
)
def test_domains_are_normalised(raw: str, domain: str) -> None:
    assert moderation.normalise_domain(raw, own_host="interocc.example") == domain


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "social.example/path",
        "alice@social.example",
        "under_score.example",
        "-dash.example",
        "a..b",
        "x" * 64 + ".example",
        "https://",
        "interocc.example",
        "INTEROCC.example:443",
        "example",  # our parent domain: the block would name us too
    ],
)
def test_bad_or_own_domains_are_refused(raw: str) -> None:
    with pytest.raises(BadRequest) as refused:
        moderation.normalise_domain(raw, own_host="interocc.example:443")
    assert refused.value.field == "domain"


def test_a_block_covers_subdomains_only() -> None:
    blocked = frozenset({"social.example"})
    assert delivery.covering_domains("a.social.example") == [
        "a.social.example",
        "social.example",
        "example",
    ]
    assert delivery.is_blocked_host("social.example", blocked)
    assert delivery.is_blocked_host("deep.a.SOCIAL.example.", blocked)
    assert not delivery.is_blocked_host("antisocial.example", blocked)
    assert not delivery.is_blocked_host("example", blocked)
    assert delivery.host_of_uri("https://A.Social.Example:8443/inbox") == "a.social.example"
    idna = frozenset({"xn--bcher-kva.example"})
    assert delivery.is_blocked_host(delivery.host_of_uri("https://bücher.example/"), idna)


# -- the inbox ----------------------------------------------------------------------------


def follow_of(actor: PeerActor, target: str) -> dict[str, Any]:
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor.id}#follows/1",
        "type": "Follow",
        "actor": actor.id,
        "object": target,
    }


async def nothing_stored(ctx: Context) -> None:
    for model in (InboxActivity, Follower, RemoteActor, RemoteKey, Activity, Delivery, Report):
        assert await count(ctx, model) == 0, model.__name__


async def test_activity_from_blocked_domain_is_refused_before_any_key_fetch(
    ctx: Context, server: ServerThread, far: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    await block(ctx, "localhost")
    mallory = far.add_actor("mallory")
    for inbox in (ctx.urls.inbox("ga"), ctx.urls.shared_inbox()):
        response = await far.post_activity(mallory, inbox, follow_of(mallory, ctx.urls.actor("ga")))
        assert response.status_code == 403
        assert response.json() == {
            "error": "this instance does not accept activities from your domain"
        }
    assert far.gets == []  # no key fetch, no actor fetch: not one request to the domain
    await nothing_stored(ctx)


async def test_key_on_blocked_domain_is_refused_too(
    ctx: Context, server: ServerThread, far: Peer, near: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    await block(ctx, "localhost")
    alice, mallory = near.add_actor("alice"), far.add_actor("mallory")
    # An actor on an allowed domain, but the signature names a key on the blocked one.
    response = await near.post_activity(
        alice, ctx.urls.inbox("ga"), follow_of(alice, ctx.urls.actor("ga")), key_id=mallory.key_id
    )
    assert response.status_code == 403
    assert far.gets == [] and near.gets == []
    await nothing_stored(ctx)


async def test_unblocking_lets_the_domain_in_again(
    ctx: Context, server: ServerThread, far: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    blocked = await block(ctx, "localhost")
    async with ctx.sessions() as session, session.begin():
        await moderation.unblock_domain(session, blocked.block.id)
    alice = far.add_actor("alice")
    await far.follow(alice, f"ga@{ctx.urls.host}")
    assert await count(ctx, Follower) == 1


# -- delivery -----------------------------------------------------------------------------


async def test_no_delivery_to_a_blocked_domain(
    ctx: Context, server: ServerThread, far: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    alice = far.add_actor("alice")
    await far.follow(alice, f"ga@{ctx.urls.host}")
    assert await worker.run_once(ctx) == 1  # the Accept
    published = await post(ctx, "ga", "Queued before the block.")
    assert published.deliveries == 1

    # The block removes the domain's followers; the row already queued fails at its turn,
    # without a request.
    blocked = await block(ctx, "localhost")
    assert blocked.followers_removed == 1
    assert await count(ctx, Follower) == 0
    received = len(far.received)
    assert await worker.run_once(ctx) == 1
    async with ctx.sessions() as session:
        row = (
            await session.scalars(
                select(Delivery).where(Delivery.activity_id == published.activity.id)
            )
        ).one()
    assert (row.status, row.last_error) == (DeliveryStatus.FAILED, "domain blocked")
    assert len(far.received) == received

    # Queued after the block (as a mention would be): failed at once, never claimed.
    async with ctx.sessions() as session, session.begin():
        activity = await session.get(Activity, published.activity.id)
        assert activity is not None
        rows = await delivery.enqueue(
            session,
            activity,
            [alice.inbox, "https://elsewhere.example/inbox"],
            now=ctx.clock(),
        )
        assert [(r.status, r.last_error) for r in rows] == [
            (DeliveryStatus.FAILED, "domain blocked"),
            (DeliveryStatus.PENDING, None),
        ]
        await session.delete(rows[1])  # the unreachable one is not this test's business
    assert await worker.run_once(ctx) == 0
    assert len(far.received) == received


async def test_mentioning_a_blocked_domain_is_refused_without_webfinger(
    ctx: Context, server: ServerThread, far: Peer
) -> None:
    far.add_actor("ana")
    await block(ctx, "localhost")
    async with ctx.sessions() as session, session.begin():
        with pytest.raises(BadRequest, match="its domain is blocked here"):
            await mentions.resolve(session, ctx, f"Hello @ana@{far.host}!")
    assert far.gets == []


# -- the instance's follow approval -------------------------------------------------------


@pytest.fixture
async def admin_browser(ctx: Context, server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    await create_user(ctx, "admin@example.org", is_admin=True)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        await log_in(client, "admin@example.org")
        yield client


async def follow_approval(ctx: Context, on: bool) -> None:
    async with ctx.sessions() as session, session.begin():
        info = await instance.load(session, ctx.settings)
        await instance.save(
            session,
            name=info.name,
            description=info.description,
            rules=info.rules,
            registration_mode=info.registration_mode.value,
            follow_approval=on,
        )


async def follower_of(ctx: Context, actor: PeerActor) -> Follower | None:
    async with ctx.sessions() as session:
        query = select(Follower).join(RemoteActor).where(RemoteActor.uri == actor.id)
        return (await session.scalars(query)).first()


async def test_follow_approval_holds_requests_until_an_admin_decides(
    ctx: Context, server: ServerThread, near: Peer, admin_browser: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    await follow_approval(ctx, True)
    alice, bob = near.add_actor("alice"), near.add_actor("bob")
    follow = await near.follow(alice, f"ga@{ctx.urls.host}")
    await near.follow(bob, f"ga@{ctx.urls.host}")
    await near.follow(bob, f"ga@{ctx.urls.host}")  # asking twice changes nothing
    held = await follower_of(ctx, alice)
    assert held is not None
    assert (held.status, held.held_for_admin) == (FollowerStatus.PENDING, True)
    assert await worker.run_once(ctx) == 0  # no Accept until an admin decides
    assert near.inbox_activities("Accept") == []

    page = (await admin_browser.get("/admin/follows")).text
    assert f"@alice@{alice.peer.host.split(':')[0]}" in page and "@ga" in page
    response = await submit(
        admin_browser, "/admin/follows", action=f"/admin/follows/{held.id}/approve"
    )
    assert response.status_code == 303
    accepted = await follower_of(ctx, alice)
    assert accepted is not None
    assert (accepted.status, accepted.held_for_admin) == (FollowerStatus.ACCEPTED, False)
    assert await worker.run_once(ctx) == 1
    [accept] = near.inbox_activities("Accept")
    assert accept["actor"] == ctx.urls.actor("ga")
    assert accept["object"] == {
        "id": follow["id"],
        "type": "Follow",
        "actor": alice.id,
        "object": ctx.urls.actor("ga"),
    }

    bobs = await follower_of(ctx, bob)
    assert bobs is not None
    await submit(admin_browser, "/admin/follows", action=f"/admin/follows/{bobs.id}/reject")
    assert await follower_of(ctx, bob) is None
    assert await worker.run_once(ctx) == 1
    [reject] = near.inbox_activities("Reject")
    assert reject["object"]["id"] == bobs.follow_uri and reject["object"]["actor"] == bob.id
    assert "No follow request is waiting." in (await admin_browser.get("/admin/follows")).text


async def test_admin_approval_then_the_assemblys_own(
    ctx: Context, server: ServerThread, near: Peer, admin_browser: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "careful", manually_approves_followers=True)
    await follow_approval(ctx, True)
    carol = near.add_actor("carol")
    await near.follow(carol, f"careful@{ctx.urls.host}")
    held = await follower_of(ctx, carol)
    assert held is not None and held.held_for_admin
    await submit(admin_browser, "/admin/follows", action=f"/admin/follows/{held.id}/approve")
    passed = await follower_of(ctx, carol)
    assert passed is not None
    # On to the assembly's own list: still pending, and still no Accept.
    assert (passed.status, passed.held_for_admin) == (FollowerStatus.PENDING, False)
    assert await worker.run_once(ctx) == 0
    async with ctx.sessions() as session:
        assert await followers.held_follows(session) == []


async def test_without_follow_approval_follows_are_accepted_at_once(
    ctx: Context, server: ServerThread, near: Peer
) -> None:
    await approved_assembly(ctx, "ga")
    dave = near.add_actor("dave")
    await near.follow(dave, f"ga@{ctx.urls.host}")
    row = await follower_of(ctx, dave)
    assert row is not None and (row.status, row.held_for_admin) == (FollowerStatus.ACCEPTED, False)
    assert await worker.run_once(ctx) == 1


# -- reports ------------------------------------------------------------------------------


def flag(actor: PeerActor, n: int, objects: list[str], comment: str = "") -> dict[str, Any]:
    # The shape Mastodon sends (ActivityPub::FlagSerializer): from its instance actor, the
    # reported account first, then the reported statuses, the comment as `content`.
    return {
        "@context": AS_CONTEXT,
        "id": f"{actor.peer.base_url}/{n:08d}-5a5e-4c1b-9d0b-reports",
        "type": "Flag",
        "actor": actor.id,
        "content": comment,
        "object": objects,
    }


async def test_flags_naming_us_are_stored_once_and_shown(
    ctx: Context, server: ServerThread, near: Peer, admin_browser: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "A communiqué someone dislikes.")
    reporter = near.add_actor("instance")
    objects = [ctx.urls.actor("ga"), published.url, "https://elsewhere.example/users/x"]
    report = flag(reporter, 1, objects, "Spam, and rude <b>too</b>")
    for inbox in (ctx.urls.inbox("ga"), ctx.urls.inbox("ga")):  # the second is a duplicate
        response = await near.post_activity(reporter, inbox, report)
        assert response.status_code == 202
    assert response.json()["status"] == "duplicate"
    async with ctx.sessions() as session:
        [stored] = (await session.scalars(select(Report))).all()
    assert stored.uri == report["id"] and stored.actor_uri == reporter.id
    assert stored.targets == [ctx.urls.actor("ga"), published.url]
    assert stored.comment == "Spam, and rude <b>too</b>"

    # A Flag about nobody here (at the shared inbox) is acknowledged and ignored.
    other = flag(reporter, 2, ["https://elsewhere.example/users/x"], "not yours")
    response = await near.post_activity(reporter, ctx.urls.shared_inbox(), other)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert await count(ctx, Report) == 1

    page = (await admin_browser.get("/admin/reports")).text
    assert f"Report from @instance@{near.host.split(':')[0]}" in page
    assert f'<a href="{published.url}">' in page
    assert f'<a href="{ctx.urls.actor("ga")}">' in page
    assert "Spam, and rude &lt;b&gt;too&lt;/b&gt;" in page
    assert "elsewhere.example" not in page
    overview = (await admin_browser.get("/admin")).text
    assert "1 unresolved." in overview
