"""Key binding: a key signs for an actor only if that actor's own document lists it.

The attack: the victim's host lets people upload files (avatars, attachments). An attacker
uploads ``{"type": "Key", "owner": VICTIM, "publicKeyPem": ATTACKER}`` and signs with its own
key, ``keyId`` pointing at the upload. Every case asserts the answer and that nothing was
stored or changed: no reply, no rename, no key replaced, no follow removed.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from server.context import Context
from server.models import Follower, RemoteActor, RemoteKey, Reply
from tests.helpers import approved_assembly, count, post
from tests.security.support import (
    AS,
    Attacker,
    Keyed,
    actor_document,
    follow,
    signed_post,
    snapshot,
)
from tests.support.peer import pooled_key, public_pem
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture
async def world(ctx: Context, server: ServerThread, attacker: Attacker) -> dict[str, Any]:
    """An assembly with a communiqué; the victim (on the attacker-reachable host) follows it."""
    await approved_assembly(ctx, "ga")
    published = await post(ctx, "ga", "We meet at noon.")
    victim, _doc = actor_document(attacker, "victim")
    answer = await signed_post(
        ctx.urls.inbox("ga"),
        follow(victim.id, ctx.urls.actor("ga")),
        key_id=victim.key_id,
        private_key=victim.private_key,
    )
    assert answer.status_code == 202
    assert await count(ctx, Follower) == 1
    return {"victim": victim, "note_url": published.url, "evil": pooled_key()}


def reply_as(victim: Keyed, note_url: str, n: int = 1) -> dict[str, Any]:
    note = f"{victim.id}/statuses/{n}"
    return {
        "@context": AS,
        "id": f"{note}/activity",
        "type": "Create",
        "actor": victim.id,
        "to": [f"{AS}#Public"],
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": victim.id,
            "inReplyTo": note_url,
            "to": [f"{AS}#Public"],
            "content": "I, the victim, denounce this assembly.",
        },
    }


def forged_key(attacker: Attacker, victim: Keyed, evil: Any, path: str, **kw: Any) -> str:
    """Serve a key document at ``path`` naming the victim as owner, with the attacker's key."""
    key_id = attacker.url(path)
    document = {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": key_id,
        "type": "Key",
        "owner": victim.id,
        "publicKeyPem": public_pem(evil),
    }
    attacker.serve(path, document, **kw)
    return key_id


async def unchanged(ctx: Context, before: dict[str, int], victim: Keyed) -> None:
    assert await snapshot(ctx) == before
    async with ctx.sessions() as session:
        keys = (await session.scalars(select(RemoteKey))).all()
        actor = (await session.scalars(select(RemoteActor))).one()
    assert [(k.key_id, k.public_key_pem) for k in keys] == [(victim.key_id, victim.public_key_pem)]
    assert actor.name is None and actor.preferred_username == "victim"
    assert await count(ctx, Reply) == 0
    assert await count(ctx, Follower) == 1


async def test_uploaded_key_document_does_not_sign_for_its_claimed_owner(
    ctx: Context, attacker: Attacker, world: dict[str, Any]
) -> None:
    victim, evil = world["victim"], world["evil"]
    before = await snapshot(ctx)
    key_id = forged_key(attacker, victim, evil, "/media/avatar.json")
    answer = await signed_post(
        ctx.urls.shared_inbox(),
        reply_as(victim, world["note_url"]),
        key_id=key_id,
        private_key=evil,
    )
    assert answer.status_code == 401
    assert "does not list that key" in answer.json()["error"]
    await unchanged(ctx, before, victim)


@pytest.mark.parametrize(
    "media_type",
    [
        "image/png",
        "application/json",
        "text/html",
        "text/plain",
        "application/ld+json",
        'application/ld+json; profile="https://example.org/other"',
        "application/octet-stream",
    ],
)
async def test_key_document_must_be_served_as_activitystreams(
    ctx: Context, attacker: Attacker, world: dict[str, Any], media_type: str
) -> None:
    victim, evil = world["victim"], world["evil"]
    before = await snapshot(ctx)
    key_id = forged_key(attacker, victim, evil, "/media/upload.bin", content_type=media_type)
    answer = await signed_post(
        ctx.urls.shared_inbox(),
        reply_as(victim, world["note_url"]),
        key_id=key_id,
        private_key=evil,
    )
    assert answer.status_code == 401
    assert "not served as ActivityStreams" in answer.json()["error"]
    await unchanged(ctx, before, victim)


async def test_forged_update_person_neither_renames_nor_replaces_the_key(
    ctx: Context, attacker: Attacker, world: dict[str, Any]
) -> None:
    victim, evil = world["victim"], world["evil"]
    before = await snapshot(ctx)
    key_id = forged_key(attacker, victim, evil, "/media/k.json")
    update = {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": f"{victim.id}#updates/1",
        "type": "Update",
        "actor": victim.id,
        "object": {
            "id": victim.id,
            "type": "Person",
            "name": "Renamed by the attacker",
            "inbox": f"{victim.id}/inbox",
            "publicKey": {"id": key_id, "owner": victim.id, "publicKeyPem": public_pem(evil)},
        },
    }
    answer = await signed_post(ctx.urls.shared_inbox(), update, key_id=key_id, private_key=evil)
    assert answer.status_code == 401
    await unchanged(ctx, before, victim)


async def test_forged_undo_does_not_remove_the_follow(
    ctx: Context, attacker: Attacker, world: dict[str, Any]
) -> None:
    victim, evil = world["victim"], world["evil"]
    before = await snapshot(ctx)
    key_id = forged_key(attacker, victim, evil, "/media/k2.json")
    undo = {
        "@context": AS,
        "id": f"{victim.id}#undo/1",
        "type": "Undo",
        "actor": victim.id,
        "object": follow(victim.id, ctx.urls.actor("ga")),
    }
    answer = await signed_post(ctx.urls.inbox("ga"), undo, key_id=key_id, private_key=evil)
    assert answer.status_code == 401
    await unchanged(ctx, before, victim)


async def test_genuine_update_embedding_another_key_installs_only_what_the_origin_lists(
    ctx: Context, attacker: Attacker, world: dict[str, Any]
) -> None:
    """Signed by the victim's real key, but the embedded actor carries a key the victim's
    own document does not list: the profile is taken from the origin, the key is not."""
    victim, evil = world["victim"], world["evil"]
    before = await snapshot(ctx)
    update = {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": f"{victim.id}#updates/2",
        "type": "Update",
        "actor": victim.id,
        "object": {
            "id": victim.id,
            "type": "Person",
            "preferredUsername": "victim",
            "name": "Embedded name",
            "inbox": f"{victim.id}/inbox",
            "publicKey": {
                "id": f"{victim.id}#evil-key",
                "owner": victim.id,
                "publicKeyPem": public_pem(evil),
            },
        },
    }
    answer = await signed_post(
        ctx.urls.shared_inbox(), update, key_id=victim.key_id, private_key=victim.private_key
    )
    assert answer.status_code == 202
    async with ctx.sessions() as session:
        keys = (await session.scalars(select(RemoteKey))).all()
        actor = (await session.scalars(select(RemoteActor))).one()
    assert [k.key_id for k in keys] == [victim.key_id]
    assert actor.name is None  # the origin's document has no name; the embedded one is ignored
    after = await snapshot(ctx)
    assert after["InboxActivity"] == before["InboxActivity"] + 1
    assert {k: v for k, v in after.items() if k != "InboxActivity"} == {
        k: v for k, v in before.items() if k != "InboxActivity"
    }


@pytest.mark.parametrize(
    "tamper",
    ["other-key-id", "other-pem", "no-public-key", "id-not-url", "owner-elsewhere"],
)
async def test_owner_document_must_list_the_same_key(
    ctx: Context, attacker: Attacker, server: ServerThread, tamper: str
) -> None:
    """A newcomer whose own actor document does not list the signing key exactly."""
    await approved_assembly(ctx, "ga")
    before = await snapshot(ctx)
    key = pooled_key()
    actor_id = attacker.url("/users/newcomer")
    key_id = f"{actor_id}#main-key"
    listed: dict[str, Any] = {"id": key_id, "owner": actor_id, "publicKeyPem": public_pem(key)}
    if tamper == "other-key-id":
        listed["id"] = f"{actor_id}#another-key"
    elif tamper == "other-pem":
        listed["publicKeyPem"] = public_pem(pooled_key())
    elif tamper == "owner-elsewhere":
        listed["owner"] = "https://elsewhere.example/users/newcomer"
    document: dict[str, Any] = {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": actor_id if tamper != "id-not-url" else attacker.url("/users/someone-else"),
        "type": "Person",
        "inbox": f"{actor_id}/inbox",
    }
    if tamper != "no-public-key":
        document["publicKey"] = listed
    attacker.serve("/users/newcomer", document)
    answer = await signed_post(
        ctx.urls.inbox("ga"), follow(actor_id, ctx.urls.actor("ga")), key_id=key_id, private_key=key
    )
    assert answer.status_code == 401
    assert await snapshot(ctx) == before


@pytest.mark.parametrize("pem_kind", ["same", "different"])
async def test_separate_key_document_must_agree_with_its_owner(
    ctx: Context, attacker: Attacker, server: ServerThread, pem_kind: str
) -> None:
    """GoToSocial serves keys at their own URL: accepted when the owner lists the same key."""
    await approved_assembly(ctx, "ga")
    key = pooled_key()
    actor_id = attacker.url("/users/gts")
    key_id = f"{actor_id}/main-key"
    attacker.serve(
        "/users/gts",
        {
            "@context": [AS, "https://w3id.org/security/v1"],
            "id": actor_id,
            "type": "Person",
            "inbox": f"{actor_id}/inbox",
            "publicKey": {"id": key_id, "owner": actor_id, "publicKeyPem": public_pem(key)},
        },
    )
    served_pem = public_pem(key) if pem_kind == "same" else public_pem(pooled_key())
    attacker.serve(
        "/users/gts/main-key",
        {
            "@context": [AS, "https://w3id.org/security/v1"],
            "id": key_id,
            "type": "Key",
            "owner": actor_id,
            "publicKeyPem": served_pem,
        },
    )
    before = await snapshot(ctx)
    answer = await signed_post(
        ctx.urls.inbox("ga"), follow(actor_id, ctx.urls.actor("ga")), key_id=key_id, private_key=key
    )
    if pem_kind == "same":
        assert answer.status_code == 202
        assert await count(ctx, Follower) == 1
    else:
        assert answer.status_code == 401
        assert "disagree" in answer.json()["error"]
        assert await snapshot(ctx) == before


async def test_actor_served_as_html_is_not_an_actor(
    ctx: Context, attacker: Attacker, server: ServerThread
) -> None:
    await approved_assembly(ctx, "ga")
    before = await snapshot(ctx)
    keyed, document = actor_document(attacker, "htmlactor")
    attacker.serve("/users/htmlactor", document, content_type="text/html; charset=utf-8")
    answer = await signed_post(
        ctx.urls.inbox("ga"),
        follow(keyed.id, ctx.urls.actor("ga")),
        key_id=keyed.key_id,
        private_key=keyed.private_key,
    )
    assert answer.status_code == 401
    assert await snapshot(ctx) == before
