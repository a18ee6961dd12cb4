"""Acceptance: every bad POST to an inbox gets a clear 4xx and nothing is stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from server.context import Context
from server.models import Activity, Delivery, Follower, InboxActivity, RemoteActor
from tests.helpers import approved_assembly, count
from tests.support.peer import Peer, PeerActor
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture
def peer() -> Peer:
    with Peer(name="remote") as p:
        yield p


def follow_of(actor: PeerActor, target: str, n: int = 1) -> dict[str, Any]:
    return {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{actor.id}#follows/{n}",
        "type": "Follow",
        "actor": actor.id,
        "object": target,
    }


async def nothing_stored(ctx: Context) -> None:
    for model in (InboxActivity, Follower, Activity, Delivery):
        assert await count(ctx, model) == 0, model.__name__


@pytest.fixture
async def setup(ctx: Context, server: ServerThread, peer: Peer) -> tuple[PeerActor, str, str]:
    await approved_assembly(ctx, "ga")
    actor = peer.add_actor("mallory")
    return actor, ctx.urls.inbox("ga"), ctx.urls.actor("ga")


async def test_unsigned_post(ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]) -> None:
    actor, inbox, target = setup
    response = await peer.post_activity(actor, inbox, follow_of(actor, target), sign=False)
    assert response.status_code == 401
    assert response.json()["error"] == "missing signature"
    await nothing_stored(ctx)


async def test_bad_signature(ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]) -> None:
    actor, inbox, target = setup
    signed = follow_of(actor, target)
    tampered = json.dumps({**signed, "id": f"{actor.id}#other"}).encode()
    response = await peer.post_activity(actor, inbox, signed, tamper_body=tampered)
    assert response.status_code == 401
    assert "signature not verified" in response.json()["error"]
    await nothing_stored(ctx)


async def test_signature_over_other_path(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str], server: ServerThread
) -> None:
    actor, inbox, target = setup
    # Signed for the shared inbox, sent to the assembly's own inbox.
    response = await peer.post_activity(
        actor, inbox, follow_of(actor, target), sign_url=f"{server.base_url}/inbox"
    )
    assert response.status_code == 401
    await nothing_stored(ctx)


@pytest.mark.parametrize("offset", [timedelta(hours=-2), timedelta(hours=2)])
async def test_stale_or_future_date(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str], offset: timedelta
) -> None:
    actor, inbox, target = setup
    response = await peer.post_activity(
        actor, inbox, follow_of(actor, target), date=datetime.now(UTC) + offset
    )
    assert response.status_code == 401
    assert "date" in response.json()["error"].lower()
    await nothing_stored(ctx)


async def test_date_within_window_is_accepted(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]
) -> None:
    actor, inbox, target = setup
    response = await peer.post_activity(
        actor, inbox, follow_of(actor, target), date=datetime.now(UTC) - timedelta(minutes=50)
    )
    assert response.status_code == 202
    assert await count(ctx, Follower) == 1


async def test_digest_mismatch(ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]) -> None:
    actor, inbox, target = setup
    response = await peer.post_activity(
        actor,
        inbox,
        follow_of(actor, target),
        headers_override={"Digest": "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="},
    )
    assert response.status_code == 401
    assert "digest" in response.json()["error"].lower()
    await nothing_stored(ctx)


async def test_signer_is_not_the_actor(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]
) -> None:
    actor, inbox, target = setup
    victim = peer.add_actor("victim")
    # Mallory signs with her own key an activity claiming to be the victim's.
    response = await peer.post_activity(actor, inbox, follow_of(victim, target))
    assert response.status_code == 401
    # A forwarded activity would be taken as its origin serves it; this one's origin (the
    # victim's server) serves no such activity.
    assert response.json()["error"].startswith(
        "the signing key does not belong to the activity's actor, and its origin"
    )
    await nothing_stored(ctx)


async def test_body_over_one_megabyte(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]
) -> None:
    actor, inbox, target = setup
    big = {**follow_of(actor, target), "padding": "x" * 1_000_001}
    response = await peer.post_activity(actor, inbox, big)
    assert response.status_code == 413
    assert "too large" in response.json()["error"] or "larger" in response.json()["error"]
    await nothing_stored(ctx)


async def test_chunked_body_over_limit_without_length(
    ctx: Context, setup: tuple[PeerActor, str, str]
) -> None:
    _actor, inbox, _target = setup

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(300):
            yield b"x" * 4096

    async with httpx.AsyncClient() as http:
        response = await http.post(
            inbox, content=chunks(), headers={"Content-Type": "application/activity+json"}
        )
    assert response.status_code == 413
    await nothing_stored(ctx)


async def test_non_json_body(ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]) -> None:
    actor, inbox, _target = setup
    response = await peer.post_activity(actor, inbox, b"this is not json {")
    assert response.status_code == 400
    assert response.json()["error"] == "body is not JSON"
    await nothing_stored(ctx)


async def test_json_that_is_not_an_object(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]
) -> None:
    actor, inbox, _target = setup
    response = await peer.post_activity(actor, inbox, b"[1, 2, 3]")
    assert response.status_code == 400
    await nothing_stored(ctx)


async def test_unknown_or_pending_inbox(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str], server: ServerThread
) -> None:
    actor, _inbox, _target = setup
    response = await peer.post_activity(
        actor, f"{server.base_url}/actors/nobody/inbox", follow_of(actor, "x")
    )
    assert response.status_code == 404
    await nothing_stored(ctx)
    assert await count(ctx, RemoteActor) == 0


async def test_activity_id_on_another_origin(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]
) -> None:
    actor, inbox, target = setup
    forged = {**follow_of(actor, target), "id": "https://elsewhere.example/follows/1"}
    response = await peer.post_activity(actor, inbox, forged)
    assert response.status_code == 403
    for model in (InboxActivity, Follower, Activity, Delivery):
        assert await count(ctx, model) == 0


async def test_deeply_nested_json(
    ctx: Context, peer: Peer, setup: tuple[PeerActor, str, str]
) -> None:
    actor, inbox, _target = setup
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    response = await peer.post_activity(actor, inbox, body)
    assert response.status_code == 400
    await nothing_stored(ctx)
