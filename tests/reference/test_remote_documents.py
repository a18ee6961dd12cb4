"""Real documents published by other fediverse servers, run through our parsing.

The documents live outside the repository, under ``remote/<software>/`` of the reference folder
(see ``tests/reference/__init__.py``); each folder's SOURCES.md says where they come from.
Every one must normalise offline; actors must yield their inboxes and keys; notes must keep
their text and lose anything dangerous; activities must keep their actor, object and type.
One database test stores every actor on both engines.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from server.activitypub.actors import ACTOR_TYPES, parse_actor, public_keys_of, store_actor
from server.activitypub.jsonld import as_list, id_of, normalise
from server.activitypub.signatures import load_public_key
from server.content import sanitise_html
from server.context import Context
from server.federation.handlers import NOTE_TYPES
from server.models import RemoteActor, RemoteKey
from server.timeline import content_of
from tests.reference import reference_dir
from tests.support.nonet import forbid_network

FIXTURES = reference_dir() / "remote"
ALL = sorted(FIXTURES.glob("*/*.json"))

# Lemmy keeps its test assets without @context and adds this one when it sends a document
# (FEDERATION_CONTEXT in LemmyNet/lemmy crates/utils/src/lib.rs).
LEMMY_CONTEXT = ["https://join-lemmy.org/context.json", "https://www.w3.org/ns/activitystreams"]
DANGEROUS = ("<script", "alert(1)", "<img", "onerror", "javascript:", "onclick", "<iframe")
DANGEROUS += ("<style",)
ACTIVITY_TYPES = {"Follow", "Undo", "Announce", "Update", "Delete", "Create"}


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if "@context" not in doc and path.parent.name == "lemmy":
        doc = {"@context": LEMMY_CONTEXT, **doc}
    return doc


def _types(doc: dict[str, Any]) -> set[str]:
    return set(as_list(doc.get("type")))


def _local_types(doc: dict[str, Any]) -> set[str]:
    """Type names without namespace: extension types (litepub:ChatMessage) come out as IRIs."""
    return {re.split(r"[#/:]", t)[-1] for t in _types(doc)}


def _select(pred: Any) -> list[Any]:
    chosen = [p for p in ALL if pred(load(p))]
    return [pytest.param(p, id=_name(p)) for p in chosen]


def _note_in(doc: dict[str, Any]) -> dict[str, Any] | None:
    if _types(doc) & NOTE_TYPES:
        return doc
    obj = doc.get("object")
    if _types(doc) & {"Create", "Update"} and isinstance(obj, dict) and _types(obj) & NOTE_TYPES:
        return obj
    return None


ACTORS = _select(lambda d: bool(_types(d) & ACTOR_TYPES))
NOTES = _select(lambda d: _note_in(d) is not None and isinstance(_note_in(d).get("content"), str))  # type: ignore[union-attr]
ACTIVITIES = _select(lambda d: bool(_types(d) & ACTIVITY_TYPES))


def _text(markup: str) -> str:
    """The visible text of some HTML, whitespace collapsed."""
    without_tags = re.sub(r"<[^>]*>", " ", markup)
    return " ".join(html.unescape(without_tags).split())


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


def test_fixtures_are_present_for_each_software() -> None:
    softwares = {p.parent.name for p in ALL}
    assert {
        "mastodon",
        "gotosocial",
        "pleroma",
        "lemmy",
        "friendica",
        "peertube",
        "misskey",
    } <= softwares
    for software in softwares:
        sources = (FIXTURES / software / "SOURCES.md").read_text(encoding="utf-8")
        for path in FIXTURES.glob(f"{software}/*.json"):
            assert f"`{path.name}`" in sources, f"{software}/{path.name} has no source listed"


@pytest.mark.parametrize("path", [pytest.param(p, id=_name(p)) for p in ALL])
def test_normalises_offline(path: Path, no_network: None) -> None:
    raw = load(path)
    doc = normalise(raw)
    assert "@context" not in doc
    assert id_of(doc.get("id")) == id_of(raw.get("id"))
    assert set(as_list(doc.get("type"))) == _types(raw)


@pytest.mark.parametrize("path", ACTORS)
def test_actor_inboxes_and_keys(path: Path) -> None:
    raw = load(path)
    doc = normalise(raw)
    fields = parse_actor(doc)
    assert fields["uri"] == raw["id"]
    assert fields["inbox_uri"] == raw["inbox"]
    endpoints = raw.get("endpoints")
    expected_shared = endpoints.get("sharedInbox") if isinstance(endpoints, dict) else None
    assert fields["shared_inbox_uri"] == expected_shared
    assert fields["type"] in _types(raw)
    if isinstance(raw.get("preferredUsername"), str):
        assert fields["preferred_username"] == raw["preferredUsername"]

    raw_key = raw["publicKey"]
    keys = public_keys_of(doc)
    assert (raw_key["id"], raw_key["owner"], raw_key["publicKeyPem"]) in keys
    for _key_id, owner, pem in keys:
        assert owner == raw["id"]
        assert load_public_key(pem) is not None


def test_gotosocial_key_id_is_a_path_not_a_fragment() -> None:
    doc = normalise(load(FIXTURES / "gotosocial" / "person.json"))
    [(key_id, owner, _pem)] = public_keys_of(doc)
    assert key_id == owner + "/main-key"


def test_lemmy_group_attributed_to_moderators_is_still_a_group() -> None:
    doc = normalise(load(FIXTURES / "lemmy" / "group.json"))
    assert id_of(doc["attributedTo"]) == "https://enterprise.lemmy.ml/c/tenforward/moderators"
    fields = parse_actor(doc)
    assert fields["type"] == "Group"
    assert fields["shared_inbox_uri"] == "https://enterprise.lemmy.ml/inbox"


@pytest.mark.parametrize("path", NOTES)
def test_note_content_survives_and_is_sanitised(path: Path) -> None:
    raw_note = _note_in(load(path))
    assert raw_note is not None
    doc = normalise(load(path))
    note = _note_in(doc)
    assert note is not None, "the note was lost in normalisation"
    assert id_of(note.get("id")) == raw_note["id"]

    stored = content_of(note)  # what the inbox keeps for a reply
    assert _text(stored) == _text(raw_note["content"])

    hostile = (
        raw_note["content"]
        + '<script>alert(1)</script><img src=x onerror="alert(2)">'
        + '<a href="javascript:alert(3)" onclick="alert(4)">link</a>'
        + '<iframe src="https://evil.example/"></iframe><style>p{}</style>'
    )
    cleaned = sanitise_html(hostile)
    lowered = cleaned.lower()
    for needle in DANGEROUS:
        assert needle not in lowered
    assert _text(raw_note["content"]) in _text(cleaned)
    assert "link" in cleaned


@pytest.mark.parametrize("path", NOTES)
def test_extension_fields_do_not_leak_as_short_names(path: Path) -> None:
    doc = normalise(load(path))
    note = _note_in(doc)
    assert note is not None
    # Terms only Misskey, Lemmy, Pleroma or Pixelfed define never reach us as bare short names:
    # they are either dropped or kept under a full IRI nobody reads.
    for key in note:
        assert not key.startswith("_misskey"), key
        assert key not in {"distinguished", "commentsEnabled", "capabilities", "directMessage"}


@pytest.mark.parametrize("path", ACTIVITIES)
def test_activity_actor_object_and_type(path: Path) -> None:
    raw = load(path)
    doc = normalise(raw)
    assert set(as_list(doc["type"])) == _types(raw)
    assert id_of(doc.get("actor")) == id_of(raw.get("actor"))
    assert id_of(doc.get("object")) == id_of(raw.get("object"))
    raw_object = raw.get("object")
    if isinstance(raw_object, dict):
        obj = doc["object"]
        assert isinstance(obj, dict)
        assert _local_types(obj) == _local_types(raw_object)
        if "object" in raw_object:
            assert id_of(obj.get("object")) == id_of(raw_object.get("object"))
        if "actor" in raw_object:
            assert id_of(obj.get("actor")) == id_of(raw_object.get("actor"))
        if "attributedTo" in raw_object:
            assert id_of(obj.get("attributedTo")) == id_of(raw_object.get("attributedTo"))


def test_undo_follow_names_the_follow() -> None:
    for software in ("mastodon", "lemmy"):
        doc = normalise(load(FIXTURES / software / "undo_follow.json"))
        assert doc["type"] == "Undo"
        assert doc["object"]["type"] == "Follow"
        assert id_of(doc["object"]["actor"]) == id_of(doc["actor"])


async def test_store_every_actor(ctx: Context) -> None:
    actors = [load(p.values[0]) for p in ACTORS]
    async with ctx.sessions() as session, session.begin():
        for raw in actors:
            await store_actor(session, ctx, normalise(raw))
    # GoToSocial's two fixtures are the same account before and after it gained a shared
    # inbox: the later store must win, as it would for a refreshed actor.
    latest = {raw["id"]: raw for raw in actors}
    async with ctx.sessions() as session:
        for raw in latest.values():
            stored = (
                await session.scalars(select(RemoteActor).where(RemoteActor.uri == raw["id"]))
            ).one()
            assert stored.inbox_uri == raw["inbox"]
            endpoints = raw.get("endpoints")
            shared = endpoints.get("sharedInbox") if isinstance(endpoints, dict) else None
            assert stored.shared_inbox_uri == shared
            key = (
                await session.scalars(
                    select(RemoteKey).where(RemoteKey.key_id == raw["publicKey"]["id"])
                )
            ).one()
            assert key.owner_uri == raw["id"]
            assert key.public_key_pem == raw["publicKey"]["publicKeyPem"]
        count = len((await session.scalars(select(RemoteActor))).all())
        assert count == len(latest)
