"""Proves the Mastodon-like test peer: its own HTTP signatures and two peers over loopback."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.applications import Starlette

from tests.support import httpsig
from tests.support.peer import Peer, PeerActor, pooled_key, public_pem
from tests.support.servers import ServerThread, free_port

pytestmark = pytest.mark.e2e

DATE = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)
BODY = b'{"type": "Note"}'


# ---- signature format, checked against hand-written literals -----------------------------


def test_post_signing_string_is_mastodon_format() -> None:
    key = pooled_key()
    out = httpsig.sign(
        "POST",
        "http://example.test:8080/users/bob/inbox",
        {"Content-Type": "application/activity+json"},
        BODY,
        key_id="http://a.test/users/alice#main-key",
        private_key=key,
        date=DATE,
    )
    assert out["Date"] == "Tue, 05 Mar 2024 07:08:09 GMT"
    assert out["Host"] == "example.test:8080"
    assert out["Digest"] == "SHA-256=4c3rkbmPp4xIGEfnTdTLlnIqC97PPl4vPIbNWcV9DQw="
    params = httpsig.parse_signature_header(out["Signature"])
    assert out["Signature"].startswith(
        'keyId="http://a.test/users/alice#main-key",algorithm="rsa-sha256",'
        'headers="(request-target) host date digest",signature="'
    )
    expected = (
        "(request-target): post /users/bob/inbox\n"
        "host: example.test:8080\n"
        "date: Tue, 05 Mar 2024 07:08:09 GMT\n"
        "digest: SHA-256=4c3rkbmPp4xIGEfnTdTLlnIqC97PPl4vPIbNWcV9DQw="
    )
    key.public_key().verify(  # raises InvalidSignature if the signing string differs
        base64.b64decode(params["signature"]),
        expected.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_get_signing_string_covers_accept() -> None:
    key = pooled_key()
    accept = "application/activity+json"
    out = httpsig.sign(
        "GET", "http://b.test/users/bob?x=1", {"Accept": accept}, None,
        key_id="k", private_key=key, date=DATE,
    )  # fmt: skip
    assert "Digest" not in out
    params = httpsig.parse_signature_header(out["Signature"])
    assert params["headers"] == "(request-target) host date accept"
    expected = (
        "(request-target): get /users/bob?x=1\n"
        "host: b.test\n"
        "date: Tue, 05 Mar 2024 07:08:09 GMT\n"
        "accept: application/activity+json"
    )
    key.public_key().verify(
        base64.b64decode(params["signature"]),
        expected.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


HAND_TEXT = (
    "(request-target): post /inbox\n"
    "host: b.test\n"
    "date: Tue, 05 Mar 2024 07:08:09 GMT\n"
    "digest: SHA-256=4c3rkbmPp4xIGEfnTdTLlnIqC97PPl4vPIbNWcV9DQw="
)


@pytest.mark.parametrize(
    ("mutate", "body", "now", "reason"),
    [
        (None, BODY, DATE, "ok"),
        (None, BODY, DATE + timedelta(minutes=59), "ok"),
        (None, BODY + b" ", DATE, "Digest does not match body"),
        (None, BODY, DATE + timedelta(hours=2), "outside"),
        ({"Host": "evil.test"}, BODY, DATE, "does not verify"),
        ({"Digest": "SHA-256=" + "A" * 43 + "="}, BODY, DATE, "Digest does not match"),
        ({"Signature": 'keyId="k",headers="date",signature="AA=="'}, BODY, DATE, "not cover"),
        ({"Signature": 'keyId="k",algorithm="rsa-sha1",signature="AA=="'}, BODY, DATE, "algorithm"),
        ({"Signature": "keyId=k,,="}, BODY, DATE, "malformed"),
    ],
)
def test_verify_against_hand_made_signature(
    mutate: dict[str, str] | None, body: bytes, now: datetime, reason: str
) -> None:
    """verify() checked against a signature made with cryptography over HAND_TEXT."""
    key = pooled_key()
    sig = base64.b64encode(key.sign(HAND_TEXT.encode(), padding.PKCS1v15(), hashes.SHA256()))
    headers = {  # upper-case names: lookups must be case-insensitive
        "HOST": "b.test",
        "DATE": "Tue, 05 Mar 2024 07:08:09 GMT",
        "DIGEST": "SHA-256=4c3rkbmPp4xIGEfnTdTLlnIqC97PPl4vPIbNWcV9DQw=",
        "SIGNATURE": 'keyId="k",algorithm="hs2019",headers="(request-target) host date digest",'
        f'signature="{sig.decode()}"',
    }
    for name, value in (mutate or {}).items():
        headers[name.upper()] = value
    ok, why = httpsig.verify("POST", "/inbox", headers, body, public_pem(key), now=now)
    assert ok == (reason == "ok") and reason in why, why


# ---- ServerThread -----------------------------------------------------------------------


def test_server_thread_start_failure_raises() -> None:
    @asynccontextmanager
    async def boom(app: Starlette):  # type: ignore[no-untyped-def]
        raise RuntimeError("no")
        yield

    with pytest.raises(RuntimeError, match="failed to start"):
        ServerThread(Starlette(lifespan=boom)).start()
    assert free_port() > 0


# ---- two peers over loopback --------------------------------------------------------------


@pytest.fixture
def peers() -> Iterator[tuple[Peer, Peer]]:
    a, b = Peer(name="a").start(), Peer(name="b").start()
    try:
        yield a, b
    finally:
        for p in (a, b):  # stop in parallel
            assert p._thread is not None
            p._thread.request_stop()
        a.stop()
        b.stop()


def note(actor: PeerActor, n: int = 1) -> dict[str, object]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{actor.id}/statuses/{n}/activity",
        "type": "Create",
        "actor": actor.id,
        "object": {"id": f"{actor.id}/statuses/{n}", "type": "Note", "content": "hi"},
    }


async def test_signed_post_is_verified(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    alice, bob = a.add_actor("alice"), b.add_actor("bob")
    resp = await a.post_activity(alice, bob.inbox, note(alice))
    assert resp.status_code == 202
    resp = await a.post_activity(alice, bob.shared_inbox, note(alice, 2))
    assert resp.status_code == 202
    assert [(r.path, r.verified, r.reason, r.status) for r in b.received] == [
        ("/users/bob/inbox", True, "ok", 202),
        ("/inbox", True, "ok", 202),
    ]
    assert [x["id"] for x in b.inbox_activities("Create")] == [note(alice, n)["id"] for n in (1, 2)]
    # B fetched alice's key once (cached afterwards), with a signed GET as bob
    key_gets = [h for path, h in a.gets if path == "/users/alice"]
    assert len(key_gets) == 1
    assert f'keyId="{bob.key_id}"' in key_gets[0]["signature"]


async def test_tampering_is_rejected(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    alice, mallory, bob = a.add_actor("alice"), a.add_actor("mallory"), b.add_actor("bob")
    cases = [
        ({"tamper_body": b'{"actor": "x"}'}, "Digest does not match"),
        ({"date": datetime.now(UTC) - timedelta(hours=2)}, "outside"),
        ({"key_id": mallory.key_id}, "signature does not verify"),  # alice's key, not hers
        ({"sign": False}, "missing Signature"),
        ({"headers_override": {"Date": None}}, "absent from request: date"),
        ({"key_id": f"{a.base_url}/users/nobody#main-key"}, "key fetch failed"),
    ]
    for kwargs, reason in cases:
        resp = await a.post_activity(alice, bob.inbox, note(alice), **kwargs)  # type: ignore[arg-type]
        assert resp.status_code == 401, kwargs
        assert not b.received[-1].verified
        assert reason in b.received[-1].reason, (kwargs, b.received[-1].reason)
    # mallory signs correctly with her own key, but claims to be alice
    assert (await a.post_activity(mallory, bob.inbox, note(alice))).status_code == 401
    assert "is not the key owner" in b.received[-1].reason
    resp = await a.post_activity(alice, f"{b.base_url}/users/nobody/inbox", note(alice))
    assert resp.status_code == 404 and b.received[-1].status == 404
    assert len(b.received) == len(cases) + 2
    assert b.inbox_activities() == []


async def test_status_queue_and_retry_after() -> None:
    with Peer(name="a") as a, Peer(name="b", statuses=[503, 429, 500]) as b:
        alice, bob = a.add_actor("alice"), b.add_actor("bob")
        b.retry_after = "120"
        got = [await a.post_activity(alice, bob.inbox, note(alice, n)) for n in range(5)]
        assert [r.status_code for r in got] == [503, 429, 500, 202, 202]
        assert [r.headers.get("retry-after") for r in got] == ["120", "120", None, None, None]
        assert [r.status for r in b.received] == [503, 429, 500, 202, 202]
        assert all(r.verified for r in b.received)


async def test_key_rotation_refetches_once(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    alice, bob = a.add_actor("alice"), b.add_actor("bob")
    assert (await a.post_activity(alice, bob.inbox, note(alice))).status_code == 202
    alice.private_key = pooled_key()  # rotate: B's cached key is now stale
    assert (await a.post_activity(alice, bob.inbox, note(alice, 2))).status_code == 202
    assert len([p for p, _ in a.gets if p == "/users/alice"]) == 2


async def test_webfinger_follow_unfollow_and_fetch(peers: tuple[Peer, Peer]) -> None:
    a, b = peers
    alice, bob = a.add_actor("alice"), b.add_actor("bob")
    follow = await a.follow(alice, f"@{bob.handle}")
    assert follow["type"] == "Follow" and follow["object"] == bob.id
    assert follow["id"].startswith(f"{alice.id}#follows/")
    paths = [p for p, _ in b.gets]
    assert paths[0] == f"/.well-known/webfinger?resource=acct%3Abob%40{b.host.replace(':', '%3A')}"
    actor_get = b.gets[1]
    assert actor_get[0] == "/users/bob" and "signature" in actor_get[1]
    assert actor_get[1]["accept"].startswith("application/activity+json, application/ld+json")

    await a.unfollow(alice, follow)
    got = await b.wait_for(lambda rs: any((r.json or {}).get("type") == "Undo" for r in rs))
    assert [r.json["type"] for r in got if r.json] == ["Follow", "Undo"]
    assert b.inbox_activities("Undo")[0]["object"]["id"] == follow["id"]

    # by URL too; and a plain signed fetch of the actor document
    await a.follow(alice, bob.id)
    resp = await a.fetch(bob.id, signed_by=alice)
    doc = resp.json()
    assert resp.headers["content-type"] == "application/activity+json"
    assert doc["@context"] == [
        "https://www.w3.org/ns/activitystreams",
        "https://w3id.org/security/v1",
    ]
    assert doc["publicKey"] == {
        "id": f"{bob.id}#main-key",
        "owner": bob.id,
        "publicKeyPem": bob.public_key_pem,
    }
    assert doc["endpoints"]["sharedInbox"] == f"{b.base_url}/inbox"
    assert (await a.fetch(f"{b.base_url}/users/nobody")).status_code == 404
    with pytest.raises(RuntimeError, match="webfinger"):
        await a.follow(alice, f"nobody@{b.host}")
