"""Acceptance for committees of correspondence: two InterOcc instances, A and B, each with
its own database and its own uvicorn server on loopback, plus a Mastodon-like test peer.

The workers are driven by hand (``worker.run_once``) so each hop is visible: A's Follow
reaches B, B's Accept reaches A, B's Create reaches A's timeline, and so on.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from server import (
    assemblies,
    communiques,
    cosign,
    following,
    letters,
    polls,
    ratification,
    timeline,
    worker,
)
from server.context import Context
from server.federation import inbox_queue
from server.models import (
    Following,
    FollowStatus,
    InboxItem,
    InboxItemStatus,
    Letter,
    Share,
    TimelineEntry,
)
from tests.helpers import approved_assembly, count, post
from tests.support.peer import Peer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

COMMUNIQUE = (
    "The **General Assembly of Plaza del Sol** calls on every assembly to meet on Sunday. #InterOcc"
)


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


async def drain(*contexts: Context) -> None:
    """Run the workers until no instance has anything left to deliver (a delivery to an
    inbox of the same instance is queued in-process: its inbox queue is drained too)."""
    for _ in range(10):
        sent = 0
        for context in contexts:
            sent += await worker.run_once(context)
            sent += await inbox_queue.drain(context)
        if not sent:
            return
    raise AssertionError("deliveries did not settle")


async def a_follows_b(ctx: Context, ctx_b: Context) -> None:
    target = f"@plaza@{ctx_b.urls.host}"
    await following.prefetch(ctx, target)
    async with ctx.sessions() as session, session.begin():
        await following.follow(session, ctx, handle="sol", target=target, now=ctx.clock())
    await drain(ctx, ctx_b)


async def test_follow_timeline_cosign_and_forwarding(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx_b, "plaza", name="Liberty Plaza General Assembly")
    carol = peer.add_actor("carol")  # follows B only
    await peer.follow(carol, f"plaza@{ctx_b.urls.host}")
    await drain(ctx_b)

    # A follows B by handle; B accepts. (A publishes whom it follows.)
    async with ctx.sessions() as session, session.begin():
        await assemblies.set_publish_social_graph(session, handle="sol", publish=True)
    await a_follows_b(ctx, ctx_b)
    async with ctx.sessions() as session:
        row = (await session.scalars(select(Following))).one()
    assert row.status == FollowStatus.ACCEPTED
    assert row.target_uri == ctx_b.urls.actor("plaza")
    async with httpx.AsyncClient() as http:
        response = await http.get(
            ctx.urls.following("sol") + "?page=1", headers={"Accept": "application/activity+json"}
        )
    assert response.json()["orderedItems"] == [ctx_b.urls.actor("plaza")]

    # B posts; A's timeline shows it.
    published = await post(ctx_b, "plaza", COMMUNIQUE)
    await drain(ctx_b, ctx)
    assert await count(ctx, TimelineEntry) == 1
    async with ctx.sessions() as session:
        from server import timeline

        sol = await assemblies.get(session, "sol")
        ((_entry, shown),) = await timeline.entries(session, sol.id)
    assert shown.uri == published.url
    assert "<strong>General Assembly of Plaza del Sol</strong>" in shown.content_html

    # A co-signs; B's page lists A; B's followers on the peer receive A's Announce.
    target = await cosign.find_target(ctx, published.url)
    async with ctx.sessions() as session, session.begin():
        announce = await cosign.cosign(session, ctx, handle="sol", target=target, now=ctx.clock())
    await drain(ctx, ctx_b)
    async with ctx_b.sessions() as session:
        share = (await session.scalars(select(Share))).one()
    assert share.actor_uri == ctx.urls.actor("sol")
    assert share.announce_uri == announce.uri
    assert share.actor_name == "Asamblea de Sol" and share.actor_type == "Group"
    async with httpx.AsyncClient() as http:
        page = await http.get(published.url, headers={"Accept": "text/html"})
        shares = await http.get(
            published.url + "/shares?page=1", headers={"Accept": "application/activity+json"}
        )
    assert "Asamblea de Sol" in page.text
    assert shares.json()["orderedItems"] == [announce.uri]
    forwarded = [r for r in peer.received if r.json and r.json.get("type") == "Announce"]
    assert len(forwarded) == 1, [(r.status, r.reason) for r in peer.received]
    assert forwarded[0].verified, forwarded[0].reason
    assert forwarded[0].json is not None
    assert forwarded[0].json["actor"] == ctx.urls.actor("sol")
    assert forwarded[0].json["object"] == published.url
    # Believed as Mastodon believes a forwarded activity: on A's own Linked Data signature
    # (checked by an independent implementation), without asking A's server.
    assert "forwarded by " + ctx_b.urls.actor("plaza") in forwarded[0].reason
    assert "Linked Data signature by its actor holds" in forwarded[0].reason
    assert forwarded[0].json["signature"]["creator"] == ctx.urls.key_id("sol")

    # A cannot co-sign twice.
    async with ctx.sessions() as session, session.begin():
        with pytest.raises(Exception, match="already co-signed"):
            await cosign.cosign(session, ctx, handle="sol", target=target, now=ctx.clock())

    # B edits, then deletes: A's timeline follows.
    async with ctx_b.sessions() as session, session.begin():
        await communiques.edit(
            session, ctx_b.urls, url=published.url, source="Moved to **Monday**.", now=ctx_b.clock()
        )
    await drain(ctx_b, ctx)
    async with ctx.sessions() as session:
        ((_entry, shown),) = await timeline.entries(session, sol.id)
    assert "<strong>Monday</strong>" in shown.content_html and shown.updated_at is not None
    async with ctx_b.sessions() as session, session.begin():
        await communiques.delete(session, ctx_b.urls, url=published.url, now=ctx_b.clock())
    await drain(ctx_b, ctx)
    async with ctx.sessions() as session:
        assert await timeline.entries(session, sol.id) == []


async def test_correspondence_threads_on_both_sides_and_stays_private(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:
    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx_b, "plaza", name="Liberty Plaza General Assembly")
    carol = peer.add_actor("carol")
    await peer.follow(carol, f"plaza@{ctx_b.urls.host}")
    await peer.follow(carol, f"sol@{ctx.urls.host}")
    await drain(ctx, ctx_b)

    # A writes to B.
    to_b = f"@plaza@{ctx_b.urls.host}"
    await following.prefetch(ctx, to_b)
    async with ctx.sessions() as session, session.begin():
        first = await letters.write(
            session,
            ctx,
            handle="sol",
            recipients=[to_b],
            source="Can your working group on housing meet ours on Thursday?",
            now=ctx.clock(),
        )
    await drain(ctx, ctx_b)
    async with ctx_b.sessions() as session:
        received = (await session.scalars(select(Letter))).one()
    assert received.uri == first.uri and not received.outgoing
    assert received.actor_uri == ctx.urls.actor("sol")
    assert "housing" in received.content_html

    # B answers; the thread is intact on both sides.
    async with ctx_b.sessions() as session, session.begin():
        answer = await letters.write(
            session,
            ctx_b,
            handle="plaza",
            recipients=[],
            source="Yes: Thursday at 7pm, in the library tent.",
            in_reply_to=received.uri,
            now=ctx_b.clock(),
        )
    await drain(ctx_b, ctx)
    for context, handle in ((ctx, "sol"), (ctx_b, "plaza")):
        async with context.sessions() as session:
            assembly = await assemblies.get(session, handle)
            thread = await letters.thread(session, assembly, first.uri)
        assert [letter.uri for letter in thread] == [first.uri, answer.uri]
        assert thread[1].in_reply_to == first.uri

    # Neither letter is public: not in outboxes, not on pages, not sent to followers.
    async with httpx.AsyncClient() as http:
        for context, handle in ((ctx, "sol"), (ctx_b, "plaza")):
            outbox = await http.get(
                context.urls.outbox(handle) + "?page=1",
                headers={"Accept": "application/activity+json"},
            )
            assert outbox.json()["orderedItems"] == []
            page = await http.get(context.urls.actor(handle), headers={"Accept": "text/html"})
            assert "housing" not in page.text and "library tent" not in page.text
            feed = await http.get(context.urls.actor(handle) + "/feed.atom")
            assert "housing" not in feed.text and "library tent" not in feed.text
            for path in (first.uri, answer.uri):
                letter_page = await http.get(path, headers={"Accept": "text/html"})
                assert letter_page.status_code == 404
    creates = [r for r in peer.received if r.json and r.json.get("type") == "Create"]
    assert creates == []
    # Addressed to the recipient alone, with a Mention tag: a direct message to Mastodon.
    note = first.document
    assert note["to"] == [ctx_b.urls.actor("plaza")] and note["cc"] == []
    assert note["tag"] == [
        {"type": "Mention", "href": ctx_b.urls.actor("plaza"), "name": "@plaza@127.0.0.1"}
    ]


async def test_ratification_record_travels_as_data_and_as_text(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:

    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx_b, "plaza", name="Liberty Plaza General Assembly")
    dave = peer.add_actor("dave")
    await peer.follow(dave, f"sol@{ctx.urls.host}")
    target = f"@sol@{ctx.urls.host}"
    await following.prefetch(ctx_b, target)
    async with ctx_b.sessions() as session, session.begin():
        await following.follow(session, ctx_b, handle="plaza", target=target, now=ctx_b.clock())
    await drain(ctx_b, ctx)

    decision = ratification.validate(
        {
            "decided_on": "2011-05-20",
            "decided_at": "Puerta del Sol",
            "process": "modified-consensus",
            "threshold_percent": "90",
            "votes_for": "412",
            "votes_against": "7",
            "abstentions": "30",
            "blocks": "0",
            "minutes": "https://actas.example/20-mayo",
        }
    )
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session,
            ctx.urls,
            handle="sol",
            source="We endorse the call for a global day of action on 15 October.",
            now=ctx.clock(),
            decision=decision,
        )
    await drain(ctx, ctx_b)

    # B: structured data, read through the interocc context it has bundled.
    async with ctx_b.sessions() as session:
        plaza = await assemblies.get(session, "plaza")
        ((_entry, shown),) = await timeline.entries(session, plaza.id)
    assert shown.uri == published.url
    assert ratification.from_remote(shown.document.get("ratification")) == decision

    # The peer (Mastodon-like, no interocc terms): readable text in the content.
    creates = [r.json for r in peer.received if r.json and r.json.get("type") == "Create"]
    assert len(creates) == 1
    create = creates[0]
    assert ctx.urls.base + "/ns/interocc/v1" in create["@context"]
    # Signed like every public activity, over the interocc terms too (its context is ours).
    assert create["signature"]["type"] == "RsaSignature2017" and "proof" in create
    content = create["object"]["content"]
    assert (
        "Decided by modified consensus (90% threshold) on 20 May 2011 at Puerta del Sol" in content
    )
    assert "412 for, 7 against, 30 abstaining, 0 blocking." in content
    assert create["object"]["contentMap"] == {"en": content}
    assert create["object"]["ratification"]["votesFor"] == 412

    # Our own page shows the record as such, and the Note served at its URL carries it.
    async with httpx.AsyncClient() as http:
        page = await http.get(published.url, headers={"Accept": "text/html"})
        note = await http.get(published.url, headers={"Accept": "application/activity+json"})
    assert "Decided by modified consensus" in page.text
    assert note.json()["ratification"]["process"] == "ModifiedConsensus"
    assert ctx.urls.base + "/ns/interocc/v1" in note.json()["@context"]


def vote(actor_id: str, poll_url: str, assembly_uri: str, choice: str, n: int) -> dict[str, object]:
    """A vote as Mastodon sends it: a Note with ``name``, no content, to the author only."""
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{actor_id}#votes/{n}/activity",
        "type": "Create",
        "actor": actor_id,
        "to": [assembly_uri],
        "object": {
            "id": f"{actor_id}#votes/{n}",
            "type": "Note",
            "name": choice,
            "attributedTo": actor_id,
            "to": [assembly_uri],
            "inReplyTo": poll_url,
        },
    }


async def test_straw_poll_counts_one_vote_per_actor_and_closes(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    from datetime import timedelta

    from server.models import Communique, PollVote

    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    ana, ben = peer.add_actor("ana"), peer.add_actor("ben")
    await peer.follow(ana, f"sol@{ctx.urls.host}")
    await drain(ctx)
    now = ctx.clock()
    poll = polls.validate("Occupy the square\nMarch to parliament\n", "0.1", now=now)
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session,
            ctx.urls,
            handle="sol",
            source="Straw poll: what do we do on Saturday?",
            now=now,
            poll=poll,
        )
    await drain(ctx)
    question = next(r.json for r in peer.received if r.json and r.json["type"] == "Create")
    assert question["object"]["type"] == "Question"
    assert [o["name"] for o in question["object"]["oneOf"]] == [
        "Occupy the square",
        "March to parliament",
    ]

    inbox, sol = ctx.urls.inbox("sol"), ctx.urls.actor("sol")
    answers = [
        await peer.post_activity(
            ana, inbox, vote(ana.id, published.url, sol, "Occupy the square", 1)
        ),
        await peer.post_activity(
            ben, inbox, vote(ben.id, published.url, sol, "Occupy the square", 1)
        ),
        # ana again, another vote id: ignored, one vote per actor
        await peer.post_activity(
            ana, inbox, vote(ana.id, published.url, sol, "March to parliament", 2)
        ),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json()["status"] for a in answers] == ["queued"] * 3
    async with ctx.sessions() as session:
        item = await session.get(Communique, published.communique.id)
        assert item is not None and item.poll is not None
        assert item.poll["voters"] == 2
        assert item.poll["counts"] == {"Occupy the square": 2, "March to parliament": 0}
    assert await count(ctx, PollVote) == 2

    # Closing time: an Update with the final tally goes to followers and voters.
    later = now + timedelta(minutes=7)
    async with ctx.sessions() as session, session.begin():
        assert await communiques.close_due_polls(session, ctx.urls, now=ctx.clock()) == 0
    ctx.clock = lambda: later  # the worker's view of time; the server's stays real
    async with ctx.sessions() as session, session.begin():
        assert await communiques.close_due_polls(session, ctx.urls, now=later) == 1
    await drain(ctx)
    updates = [r.json for r in peer.received if r.json and r.json.get("type") == "Update"]
    assert len(updates) == 1
    final = updates[0]["object"]
    assert final["closed"] and final["votersCount"] == 2
    assert final["oneOf"][0]["replies"]["totalItems"] == 2

    # A vote after closing is refused when it is processed (its 202 came first): the queue
    # keeps it as rejected with the reason, and nothing is stored.
    carl = peer.add_actor("carl")
    late = await peer.post_activity(
        carl, inbox, vote(carl.id, published.url, sol, "March to parliament", 1)
    )
    assert late.status_code == 202
    async with ctx.sessions() as session:
        refused = (await session.scalars(select(InboxItem))).all()
    assert [(i.actor_uri, i.status, i.last_error) for i in refused] == [
        (carl.id, InboxItemStatus.REJECTED, "this poll is closed")
    ]
    assert await count(ctx, PollVote) == 2
    async with httpx.AsyncClient() as http:
        page = await http.get(published.url, headers={"Accept": "text/html"})
    assert "Occupy the square</strong>: 2 votes" in page.text


async def test_relay_gets_public_communiques_and_its_announces_are_accepted(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:
    from server import relays
    from server.models import RemotePost

    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx_b, "plaza", name="Liberty Plaza General Assembly")
    relay = peer.add_actor("relay")  # the loopback relay: a signing actor with an inbox

    # The admin subscribes by the relay's actor URL.
    await following.prefetch(ctx, relays.actor_url(relay.id))
    async with ctx.sessions() as session, session.begin():
        subscription = await relays.subscribe(session, ctx, url=relay.id, now=ctx.clock())
    await drain(ctx)
    follows = [r.json for r in peer.received if r.json and r.json.get("type") == "Follow"]
    assert len(follows) == 1 and follows[0]["actor"] == ctx.urls.instance_actor()
    assert follows[0]["object"] == "https://www.w3.org/ns/activitystreams#Public"
    accept = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{relay.id}#accepts/1",
        "type": "Accept",
        "actor": relay.id,
        "object": follows[0],
    }
    answer = await peer.post_activity(relay, ctx.urls.shared_inbox(), accept)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    async with ctx.sessions() as session:
        assert (await session.get(Following, subscription.id)).status == FollowStatus.ACCEPTED

    # A's public communiqués reach the relay.
    published = await post(ctx, "sol", "Assemblies of the world: the square is open.")
    await drain(ctx)
    to_relay = [
        r
        for r in peer.received
        if r.path == "/users/relay/inbox" and r.json and r.json.get("type") == "Create"
    ]
    assert len(to_relay) == 1 and to_relay[0].verified, to_relay[0].reason
    assert to_relay[0].json is not None and to_relay[0].json["object"]["id"] == published.url

    # The relay announces B's communiqué to A: accepted, the post fetched from B and kept.
    from_b = await post(ctx_b, "plaza", "General strike on the first of May. #InterOcc")
    announce = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{relay.id}#announces/1",
        "type": "Announce",
        "actor": relay.id,
        "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "object": from_b.url,
    }
    answer = await peer.post_activity(relay, ctx.urls.shared_inbox(), announce)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    async with ctx.sessions() as session:
        kept = (await session.scalars(select(RemotePost))).one()
    assert kept.uri == from_b.url and kept.actor_uri == ctx_b.urls.actor("plaza")
    assert "General strike" in kept.content_html

    # An Announce from an actor that is no relay of ours is ignored.
    stranger = peer.add_actor("stranger")
    other = {**announce, "id": f"{stranger.id}#announces/1", "actor": stranger.id}
    answer = await peer.post_activity(stranger, ctx.urls.shared_inbox(), other)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    assert await count(ctx, RemotePost) == 1


def test_relay_url_from_its_inbox_url() -> None:
    from server import relays

    assert relays.actor_url("https://relay.example/inbox") == "https://relay.example/actor"
    assert relays.actor_url(" https://relay.example/actor ") == "https://relay.example/actor"
    with pytest.raises(Exception, match="relay's URL"):
        relays.actor_url("relay.example")


async def test_cosigning_on_one_instance_reaches_the_authors_followers(
    ctx: Context, server: ServerThread, peer: Peer
) -> None:
    """Both assemblies here: the author's followers are known locally and get the Announce
    directly; the author's page lists the co-signer."""
    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx, "plaza", name="Liberty Plaza General Assembly")
    erin = peer.add_actor("erin")
    await peer.follow(erin, f"plaza@{ctx.urls.host}")
    await drain(ctx)
    published = await post(ctx, "plaza", "Solidarity with every occupation.")
    await drain(ctx)
    target = await cosign.find_target(ctx, published.url)
    async with ctx.sessions() as session, session.begin():
        announce = await cosign.cosign(session, ctx, handle="sol", target=target, now=ctx.clock())
    await drain(ctx)
    received = [r for r in peer.received if r.json and r.json.get("type") == "Announce"]
    assert len(received) == 1 and received[0].verified, received[0].reason
    assert received[0].json is not None and received[0].json["id"] == announce.uri
    async with ctx.sessions() as session:
        share = (await session.scalars(select(Share))).one()
    assert share.actor_uri == ctx.urls.actor("sol") and share.actor_type == "Group"


async def test_forwarded_activity_is_taken_as_its_origin_serves_it(
    ctx: Context, server: ServerThread, ctx_b: Context, server_b: ServerThread, peer: Peer
) -> None:
    """A Create by B's assembly, forwarded to A by a third server that tampered with it.
    With B's proofs on it, the tampering shows: refused, nothing stored. Stripped of them, it
    proves nothing: A takes the activity from B (its origin), not the forwarder's copy."""
    from server.models import Activity

    await approved_assembly(ctx, "sol", name="Asamblea de Sol")
    await approved_assembly(ctx_b, "plaza", name="Liberty Plaza General Assembly")
    await a_follows_b(ctx, ctx_b)
    published = await post(ctx_b, "plaza", "The assembly meets at 7pm.")
    async with ctx_b.sessions() as session:
        create = (
            await session.scalars(select(Activity).where(Activity.uri == published.activity.uri))
        ).one()
    forged = dict(create.document)
    forged["object"] = {**forged["object"], "content": "<p>The assembly is cancelled.</p>"}
    forwarder = peer.add_actor("forwarder")
    before = await count(ctx, InboxItem)
    refused = await peer.post_activity(forwarder, ctx.urls.shared_inbox(), forged)
    assert refused.status_code == 401, refused.text
    assert "proof does not hold" in refused.json()["error"]
    assert await count(ctx, InboxItem) == before

    unproven = {k: v for k, v in forged.items() if k not in ("proof", "signature")}
    answer = await peer.post_activity(forwarder, ctx.urls.shared_inbox(), unproven)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    async with ctx.sessions() as session:
        sol = await assemblies.get(session, "sol")
        ((_entry, shown),) = await timeline.entries(session, sol.id)
    assert "7pm" in shown.content_html and "cancelled" not in shown.content_html

    # Forwarded again (same id): a duplicate, nothing changes.
    again = await peer.post_activity(forwarder, ctx.urls.shared_inbox(), unproven)
    assert again.status_code == 202 and again.json()["status"] == "duplicate"
