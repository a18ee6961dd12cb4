"""Acceptance: what Mastodon and browsers get when they fetch an assembly and its collections.

One URL, two faces: AS2 JSON (for each Accept header servers really send) or an HTML page.
Every JSON document is fetched over loopback HTTP at its own id, so ``id`` must equal the
URL it was fetched at, as Mastodon insists.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import update

from server import assemblies, communiques
from server.context import Context
from server.models import Assembly, Follower, InboxActivity, RemoteActor
from tests.helpers import approved_assembly, count, post
from tests.support.peer import ACTOR_ACCEPT, Peer
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

AP_JSON = "application/activity+json"
LD_JSON = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
AS2_TYPES = {AP_JSON, "application/ld+json"}


@pytest.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture
def peer() -> Peer:
    with Peer(name="mastodon") as p:
        yield p


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip().lower()


async def get_doc(http: httpx.AsyncClient, url: str, accept: str = AP_JSON) -> dict[str, Any]:
    """GET an AS2 document and check it is one, served at its own id."""
    response = await http.get(url, headers={"Accept": accept})
    assert response.status_code == 200, (url, response.status_code, response.text)
    assert media_type(response) in AS2_TYPES, (url, response.headers["content-type"])
    doc: dict[str, Any] = json.loads(response.content)
    assert doc["id"] == url, f"document fetched at {url} has id {doc['id']!r}"
    assert "@context" in doc
    return doc


def check_rsa_2048(pem: str) -> None:
    key = load_pem_public_key(pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048


async def test_actor_json_for_each_as2_accept(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza", summary="We meet daily at 7pm.")
    url = ctx.urls.actor("libertyplaza")
    cases = [
        (AP_JSON, {AP_JSON}),
        (LD_JSON, {LD_JSON}),
        # Mastodon's own Accept: either AS2 type is right, never HTML.
        (ACTOR_ACCEPT, {AP_JSON, LD_JSON}),
    ]
    documents = []
    for accept, allowed in cases:
        response = await http.get(url, headers={"Accept": accept})
        assert response.status_code == 200, accept
        content_type = response.headers["content-type"]
        if LD_JSON in allowed and content_type.startswith("application/ld+json"):
            assert content_type == LD_JSON, accept  # the profile must be kept
        else:
            assert media_type(response) == AP_JSON, (accept, content_type)
            assert AP_JSON in allowed, (accept, content_type)
        assert "accept" in response.headers.get("vary", "").lower()
        doc = response.json()
        assert doc["id"] == url
        documents.append(doc)
    # The same document whatever the AS2 flavour asked for.
    assert documents[0] == documents[1] == documents[2]


async def test_actor_html_for_browsers(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza", name="Liberty Plaza General Assembly")
    response = await http.get(ctx.urls.actor("libertyplaza"), headers={"Accept": BROWSER})
    assert response.status_code == 200
    assert media_type(response) == "text/html"
    assert "Liberty Plaza General Assembly" in response.text
    assert f"@libertyplaza@{ctx.urls.host}" in response.text


async def test_actor_has_every_field_mastodon_reads(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(
        ctx, "libertyplaza", name="Liberty Plaza GA", summary="Daily at 7pm.\n\nAll welcome."
    )
    url = ctx.urls.actor("libertyplaza")
    doc = await get_doc(http, url, ACTOR_ACCEPT)
    assert doc["type"] == "Group"
    assert doc["preferredUsername"] == "libertyplaza"
    assert doc["name"] == "Liberty Plaza GA"
    assert doc["summary"] == "<p>Daily at 7pm.</p><p>All welcome.</p>"
    assert doc["url"] == url
    assert doc["inbox"] == ctx.urls.inbox("libertyplaza")
    assert doc["outbox"] == ctx.urls.outbox("libertyplaza")
    assert doc["followers"] == ctx.urls.followers("libertyplaza")
    assert doc["following"] == ctx.urls.following("libertyplaza")
    assert doc["featured"] == ctx.urls.featured("libertyplaza")
    assert doc["endpoints"]["sharedInbox"] == f"{ctx.urls.base}/inbox"
    for field in ("inbox", "outbox", "followers", "following", "featured"):
        assert doc[field].startswith(url + "/"), field
    key = doc["publicKey"]
    assert key["id"] == url + "#main-key"
    assert key["owner"] == url
    check_rsa_2048(key["publicKeyPem"])
    assert doc["manuallyApprovesFollowers"] is False
    assert doc["discoverable"] is True
    assert isinstance(doc["published"], str) and doc["published"].endswith("Z")
    assert "icon" not in doc

    # The published key is the assembly's own (the one it signs with).
    async with ctx.sessions() as session:
        assembly = await assemblies.get(session, "libertyplaza")
    assert key["publicKeyPem"].strip() == assembly.public_key_pem.strip()

    # An icon appears once one is set.
    icon = "https://media.example/libertyplaza.png"
    async with ctx.sessions() as session, session.begin():
        await session.execute(
            update(Assembly).where(Assembly.handle == "libertyplaza").values(icon_url=icon)
        )
    doc = await get_doc(http, url)
    assert doc["icon"]["url"] == icon
    assert doc["icon"]["type"] == "Image"


async def test_pending_and_suspended_assemblies_are_not_served(
    ctx: Context, http: httpx.AsyncClient, peer: Peer
) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(session, handle="waiting", name="Waiting GA")
    await approved_assembly(ctx, "banned")
    async with ctx.sessions() as session, session.begin():
        await assemblies.suspend(session, "banned", now=ctx.clock())
    mallory = peer.add_actor("mallory")

    for handle, status in (("waiting", 404), ("banned", 410), ("nobody", 404)):
        for url in (
            ctx.urls.actor(handle),
            ctx.urls.outbox(handle),
            ctx.urls.outbox(handle) + "?page=1",
            ctx.urls.followers(handle),
            ctx.urls.followers(handle) + "?page=1",
        ):
            for accept in (AP_JSON, BROWSER):
                response = await http.get(url, headers={"Accept": accept})
                assert response.status_code == status, (url, accept, response.status_code)
        # A properly signed Follow to the assembly's own inbox is refused the same way.
        follow = {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{mallory.id}#follows/{handle}",
            "type": "Follow",
            "actor": mallory.id,
            "object": ctx.urls.actor(handle),
        }
        response = await peer.post_activity(mallory, ctx.urls.inbox(handle), follow)
        assert response.status_code == status, (handle, response.text)

    for model in (InboxActivity, Follower, RemoteActor):
        assert await count(ctx, model) == 0, model.__name__


async def test_outbox_pages_newest_first_without_deleted(
    ctx: Context, http: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    published = [await post(ctx, "libertyplaza", f"Communiqué number {n}.") for n in range(27)]
    # Delete one that would be on the first page and one that would be on the second.
    deleted = [published[25].url, published[3].url]
    for url in deleted:
        async with ctx.sessions() as session, session.begin():
            await communiques.delete(session, ctx.urls, url=url, now=ctx.clock())
    remaining = [p.url for p in reversed(published) if p.url not in deleted]  # newest first
    assert len(remaining) == 25

    outbox_url = ctx.urls.outbox("libertyplaza")
    outbox = await get_doc(http, outbox_url)
    assert outbox["type"] == "OrderedCollection"
    assert outbox["totalItems"] == 25
    assert "orderedItems" not in outbox or outbox["orderedItems"] == []

    page1 = await get_doc(http, outbox["first"])
    assert page1["type"] == "OrderedCollectionPage"
    assert page1["partOf"] == outbox_url
    assert len(page1["orderedItems"]) == 20
    assert "next" in page1
    page2 = await get_doc(http, page1["next"])
    assert page2["type"] == "OrderedCollectionPage"
    assert page2["partOf"] == outbox_url
    assert len(page2["orderedItems"]) == 5
    assert "next" not in page2

    items = page1["orderedItems"] + page2["orderedItems"]
    assert [item["object"]["id"] for item in items] == remaining
    for item in items:
        assert item["type"] == "Create"
        assert item["actor"] == ctx.urls.actor("libertyplaza")
        note = item["object"]
        assert isinstance(note, dict) and note["type"] == "Note"  # embedded, not a link
        assert note["attributedTo"] == ctx.urls.actor("libertyplaza")
        assert "Communiqué number" in note["content"]
        # The activity and its Note both dereference at their ids.
        activity = await get_doc(http, item["id"])
        assert activity["type"] == "Create"
        assert activity["object"]["id"] == note["id"]
        served_note = await get_doc(http, note["id"])
        assert served_note["content"] == note["content"]

    # The deleted communiqués are tombstones, not outbox items.
    for url in deleted:
        response = await http.get(url, headers={"Accept": AP_JSON})
        assert response.status_code == 410
        assert response.json()["type"] == "Tombstone"


async def test_followers_collection_lists_follower_uris(
    ctx: Context, http: httpx.AsyncClient, peer: Peer
) -> None:
    # An assembly that publishes its followers (by default only their number is shown:
    # tests/security/test_privacy.py).
    await approved_assembly(ctx, "libertyplaza")
    async with ctx.sessions() as session, session.begin():
        await assemblies.set_publish_social_graph(session, handle="libertyplaza", publish=True)
    followers_url = ctx.urls.followers("libertyplaza")
    empty = await get_doc(http, followers_url)
    assert empty["type"] == "OrderedCollection"
    assert empty["totalItems"] == 0

    # Three real follows from the peer, then enough stored followers to need a second
    # page (following over HTTP costs ~0.2 s each).
    actors = [peer.add_actor(f"user{n}") for n in range(3)]
    for actor in actors:
        await peer.follow(actor, f"libertyplaza@{ctx.urls.host}")
    assert await count(ctx, Follower) == 3
    listed_now = await get_doc(http, (await get_doc(http, followers_url))["first"])
    assert sorted(listed_now["orderedItems"]) == sorted(actor.id for actor in actors)
    assert "next" not in listed_now
    others = [f"https://elsewhere.example/users/u{n}" for n in range(18)]
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        for uri in others:
            remote = RemoteActor(
                uri=uri, domain="elsewhere.example", inbox_uri=uri + "/inbox", document={}
            )
            session.add(remote)
            await session.flush()
            session.add(
                Follower(assembly_id=assembly.id, actor_id=remote.id, follow_uri=uri + "#f")
            )
    assert await count(ctx, Follower) == 21

    collection = await get_doc(http, followers_url)
    assert collection["type"] == "OrderedCollection"
    assert collection["totalItems"] == 21
    page1 = await get_doc(http, collection["first"])
    assert page1["partOf"] == followers_url
    assert len(page1["orderedItems"]) == 20
    page2 = await get_doc(http, page1["next"])
    assert "next" not in page2
    listed = page1["orderedItems"] + page2["orderedItems"]
    assert all(isinstance(uri, str) for uri in listed)
    assert sorted(listed) == sorted([actor.id for actor in actors] + others)


async def test_following_and_featured_are_empty_collections(
    ctx: Context, http: httpx.AsyncClient
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await post(ctx, "libertyplaza", "Not pinned.")
    for url in (ctx.urls.following("libertyplaza"), ctx.urls.featured("libertyplaza")):
        doc = await get_doc(http, url)
        assert doc["type"] == "OrderedCollection", url
        assert doc["totalItems"] == 0, url
        if "first" in doc:
            page = await get_doc(http, doc["first"])
            assert page["orderedItems"] == [], url
            assert "next" not in page
        elif url == ctx.urls.following("libertyplaza"):
            assert "orderedItems" not in doc  # not published: only the total
        else:
            assert doc["orderedItems"] == [], url


async def test_instance_actor(ctx: Context, http: httpx.AsyncClient) -> None:
    url = ctx.urls.instance_actor()
    assert url == f"{ctx.urls.base}/actor"
    doc = await get_doc(http, url)
    assert doc["type"] == "Application"
    assert doc["inbox"].startswith(ctx.urls.base + "/")
    assert doc["publicKey"]["id"] == url + "#main-key"
    assert doc["publicKey"]["owner"] == url
    check_rsa_2048(doc["publicKey"]["publicKeyPem"])
    assert doc["publicKey"]["publicKeyPem"] == ctx.instance_public_key_pem
