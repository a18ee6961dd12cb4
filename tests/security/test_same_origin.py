"""Same-origin rules: everything an actor gives us, and everything it sends, is on its own host.

An actor whose inbox (or shared inbox, outbox, collections, key) is on another host would have
us deliver signed activities wherever it likes; an object, author or activity id on another
host would let it speak for others. One Accept per follower, so that a flood of Follows is not
turned into a flood of our signed deliveries. Every case asserts the answer, the rows, and what
the other host received.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server import worker
from server.context import Context
from server.models import Activity, Delivery, Follower, Reply
from tests.helpers import approved_assembly, count, post
from tests.security.support import (
    AS,
    Attacker,
    actor_document,
    attacker_server,
    follow,
    signed_post,
    snapshot,
)
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

PUBLIC = f"{AS}#Public"


@pytest.fixture
def elsewhere() -> Iterator[Attacker]:
    """Another host, a tripwire: nothing of ours may ever reach it."""
    yield from attacker_server()


@pytest.mark.parametrize(
    "field", ["inbox", "sharedInbox", "outbox", "followers", "following", "publicKey.id"]
)
async def test_actor_addresses_on_another_host_are_refused(
    ctx: Context, server: ServerThread, attacker: Attacker, elsewhere: Attacker, field: str
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, document = actor_document(attacker, "spoofer")
    target = elsewhere.url("/victim/inbox")
    if field == "sharedInbox":
        document["endpoints"] = {"sharedInbox": target}
    elif field == "publicKey.id":
        document["publicKey"]["id"] = elsewhere.url("/users/spoofer#main-key")
    else:
        document[field] = target
    attacker.serve("/users/spoofer", document)
    key_id = document["publicKey"]["id"]
    before = await snapshot(ctx)
    answer = await signed_post(
        ctx.urls.inbox("ga"),
        follow(keyed.id, ctx.urls.actor("ga")),
        key_id=key_id,
        private_key=keyed.private_key,
    )
    assert answer.status_code == 401
    assert await snapshot(ctx) == before
    await worker.run_once(ctx)
    assert elsewhere.requests == [] or field == "publicKey.id"
    assert [m for m, _p, _h in elsewhere.requests if m == "POST"] == []


async def test_repeated_follows_get_one_accept(
    ctx: Context, server: ServerThread, attacker: Attacker
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "flooder")
    for n in range(1, 41):
        answer = await signed_post(
            ctx.urls.inbox("ga"),
            follow(keyed.id, ctx.urls.actor("ga"), n),
            key_id=keyed.key_id,
            private_key=keyed.private_key,
        )
        assert answer.status_code == 202
    assert await count(ctx, Follower) == 1
    assert await count(ctx, Activity, Activity.type == "Accept") == 1
    assert await count(ctx, Delivery) == 1
    await worker.run_once(ctx)
    posts = [p for m, p, _h in attacker.requests if m == "POST"]
    assert len(posts) == 1


@pytest.mark.parametrize(
    "authors",
    [
        ["ACTOR", "OTHER"],
        ["OTHER", "ACTOR"],
        ["OTHER"],
        {"id": "OTHER", "type": "Person"},
        [{"id": "ACTOR"}, {"id": "OTHER"}],
    ],
    ids=["actor-then-other", "other-then-actor", "other-only", "other-object", "objects"],
)
async def test_note_attributed_to_someone_else_is_refused(
    ctx: Context, server: ServerThread, attacker: Attacker, authors: Any
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Open assembly tonight.")
    keyed, _doc = actor_document(attacker, "author")
    other = attacker.url("/users/somebody-else")

    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return {"ACTOR": keyed.id, "OTHER": other}.get(value, value)

    note = f"{keyed.id}/notes/1"
    create = {
        "@context": AS,
        "id": f"{note}/activity",
        "type": "Create",
        "actor": keyed.id,
        "to": [PUBLIC],
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": fill(authors),
            "inReplyTo": published.url,
            "to": [PUBLIC],
            "content": "someone else said this",
        },
    }
    before = await snapshot(ctx)
    answer = await signed_post(
        ctx.urls.shared_inbox(), create, key_id=keyed.key_id, private_key=keyed.private_key
    )
    assert answer.status_code == 403
    assert "attributed to someone else" in answer.json()["error"]
    after = await snapshot(ctx)
    # The key was fetched and cached (the signature is good); nothing else was kept.
    assert {k: v for k, v in after.items() if k not in ("RemoteActor", "RemoteKey")} == {
        k: v for k, v in before.items() if k not in ("RemoteActor", "RemoteKey")
    }
    assert await count(ctx, Reply) == 0


@pytest.mark.parametrize("where", ["activity-id", "object-id"])
async def test_ids_on_another_host_are_refused(
    ctx: Context, server: ServerThread, attacker: Attacker, elsewhere: Attacker, where: str
) -> None:
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "Open assembly tonight.")
    keyed, _doc = actor_document(attacker, "speaker")
    note = elsewhere.url("/notes/1") if where == "object-id" else f"{keyed.id}/notes/1"
    activity_id = elsewhere.url("/activities/1") if where == "activity-id" else f"{note}#create"
    create = {
        "@context": AS,
        "id": activity_id,
        "type": "Create",
        "actor": keyed.id,
        "to": [PUBLIC],
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": keyed.id,
            "inReplyTo": published.url,
            "to": [PUBLIC],
            "content": "hello",
        },
    }
    answer = await signed_post(
        ctx.urls.shared_inbox(), create, key_id=keyed.key_id, private_key=keyed.private_key
    )
    assert answer.status_code == 403
    assert await count(ctx, Reply) == 0
    assert elsewhere.requests == []
