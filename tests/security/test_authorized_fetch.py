"""Authorized fetch (INTEROCC_AUTHORIZED_FETCH): actor-scoped ActivityStreams documents only
for signed GETs from servers we do not block.

Our app runs under uvicorn on loopback; the signer is a Mastodon-like peer on another
loopback port, serving its own actors and keys, signing with its own code
(tests/support/httpsig.py). Every refusal is checked for its answer and for what it did
not do: no document content in the answer, no row stored, no request to a blocked host.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select, update

from server import assemblies, moderation
from server.activitypub import integrity
from server.activitypub.signatures import sign_request_rfc9421
from server.config import ConfigError, Settings, load_settings
from server.context import Context
from server.models import (
    Communique,
    DomainBlock,
    Follower,
    FollowerStatus,
    Following,
    FollowStatus,
    RemoteActor,
    RemoteKey,
    Share,
)
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly, count, post
from tests.security.support import snapshot
from tests.support import httpsig
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

AP_JSON = "application/activity+json"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HANDLE = "libertyplaza"
# Words that appear only inside the protected documents: an answer that holds one leaked.
MARKER = "Zanzibar7731"
WITNESS = "https://witness.example/users/quietly-following"
FOLLOWED = "https://comrades.example/users/followed-in-secret"
SHARE = "https://sharer.example/announces/private-share"


@dataclass(frozen=True)
class World:
    note_url: str
    activity_url: str
    peer: Peer
    alice: PeerActor  # a legitimate remote actor
    bob: PeerActor  # another one, on the same peer


@pytest.fixture
def authorized() -> bool:
    return True


@pytest.fixture
def settings(database_url: str, port: int, authorized: bool) -> Settings:
    return make_settings(database_url, f"http://127.0.0.1:{port}", authorized_fetch=authorized)


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


@pytest.fixture
async def world(ctx: Context, server: ServerThread, peer: Peer) -> World:
    """An assembly with a pinned, shared communiqué, a follower and a followed actor, all
    listed publicly (so that an answer that should hold nothing would show them)."""
    await approved_assembly(ctx, HANDLE)
    published = await post(ctx, HANDLE, f"Only signed servers may read this: {MARKER}.")
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, HANDLE)
        assembly.publish_social_graph = True
        await session.execute(
            update(Communique)
            .where(Communique.id == published.communique.id)
            .values(pinned_at=ctx.clock())
        )
        witness = RemoteActor(
            uri=WITNESS, domain="witness.example", inbox_uri=WITNESS + "/inbox", document={}
        )
        session.add(witness)
        await session.flush()
        session.add(
            Follower(
                assembly_id=assembly.id,
                actor_id=witness.id,
                follow_uri=WITNESS + "#follow",
                status=FollowerStatus.ACCEPTED,
            )
        )
        session.add(
            Following(
                assembly_id=assembly.id,
                target_uri=FOLLOWED,
                inbox_uri=FOLLOWED + "/inbox",
                follow_uri=ctx.urls.actor(HANDLE) + "#follows/1",
                status=FollowStatus.ACCEPTED,
            )
        )
        session.add(
            Share(
                communique_id=published.communique.id,
                actor_uri="https://sharer.example/users/s",
                announce_uri=SHARE,
            )
        )
    activity_url = ctx.urls.activity(published.activity.public_id)
    return World(published.url, activity_url, peer, peer.add_actor("alice"), peer.add_actor("bob"))


@pytest.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=20) as client:
        yield client


# ---- the documents ---------------------------------------------------------------------------


def _note_id(ctx: Context, world: World) -> str:
    return world.note_url


# name → (URL, check of the full answer a permitted reader gets)
Check = Callable[[Context, World, dict[str, Any]], None]


def _check_note(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["id"] == world.note_url and MARKER in doc["content"]


def _check_outbox(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["totalItems"] == 1 and doc["first"] == ctx.urls.outbox(HANDLE) + "?page=1"


def _check_outbox_page(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["orderedItems"][0]["object"]["id"] == world.note_url


def _check_followers(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["totalItems"] == 1 and "first" in doc


def _check_followers_page(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["orderedItems"] == [WITNESS]


def _check_following(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["totalItems"] == 1 and "first" in doc


def _check_featured(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert [item["id"] for item in doc["orderedItems"]] == [world.note_url]


def _check_shares(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["totalItems"] == 1


def _check_activity(ctx: Context, world: World, doc: dict[str, Any]) -> None:
    assert doc["type"] == "Create" and doc["object"]["id"] == world.note_url


DOCUMENTS: dict[str, tuple[Callable[[Context, World], str], Check]] = {
    "communique": (_note_id, _check_note),
    "outbox": (lambda ctx, w: ctx.urls.outbox(HANDLE), _check_outbox),
    "outbox-page": (lambda ctx, w: ctx.urls.outbox(HANDLE) + "?page=1", _check_outbox_page),
    "followers": (lambda ctx, w: ctx.urls.followers(HANDLE), _check_followers),
    "followers-page": (
        lambda ctx, w: ctx.urls.followers(HANDLE) + "?page=1",
        _check_followers_page,
    ),
    "following": (lambda ctx, w: ctx.urls.following(HANDLE), _check_following),
    "featured": (lambda ctx, w: ctx.urls.featured(HANDLE), _check_featured),
    "shares": (
        lambda ctx, w: ctx.urls.shares(HANDLE, w.note_url.rsplit("/", 1)[1]),
        _check_shares,
    ),
    "activity": (lambda ctx, w: w.activity_url, _check_activity),
}
# Answered only as ActivityStreams, whatever the Accept header asks for.
AS2_ONLY = [name for name in DOCUMENTS if name != "communique"]


def url_of(ctx: Context, world: World, name: str) -> str:
    return DOCUMENTS[name][0](ctx, world)


def signed(
    url: str,
    actor: PeerActor,
    *,
    accept: str = AP_JSON,
    key_id: str | None = None,
    private_key: rsa.RSAPrivateKey | None = None,
    date: datetime | None = None,
    sign_url: str | None = None,
) -> dict[str, str]:
    """Headers of a GET signed the way Mastodon signs one (the peer's own signer)."""
    headers = {"Accept": accept}
    headers |= httpsig.sign(
        "GET",
        sign_url or url,
        headers,
        None,
        key_id=key_id or actor.key_id,
        private_key=private_key or actor.private_key,
        date=date,
    )
    return headers


def assert_nothing_leaked(response: httpx.Response) -> None:
    for secret in (MARKER, WITNESS, FOLLOWED, SHARE):
        assert secret not in response.text, secret


async def assert_refused(
    response: httpx.Response, status: int, ctx: Context, before: dict[str, int]
) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["error"], str) and len(response.text) < 300
    assert_nothing_leaked(response)
    assert await snapshot(ctx) == before  # nothing stored: no key, no actor, no row


# ---- unsigned ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DOCUMENTS))
async def test_unsigned_get_is_refused(
    ctx: Context, world: World, http: httpx.AsyncClient, name: str
) -> None:
    before = await snapshot(ctx)
    response = await http.get(url_of(ctx, world, name), headers={"Accept": AP_JSON})
    await assert_refused(response, 401, ctx, before)
    assert world.peer.gets == []  # and nobody was asked for a key


@pytest.mark.parametrize("name", AS2_ONLY)
async def test_a_browser_accept_header_does_not_unlock_a_collection(
    ctx: Context, world: World, http: httpx.AsyncClient, name: str
) -> None:
    """Collections and activities have no HTML face: asking for HTML gets no JSON either."""
    response = await http.get(url_of(ctx, world, name), headers={"Accept": BROWSER})
    assert response.status_code == 401
    assert_nothing_leaked(response)


async def test_an_unsigned_get_of_an_assembly_gets_only_its_key(
    ctx: Context, world: World, http: httpx.AsyncClient
) -> None:
    before = await snapshot(ctx)
    response = await http.get(ctx.urls.actor(HANDLE), headers={"Accept": AP_JSON})
    assert response.status_code == 200
    doc = response.json()
    # Its keys only: the RSA key of its signatures, the Ed25519 key of its proofs.
    assert set(doc) == {
        "@context",
        "id",
        "type",
        "preferredUsername",
        "inbox",
        "publicKey",
        "assertionMethod",
    }
    assert doc["id"] == ctx.urls.actor(HANDLE) and doc["type"] == "Group"
    assert doc["inbox"] == ctx.urls.inbox(HANDLE)
    async with ctx.sessions() as session:
        assembly = await assemblies.get(session, HANDLE)
    assert doc["publicKey"] == {
        "id": ctx.urls.key_id(HANDLE),
        "owner": ctx.urls.actor(HANDLE),
        "publicKeyPem": assembly.public_key_pem,
    }
    ((method, controller, _key),) = integrity.assertion_keys_of(doc)
    assert (method, controller) == (ctx.urls.assertion_key_id(HANDLE), ctx.urls.actor(HANDLE))
    assert "Signature" in response.headers["vary"]
    assert await snapshot(ctx) == before


@pytest.mark.parametrize("how", ["stale-date", "another-key", "unknown-actor"])
async def test_a_badly_signed_get_of_an_assembly_gets_only_its_key(
    ctx: Context, world: World, http: httpx.AsyncClient, how: str
) -> None:
    """A server we cannot verify right now must still be able to verify us."""
    url = ctx.urls.actor(HANDLE)
    if how == "stale-date":
        headers = signed(url, world.alice, date=datetime.now(UTC) - timedelta(hours=2))
    elif how == "another-key":
        headers = signed(url, world.alice, private_key=_stranger_key())
    else:
        headers = signed(url, world.alice, key_id=world.peer.base_url + "/users/nobody#main-key")
    before = await snapshot(ctx)
    response = await http.get(url, headers=headers)
    assert response.status_code == 200
    assert set(response.json()) == {
        "@context",
        "id",
        "type",
        "preferredUsername",
        "inbox",
        "publicKey",
        "assertionMethod",
    }
    assert await snapshot(ctx) == before


# ---- signed, and what a signature must be -----------------------------------------------


@pytest.mark.parametrize("name", list(DOCUMENTS))
async def test_a_valid_signature_gets_the_whole_document(
    ctx: Context, world: World, http: httpx.AsyncClient, name: str
) -> None:
    url = url_of(ctx, world, name)
    response = await http.get(url, headers=signed(url, world.alice))
    assert response.status_code == 200, response.text
    assert "Signature" in response.headers["vary"]
    doc = response.json()
    assert doc["id"] == url
    DOCUMENTS[name][1](ctx, world, doc)
    # The signer's key was fetched from its own server once, and is kept for next time.
    assert [path for path, _ in world.peer.gets] == ["/users/alice"]
    async with ctx.sessions() as session:
        keys = (await session.scalars(select(RemoteKey.key_id))).all()
    assert list(keys) == [world.alice.key_id]
    again = await http.get(url, headers=signed(url, world.alice))
    assert again.status_code == 200
    assert len(world.peer.gets) == 1


async def test_a_valid_signature_gets_the_whole_actor(
    ctx: Context, world: World, http: httpx.AsyncClient
) -> None:
    url = ctx.urls.actor(HANDLE)
    response = await http.get(url, headers=signed(url, world.alice))
    assert response.status_code == 200
    doc = response.json()
    for field in ("outbox", "followers", "following", "featured", "name", "summary"):
        assert field in doc, field


async def test_an_rfc9421_signature_is_accepted_too(
    ctx: Context, world: World, http: httpx.AsyncClient
) -> None:
    url = world.note_url
    headers = {"Accept": AP_JSON}
    headers |= sign_request_rfc9421(
        "GET",
        url,
        headers,
        None,
        key_id=world.alice.key_id,
        private_key=world.alice.private_key,
        now=datetime.now(UTC),
    )
    response = await http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert MARKER in response.json()["content"]


_STRANGER: list[rsa.RSAPrivateKey] = []


def _stranger_key() -> rsa.RSAPrivateKey:
    """A key no actor publishes (made once; RSA generation is slow)."""
    if not _STRANGER:
        _STRANGER.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _STRANGER[0]


def _tampered(headers: dict[str, str]) -> dict[str, str]:
    value = headers["Signature"]
    start = value.index('signature="') + len('signature="')
    raw = bytearray(base64.b64decode(value[start : value.index('"', start)]))
    raw[10] ^= 0xFF
    forged = base64.b64encode(bytes(raw)).decode()
    return {**headers, "Signature": value[:start] + forged + value[value.index('"', start) :]}


def _hmac(headers: dict[str, str]) -> dict[str, str]:
    value = headers["Signature"].replace('algorithm="rsa-sha256"', 'algorithm="hmac-sha256"')
    return {**headers, "Signature": value}


def _other_host(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc="elsewhere.example"))


def _covering_only_the_target(url: str, actor: PeerActor) -> dict[str, str]:
    target = urlsplit(url).path
    text = httpsig.signing_string(["(request-target)"], "GET", target, {})
    signature = actor.private_key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    value = base64.b64encode(signature).decode()
    return {
        "Accept": AP_JSON,
        "Signature": f'keyId="{actor.key_id}",algorithm="rsa-sha256",'
        f'headers="(request-target)",signature="{value}"',
    }


BAD_SIGNATURES: dict[str, Callable[[Context, World, str], dict[str, str]]] = {
    # Signed with a key the named actor does not publish.
    "signed-with-another-key": lambda ctx, w, url: signed(
        url, w.alice, private_key=_stranger_key()
    ),
    # bob's key id, alice's signature: the key of another actor.
    "key-of-another-actor": lambda ctx, w, url: signed(url, w.alice, key_id=w.bob.key_id),
    "tampered-signature": lambda ctx, w, url: _tampered(signed(url, w.alice)),
    "stale-date": lambda ctx, w, url: signed(
        url, w.alice, date=datetime.now(UTC) - timedelta(hours=2)
    ),
    "date-in-the-future": lambda ctx, w, url: signed(
        url, w.alice, date=datetime.now(UTC) + timedelta(hours=2)
    ),
    # A signed GET captured on its way to another server, replayed here.
    "signed-for-another-host": lambda ctx, w, url: signed(url, w.alice, sign_url=_other_host(url)),
    "signed-for-another-path": lambda ctx, w, url: signed(
        url, w.alice, sign_url=ctx.urls.outbox(HANDLE)
    ),
    "date-changed-after-signing": lambda ctx, w, url: {
        **signed(url, w.alice, date=datetime.now(UTC) - timedelta(minutes=5)),
        "Date": httpsig.http_date(datetime.now(UTC)),
    },
    "key-the-actor-does-not-publish": lambda ctx, w, url: signed(
        url, w.alice, key_id=w.alice.id + "#another-key"
    ),
    "actor-that-does-not-exist": lambda ctx, w, url: signed(
        url, w.alice, key_id=w.peer.base_url + "/users/nobody#main-key"
    ),
    "covers-neither-host-nor-date": lambda ctx, w, url: _covering_only_the_target(url, w.alice),
    "hmac-algorithm": lambda ctx, w, url: _hmac(signed(url, w.alice)),
    "malformed-signature-header": lambda ctx, w, url: {
        "Accept": AP_JSON,
        "Signature": "keyId=alice, let me in",
    },
    "bearer-token-instead": lambda ctx, w, url: {
        "Accept": AP_JSON,
        "Authorization": "Bearer let-me-in",
    },
}


@pytest.mark.parametrize("how", list(BAD_SIGNATURES))
async def test_a_bad_signature_is_refused(
    ctx: Context, world: World, http: httpx.AsyncClient, how: str
) -> None:
    url = world.note_url
    headers = BAD_SIGNATURES[how](ctx, world, url)
    before = await snapshot(ctx)
    response = await http.get(url, headers=headers)
    await assert_refused(response, 401, ctx, before)


# ---- blocked domains ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["communique", "outbox", "actor"])
async def test_a_key_on_a_blocked_domain_is_refused_before_any_request(
    ctx: Context, world: World, http: httpx.AsyncClient, name: str
) -> None:
    async with ctx.sessions() as session, session.begin():
        await moderation.block_domain(
            session, domain="blocked.example", reason="", own_host=ctx.urls.host, now=ctx.clock()
        )
    url = ctx.urls.actor(HANDLE) if name == "actor" else url_of(ctx, world, name)
    # A subdomain is covered by its parent's block; the key's host is never asked (it does
    # not even exist: a request would have failed as 401, not 403).
    key_id = "https://social.blocked.example/users/mallory#main-key"
    before = await snapshot(ctx)
    response = await http.get(url, headers=signed(url, world.alice, key_id=key_id))
    await assert_refused(response, 403, ctx, before)


async def _block_the_peer(ctx: Context) -> None:
    # The peer shares our loopback address, which the admin form refuses to block (it is our
    # own): the row is written directly, as the form would for any other domain.
    async with ctx.sessions() as session, session.begin():
        session.add(DomainBlock(domain="127.0.0.1", reason="test", created_at=ctx.clock()))


async def test_a_blocked_signer_gets_nothing_and_is_not_asked_for_its_key(
    ctx: Context, world: World, http: httpx.AsyncClient
) -> None:
    await _block_the_peer(ctx)
    before = await snapshot(ctx)
    for url in (world.note_url, ctx.urls.actor(HANDLE)):
        response = await http.get(url, headers=signed(url, world.alice))
        await assert_refused(response, 403, ctx, before)
    assert world.peer.gets == []


async def test_a_signer_blocked_after_its_key_was_kept_is_refused(
    ctx: Context, world: World, http: httpx.AsyncClient
) -> None:
    url = world.note_url
    assert (await http.get(url, headers=signed(url, world.alice))).status_code == 200
    assert await count(ctx, RemoteKey) == 1
    await _block_the_peer(ctx)
    before = await snapshot(ctx)
    response = await http.get(url, headers=signed(url, world.alice))
    await assert_refused(response, 403, ctx, before)


@pytest.mark.parametrize("name", [*DOCUMENTS, "actor"])
async def test_a_kept_answer_is_never_served_past_the_checks(
    ctx: Context, world: World, http: httpx.AsyncClient, name: str
) -> None:
    """The read cache keeps what a permitted reader got; who may read it is still decided on
    every request: unsigned and badly signed readers, and a signer blocked since, get nothing
    (the actor: only its key) while the answer stays kept for the permitted."""
    url = ctx.urls.actor(HANDLE) if name == "actor" else url_of(ctx, world, name)
    assert (await http.get(url, headers=signed(url, world.alice))).status_code == 200
    kept = await http.get(url, headers=signed(url, world.bob))
    assert kept.status_code == 200 and kept.headers.get("etag")
    full = kept.json()

    tries = {
        "unsigned": {"Accept": AP_JSON},
        "another key": signed(url, world.alice, private_key=_stranger_key()),
        # A conditional request must not turn a refusal into a 304 either.
        "unsigned if-none-match": {"Accept": AP_JSON, "If-None-Match": kept.headers["etag"]},
    }
    for how, headers in tries.items():
        response = await http.get(url, headers=headers)
        if name == "actor":
            assert response.status_code == 200, how
            assert "outbox" not in response.json() and response.json() != full, how
        else:
            assert response.status_code == 401, (how, response.status_code)
            assert_nothing_leaked(response)

    await _block_the_peer(ctx)
    before = await snapshot(ctx)
    response = await http.get(url, headers=signed(url, world.alice))
    await assert_refused(response, 403, ctx, before)


async def test_a_signed_server_does_not_see_an_unpublished_list_either(
    ctx: Context, world: World, http: httpx.AsyncClient
) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.set_publish_social_graph(session, handle=HANDLE, publish=False)
    for url in (ctx.urls.followers(HANDLE), ctx.urls.following(HANDLE)):
        collection = await http.get(url, headers=signed(url, world.alice))
        assert collection.status_code == 200
        assert collection.json()["totalItems"] == 1
        assert "first" not in collection.json() and "orderedItems" not in collection.json()
        page = await http.get(url + "?page=1", headers=signed(url + "?page=1", world.alice))
        assert page.status_code == 404
        assert_nothing_leaked(collection)
        assert_nothing_leaked(page)


# ---- what stays public --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/actor",
        f"/.well-known/webfinger?resource=acct:{HANDLE}@{{host}}",
        "/.well-known/nodeinfo",
        "/nodeinfo/2.1",
        "/.well-known/host-meta",
    ],
)
async def test_discovery_and_the_instance_actor_stay_public(
    ctx: Context, world: World, http: httpx.AsyncClient, path: str
) -> None:
    url = ctx.urls.base + path.format(host=ctx.urls.host)
    response = await http.get(url, headers={"Accept": AP_JSON})
    assert response.status_code == 200, response.text
    if path == "/actor":
        assert response.json()["publicKey"]["publicKeyPem"] == ctx.instance_public_key_pem


@pytest.mark.parametrize("page", ["communique", "assembly"])
async def test_pages_for_browsers_stay_public(
    ctx: Context, world: World, http: httpx.AsyncClient, page: str
) -> None:
    url = world.note_url if page == "communique" else ctx.urls.actor(HANDLE)
    response = await http.get(url, headers={"Accept": BROWSER})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    if page == "communique":
        assert MARKER in response.text


@pytest.mark.parametrize("authorized", [False])
@pytest.mark.parametrize("name", list(DOCUMENTS))
async def test_with_the_setting_off_everything_is_public(
    ctx: Context, world: World, http: httpx.AsyncClient, name: str
) -> None:
    url = url_of(ctx, world, name)
    response = await http.get(url, headers={"Accept": AP_JSON})
    assert response.status_code == 200, response.text
    assert response.headers["vary"] == "Accept"
    DOCUMENTS[name][1](ctx, world, response.json())
    actor = await http.get(ctx.urls.actor(HANDLE), headers={"Accept": AP_JSON})
    assert "outbox" in actor.json() and "followers" in actor.json()


# ---- the setting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, False), ("true", True), ("on", True), ("false", False)]
)
def test_the_setting_is_read_from_the_environment(raw: str | None, expected: bool) -> None:
    env = {"INTEROCC_SECRET_KEY": SECRET}
    if raw is not None:
        env["INTEROCC_AUTHORIZED_FETCH"] = raw
    assert load_settings(env).authorized_fetch is expected


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="INTEROCC_AUTHORIZED_FETCH"):
        load_settings({"INTEROCC_SECRET_KEY": SECRET, "INTEROCC_AUTHORIZED_FETCH": "maybe"})
