"""Bounded cost before trust: no request can make the server do unbounded work or stall it.

Every posted or fetched document is bounded in depth, number of values and string length
before JSON-LD runs; JSON-LD runs in a worker thread; nothing is fetched for a request whose
Date, Digest, signed Host or signature syntax already fails. Each case asserts the answer and
that nothing was stored, and, where a key could have been fetched, that it was not.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from server.activitypub import bounds, jsonld
from server.activitypub.bounds import TooComplex, check_document
from server.context import Context
from tests.helpers import approved_assembly
from tests.jsonld_cases import CASES
from tests.security.support import (
    AP_JSON,
    AS,
    Attacker,
    actor_document,
    follow,
    signed_post,
    snapshot,
)
from tests.support import httpsig
from tests.support.peer import pooled_key, public_pem
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


# ---- the bounds themselves (pure) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (nested(bounds.MAX_DEPTH + 1), "nested deeper"),
        (deep_list(bounds.MAX_DEPTH + 1), "nested deeper"),
        ({"a": [0] * bounds.MAX_VALUES}, "more than"),
        ({f"k{i}": i for i in range(bounds.MAX_VALUES)}, "more than"),
        ([{"a": 1, "b": 2}] * (bounds.MAX_VALUES // 3), "more than"),
        ({"content": "x" * (bounds.MAX_STRING + 1)}, "string longer"),
        ({"k" * (bounds.MAX_STRING + 1): 1}, "overlong key"),
        ({"tag": [{"name": "y" * (bounds.MAX_STRING + 1)}]}, "string longer"),
    ],
    ids=[
        "deep-object",
        "deep-array",
        "wide-array",
        "wide-object",
        "many-small",
        "long-string",
        "long-key",
        "long-nested-string",
    ],
)
def test_out_of_bounds(document: Any, reason: str) -> None:
    with pytest.raises(TooComplex) as caught:
        check_document(document)
    assert reason in caught.value.reason


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_realistic_case_is_within_bounds(name: str) -> None:
    check_document(CASES[name])


def test_walk_is_iterative() -> None:
    # Far deeper than Python's recursion limit: refused, not a RecursionError.
    with pytest.raises(TooComplex):
        check_document(nested(100_000))


# ---- inbox POST bodies ---------------------------------------------------------------------


def hostile_body(kind: str, actor_id: str, target: str) -> bytes:
    activity = follow(actor_id, target)
    if kind == "huge-array":
        # 900 KB of a single array (under the body size limit), the shape that froze the server.
        activity["tag"] = [0] * 300_000
    elif kind == "deep":
        activity["object"] = nested(200)
    elif kind == "very-deep":
        return (
            json.dumps(activity)[:-1].encode() + b', "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        )
    elif kind == "wide-object":
        activity["extra"] = {f"k{i}": i for i in range(20_000)}
    elif kind == "long-string":
        activity["content"] = "x" * 400_000
    elif kind == "many-tags":
        activity["tag"] = [{"type": "Mention", "href": actor_id}] * 5_000
    return json.dumps(activity).encode()


@pytest.mark.parametrize(
    "kind", ["huge-array", "deep", "very-deep", "wide-object", "long-string", "many-tags"]
)
async def test_inbox_refuses_documents_out_of_bounds_before_any_fetch(
    ctx: Context, server: ServerThread, attacker: Attacker, kind: str
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "mallory")
    before = await snapshot(ctx)
    body = hostile_body(kind, keyed.id, ctx.urls.actor("ga"))
    answer = await signed_post(
        ctx.urls.inbox("ga"), body, key_id=keyed.key_id, private_key=keyed.private_key
    )
    assert answer.status_code == 400
    assert len(answer.json()["error"]) < 100
    assert await snapshot(ctx) == before
    assert attacker.gets() == []  # refused before the key was even looked up


# ---- fetched documents ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["huge-array", "deep", "long-string", "wide-object"])
async def test_fetched_key_document_out_of_bounds_is_refused(
    ctx: Context, server: ServerThread, attacker: Attacker, kind: str
) -> None:
    await approved_assembly(ctx, "ga")
    key = pooled_key()
    actor_id = attacker.url("/users/heavy")
    document: dict[str, Any] = {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": actor_id,
        "type": "Person",
        "inbox": f"{actor_id}/inbox",
        "publicKey": {
            "id": f"{actor_id}#main-key",
            "owner": actor_id,
            "publicKeyPem": public_pem(key),
        },
    }
    if kind == "huge-array":
        document["attachment"] = [0] * 600_000  # 1.8 MB, under the fetch size limit
    elif kind == "deep":
        document["attachment"] = nested(bounds.MAX_DEPTH + 5)
    elif kind == "long-string":
        document["summary"] = "x" * (bounds.MAX_STRING + 1)
    else:
        document["extra"] = {f"k{i}": i for i in range(bounds.MAX_VALUES + 1)}
    attacker.serve("/users/heavy", document)
    before = await snapshot(ctx)
    answer = await signed_post(
        ctx.urls.inbox("ga"),
        follow(actor_id, ctx.urls.actor("ga")),
        key_id=f"{actor_id}#main-key",
        private_key=key,
    )
    assert answer.status_code == 401
    assert "refused" in answer.json()["error"]
    assert await snapshot(ctx) == before


# ---- the server keeps answering --------------------------------------------------------------


async def _home_latency(base_url: str) -> float:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        started = time.monotonic()
        answer = await http.get(base_url + "/", headers={"Accept": "text/html"})
        elapsed = time.monotonic() - started
    assert answer.status_code == 200
    return elapsed


@pytest.mark.parametrize("shape", ["huge-out-of-bounds", "heaviest-within-bounds"])
async def test_home_page_answers_within_a_second_while_a_hostile_key_is_processed(
    ctx: Context, server: ServerThread, attacker: Attacker, shape: str
) -> None:
    await approved_assembly(ctx, "ga")
    key = pooled_key()
    actor_id = attacker.url("/users/freezer")
    document: dict[str, Any] = {
        "@context": [AS, "https://w3id.org/security/v1", {"x": "https://x.example/ns#x"}],
        "id": actor_id,
        "type": "Person",
        "inbox": f"{actor_id}/inbox",
        "publicKey": {
            "id": f"{actor_id}#main-key",
            "owner": actor_id,
            "publicKeyPem": public_pem(key),
        },
    }
    if shape == "huge-out-of-bounds":
        document["x"] = [0] * 600_000
    else:
        # As many values as the bounds allow, all of them work for JSON-LD.
        document["x"] = [{"x": i} for i in range(bounds.MAX_VALUES // 3 - 50)]
    # Served slowly, so that the request is surely in progress while we measure.
    attacker.serve("/users/freezer", document, trickle=0.05)
    hostile = asyncio.create_task(
        signed_post(
            ctx.urls.inbox("ga"),
            follow(actor_id, ctx.urls.actor("ga")),
            key_id=f"{actor_id}#main-key",
            private_key=key,
        )
    )
    deadline = time.monotonic() + 10
    while not attacker.gets("/users/freezer") and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert attacker.gets("/users/freezer"), "the hostile key was never requested"
    latencies = []
    while not hostile.done():
        latencies.append(await _home_latency(server.base_url))
        await asyncio.sleep(0.05)
    answer = await hostile
    assert latencies, "the hostile request finished before anything was measured"
    assert max(latencies) < 1.0, latencies
    if shape == "huge-out-of-bounds":
        assert answer.status_code == 401
    else:
        assert answer.status_code in (202, 401)


def test_normalise_is_thread_safe_without_a_global_lock() -> None:
    """Many threads normalising at once give the same answers as one thread alone."""
    names = sorted(CASES)
    expected = {}
    for name in names:
        try:
            expected[name] = jsonld.normalise(copy.deepcopy(CASES[name]))
        except jsonld.JsonLdError as exc:
            expected[name] = {"error": str(exc)}
    failures: list[str] = []

    def work(offset: int) -> None:
        for i in range(len(names) * 3):
            name = names[(i + offset) % len(names)]
            try:
                got = jsonld.normalise(copy.deepcopy(CASES[name]))
            except jsonld.JsonLdError as exc:
                got = {"error": str(exc)}
            if got != expected[name]:
                failures.append(name)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


async def test_normalise_off_loop_runs_in_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    original = jsonld.normalise

    def recording(doc: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.get_ident())
        return original(doc)

    monkeypatch.setattr(jsonld, "normalise", recording)
    doc = await jsonld.normalise_off_loop({"@context": AS, "type": "Note", "content": "x"})
    assert doc == {"type": "Note", "content": "x"}
    assert seen and seen[0] != threading.get_ident()


# ---- nothing is fetched for a request that fails cheap checks ---------------------------------


@pytest.mark.parametrize(
    "flaw",
    [
        "date-13h-old",
        "date-2h-ahead",
        "digest-mismatch",
        "no-digest",
        "malformed-signature",
        "signed-for-another-host",
        "no-date-covered",
    ],
)
async def test_no_key_fetch_for_a_request_that_fails_cheap_checks(
    ctx: Context, server: ServerThread, attacker: Attacker, flaw: str
) -> None:
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "early")
    inbox = ctx.urls.inbox("ga")
    body = json.dumps(follow(keyed.id, ctx.urls.actor("ga"))).encode()
    headers = {"Content-Type": AP_JSON}
    date = None
    if flaw == "date-13h-old":
        date = datetime.now(UTC) - timedelta(hours=13)
    elif flaw == "date-2h-ahead":
        date = datetime.now(UTC) + timedelta(hours=2)
    sign_url = (
        inbox.replace("127.0.0.1", "victim.example") if flaw == "signed-for-another-host" else inbox
    )
    signed = httpsig.sign(
        "POST",
        sign_url,
        headers,
        body,
        key_id=keyed.key_id,
        private_key=keyed.private_key,
        date=date,
    )
    headers |= signed
    if flaw == "signed-for-another-host":
        headers["Host"] = "victim.example" + inbox.split("127.0.0.1", 1)[1].split("/", 1)[0]
    if flaw == "digest-mismatch":
        headers["Digest"] = httpsig.digest(b"something else")
    elif flaw == "no-digest":
        headers.pop("Digest")
    elif flaw == "malformed-signature":
        headers["Signature"] = 'keyId="' + keyed.key_id + '",signature=="=='
    elif flaw == "no-date-covered":
        headers["Signature"] = headers["Signature"].replace(" date", "")
    before = await snapshot(ctx)
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        answer = await http.post(inbox, content=body, headers=headers)
    assert answer.status_code in (400, 401), answer.text
    assert await snapshot(ctx) == before
    assert attacker.gets() == []


@pytest.mark.parametrize("where", ["activity-id", "object", "note-id", "in-reply-to"])
async def test_overlong_uris_are_refused_not_a_server_error(
    ctx: Context, server: ServerThread, attacker: Attacker, where: str
) -> None:
    """Our URI columns hold 2,048 characters; PostgreSQL would refuse a longer insert."""
    await approved_assembly(ctx, "ga")
    keyed, _doc = actor_document(attacker, "longwinded")
    long_path = "/" + "a" * 3000
    note = keyed.id + (long_path if where == "note-id" else "/notes/1")
    activity: dict[str, Any] = {
        "@context": AS,
        "id": keyed.id + (long_path if where == "activity-id" else "/activities/1"),
        "type": "Create",
        "actor": keyed.id,
        "to": [f"{AS}#Public"],
        "object": {
            "id": note,
            "type": "Note",
            "attributedTo": keyed.id,
            "inReplyTo": ctx.urls.actor("ga") + (long_path if where == "in-reply-to" else ""),
            "to": [f"{AS}#Public"],
            "content": "hi",
        },
    }
    if where == "object":
        activity["object"] = keyed.id + long_path
    before = await snapshot(ctx)
    answer = await signed_post(
        ctx.urls.shared_inbox(), activity, key_id=keyed.key_id, private_key=keyed.private_key
    )
    assert answer.status_code == 400
    assert "longer than 2048" in answer.json()["error"]
    after = await snapshot(ctx)
    assert {k: v for k, v in after.items() if k not in ("RemoteActor", "RemoteKey")} == {
        k: v for k, v in before.items() if k not in ("RemoteActor", "RemoteKey")
    }
