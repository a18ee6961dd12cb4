"""An inbox takes ActivityStreams only (415 otherwise), and reads a document without
``@context`` as ActivityStreams (AS2-core §2.1.3) instead of refusing it."""

from __future__ import annotations

import pytest

from server.context import Context
from server.models import Follower
from tests.helpers import approved_assembly, count
from tests.security.support import (
    Attacker,
    actor_document,
    follow,
    signed_post,
    snapshot,
)
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/json",
        "text/html",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/ld+json",
        'application/ld+json; profile="https://example.org/not-activitystreams"',
        "application/xml",
        "",
    ],
)
async def test_inbox_refuses_other_media_types(
    ctx: Context, server: ServerThread, attacker: Attacker, content_type: str
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "sender")
    before = await snapshot(ctx)
    answer = await signed_post(
        ctx.urls.inbox("ga"),
        follow(keyed.id, ctx.urls.actor("ga")),
        key_id=keyed.key_id,
        private_key=keyed.private_key,
        content_type=content_type,
    )
    assert answer.status_code == 415
    # A form POST is a browser's: it gets the error as a page, everything else as JSON.
    assert "an inbox takes application/activity+json" in answer.text.lower()
    assert await snapshot(ctx) == before
    assert attacker.gets() == []  # refused before the key was looked up


@pytest.mark.parametrize(
    "content_type",
    [
        "application/activity+json",
        "application/activity+json; charset=utf-8",
        'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
        "Application/Activity+JSON",
    ],
)
async def test_inbox_takes_activitystreams_media_types(
    ctx: Context, server: ServerThread, attacker: Attacker, content_type: str
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "sender")
    answer = await signed_post(
        ctx.urls.inbox("ga"),
        follow(keyed.id, ctx.urls.actor("ga")),
        key_id=keyed.key_id,
        private_key=keyed.private_key,
        content_type=content_type,
    )
    assert answer.status_code == 202
    assert await count(ctx, Follower) == 1


async def test_activity_without_context_is_read_as_activitystreams(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "bare")
    activity = follow(keyed.id, ctx.urls.actor("ga"))
    del activity["@context"]
    answer = await signed_post(
        ctx.urls.inbox("ga"), activity, key_id=keyed.key_id, private_key=keyed.private_key
    )
    assert answer.status_code == 202
    assert answer.json() == {"status": "queued"}
    assert await count(ctx, Follower) == 1


async def test_actor_document_without_context_is_read_as_activitystreams(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, document = actor_document(attacker, "barer")
    del document["@context"]
    attacker.serve("/users/barer", document)
    activity = follow(keyed.id, ctx.urls.actor("ga"))
    answer = await signed_post(
        ctx.urls.inbox("ga"), activity, key_id=keyed.key_id, private_key=keyed.private_key
    )
    # Without security/v1, publicKey is not an AS2 term: the key cannot be found, cleanly.
    assert answer.status_code == 401
    assert "does not list that key" in answer.json()["error"]
