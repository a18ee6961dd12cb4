"""An independent fediverse peer built on bovine, started and driven by InterOcc's interop tests.

Usage: ``.venv/bin/python server.py --port PORT`` (0 picks a free port). Prints exactly one
line, ``READY http://127.0.0.1:<port>``, on stdout once it listens; logs go to stderr. See
README.md for the control API.

Everything that touches the protocol is bovine's own code: the RSA key pair
(``generate_rsa_public_private_key``), the actor document (``bovine.activitystreams.Actor``),
WebFinger answers and lookups (``webfinger_response_json``, ``lookup_uri_with_webfinger``),
activities and notes (``ActivityFactory``/``ObjectFactory``), signed GETs and POSTs
(``BovineActor``/``SignedHttpClient``, draft-cavage ``rsa-sha256``) and the verification of
incoming signatures (``SignatureChecker`` via ``build_validate_http_signature_raw``, with
``CryptographicIdentifier.from_public_key`` for the fetched key). This file only wires them
to an aiohttp server and keeps logs.

It runs in its own virtualenv (requirements.txt), never in InterOcc's: nothing here may
import from the project.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import aiohttp
from aiohttp import web
from bovine import BovineActor
from bovine.activitystreams import Actor, OrderedCollection
from bovine.activitystreams.activity_factory import ActivityFactory
from bovine.activitystreams.object_factory import ObjectFactory
from bovine.activitystreams.utils import id_for_object, uris_for_public
from bovine.clients import lookup_uri_with_webfinger
from bovine.clients.signed_http import (
    SignedHttpClient,
    legacy_digest_method,
    legacy_digest_method_uppercase,
)
from bovine.crypto import build_validate_http_signature_raw, generate_rsa_public_private_key
from bovine.crypto.helper import content_digest_sha256_rfc_9530
from bovine.crypto.signature import Signature
from bovine.crypto.types import CryptographicIdentifier
from bovine.types import Visibility
from bovine.utils import now_isoformat, parse_fediverse_handle, webfinger_response_json

T0 = time.monotonic()
AS2 = "application/activity+json"
Json = dict[str, Any]

# How /_control/send computes the body digest: bovine's three digest methods, plus a lying
# one (a valid signature over a digest of other bytes) to prove the receiver checks it.
DIGESTS: dict[str, Callable[[bytes], tuple[str, str]]] = {
    "digest": legacy_digest_method,  # Digest: sha-256=…
    "digest-uppercase": legacy_digest_method_uppercase,  # Digest: SHA-256=…
    "content-digest": content_digest_sha256_rfc_9530,  # Content-Digest: sha-256=:…:
    "wrong": lambda body: legacy_digest_method(body + b" "),
}


class HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class RingHandler(logging.Handler):
    """Keeps the last log records (debug included) for ``GET /_control/logs``."""

    def __init__(self, peer: Peer) -> None:
        super().__init__(logging.DEBUG)
        self.peer = peer

    def emit(self, record: logging.LogRecord) -> None:
        self.peer.logs.append(
            {
                "seq": self.peer.next_seq(),
                "time": datetime.now(UTC).isoformat(),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


def signature_info(headers: Any) -> Json:
    """What a request's signature headers claim (not whether they hold)."""
    if "signature-input" in headers:
        return {"scheme": "rfc9421", "keyId": None, "signedHeaders": None, "algorithm": None}
    if "signature" not in headers:
        return {"scheme": "none", "keyId": None, "signedHeaders": None, "algorithm": None}
    try:
        parsed = Signature.from_signature_header(headers["signature"])
    except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a log
        return {"scheme": "draft-cavage", "keyId": None, "error": repr(exc)}
    return {
        "scheme": "draft-cavage",
        "keyId": parsed.key_id,
        "signedHeaders": parsed.fields,
        "algorithm": parsed.algorithm,
    }


class Peer:
    def __init__(self, base: str, username: str) -> None:
        self.base = base
        self.username = username
        self.actor_id = f"{base}/users/{username}"
        self.key_id = f"{self.actor_id}#main-key"
        self.inbox_url = f"{self.actor_id}/inbox"
        self.public_pem, self.private_pem = generate_rsa_public_private_key()
        self.actor = Actor(
            id=self.actor_id,
            type="Person",
            preferred_username=username,
            name=f"{username} (bovine peer)",
            summary="A bovine-based peer of InterOcc's interop tests",
            inbox=self.inbox_url,
            outbox=f"{self.actor_id}/outbox",
            followers=f"{self.actor_id}/followers",
            following=f"{self.actor_id}/following",
            url=self.actor_id,
            public_key=self.public_pem,
            public_key_name="main-key",
        ).build(visibility=Visibility.OWNER)
        self.activities_factory = ActivityFactory(self.actor, id_generator=self.new_id)
        self.seq = 0
        self.activities: list[Json] = []
        self.incoming: list[Json] = []
        self.outgoing: list[Json] = []
        self.errors: list[Json] = []
        self.logs: collections.deque[Json] = collections.deque(maxlen=2000)
        self.objects: dict[str, Json] = {}  # everything alice made, served at its id
        self.deleted: set[str] = set()
        self.following: dict[str, Json] = {}  # followed actor id -> {followId, status, …}
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.bovine: BovineActor | None = None
        self.verify_signature: Callable[..., Awaitable[str | None]] = (
            build_validate_http_signature_raw(self.retrieve_key)
        )

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def new_id(self) -> str:
        """The id of something alice makes; it is served at that URL (``stored_object``)."""
        return f"{self.actor_id}/objects/{uuid.uuid4()}"

    async def start(self) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_request_end)
        trace.on_request_exception.append(self._on_request_exception)
        self.session = aiohttp.ClientSession(
            trace_configs=[trace], timeout=aiohttp.ClientTimeout(total=20)
        )
        self.bovine = BovineActor(
            actor_id=self.actor_id, public_key_url=self.key_id, secret=self.private_pem
        )
        await self.bovine.init(session=self.session)
        self.objects_factory = ObjectFactory(
            actor_information=self.actor,
            actor=self.bovine,
            id_generator=self.new_id,
        )

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- the outgoing log (every request this peer makes) ----------------------------------
    def _outgoing_entry(self, method: str, url: Any, headers: Any) -> Json:
        info = signature_info(headers)
        return {
            "seq": self.next_seq(),
            "time": datetime.now(UTC).isoformat(),
            "method": method,
            "url": str(url),
            **info,
            "digest": headers.get("digest"),
            "contentDigest": headers.get("content-digest"),
            "accept": headers.get("accept"),
            "userAgent": headers.get("user-agent"),
        }

    async def _on_request_end(self, _session: Any, _ctx: Any, params: Any) -> None:
        entry = self._outgoing_entry(params.method, params.url, params.headers)
        entry["status"] = params.response.status
        self.outgoing.append(entry)

    async def _on_request_exception(self, _session: Any, _ctx: Any, params: Any) -> None:
        entry = self._outgoing_entry(params.method, params.url, params.headers)
        entry["status"] = None
        entry["error"] = repr(params.exception)
        self.outgoing.append(entry)

    # -- keys and remote documents -----------------------------------------------------------
    async def fetch(self, url: str) -> Json:
        """A signed GET (bovine's ``BovineActor.get``); HttpError 502 when it fails."""
        assert self.bovine is not None
        try:
            document = await self.bovine.get(url)
        except aiohttp.ClientError as exc:
            raise HttpError(502, f"GET {url} failed: {exc!r}") from exc
        if not isinstance(document, dict):
            raise HttpError(502, f"GET {url} gave no JSON object")
        return document

    async def retrieve_key(self, key_id: str) -> CryptographicIdentifier | None:
        """bovine's key retriever contract: key id -> CryptographicIdentifier (or None).

        No cache: every test runs the other server on a new port (with new keys), and a
        free port may come round again.
        """
        try:
            document = await self.fetch(key_id)
        except HttpError as exc:
            logging.getLogger("peer.keys").warning("%s", exc)
            return None
        keys = document.get("publicKey", document)
        for key in keys if isinstance(keys, list) else [keys]:
            if isinstance(key, dict) and key.get("id") == key_id:
                return CryptographicIdentifier.from_public_key(key)
        logging.getLogger("peer.keys").warning("no key %s in %s", key_id, document.get("id"))
        return None

    async def verify(self, request: web.Request, body: bytes | None) -> Json:
        """bovine's SignatureChecker on this request: who signed it, and the log lines it left."""

        async def read_body() -> bytes:
            return body or b""

        first_log = self.seq
        try:
            owner = await self.verify_signature(
                request.method, str(request.url), request.headers, read_body
            )
        except Exception as exc:  # noqa: BLE001 - bovine raises for some malformed headers
            logging.getLogger("peer.verify").warning("verification raised %r", exc)
            owner = None
        notes = [
            f"{r['logger']}: {r['message']}"
            for r in self.logs
            if r["seq"] > first_log and r["level"] in {"INFO", "WARNING", "ERROR"}
        ]
        return {"keyOwner": owner, "verifyLog": notes[-10:]}

    async def resolve_actor(self, target: str) -> Json:
        """An actor from its URL or a handle (WebFinger through bovine's client)."""
        if target.startswith(("http://", "https://")):
            actor_id: str | None = target
        else:
            user, domain = parse_fediverse_handle(target.removeprefix("acct:"))
            if domain is None:
                raise HttpError(400, f"not a handle: {target}")
            assert self.session is not None
            # bovine's WebFinger client goes to https://<domain> unless the domain comes
            # with its scheme; this peer only ever talks to loopback servers over http.
            actor_id, _ = await lookup_uri_with_webfinger(
                self.session, f"acct:{user}@{domain}", domain=f"http://{domain}"
            )
            if actor_id is None:
                raise HttpError(502, f"WebFinger found no actor for {target}")
        actor = await self.fetch(actor_id)
        if not isinstance(actor.get("inbox"), str):
            raise HttpError(502, f"{actor_id} has no inbox")
        return actor

    async def deliver(self, inboxes: list[str], activity: Json) -> Json:
        """POST the activity, signed by bovine, to each inbox; report every answer."""
        assert self.bovine is not None and self.bovine.client is not None
        body = json.dumps(activity)
        requests = []
        for inbox in dict.fromkeys(inboxes):
            try:
                response = await self.bovine.client.post(inbox, body)
                text = await response.text()
            except aiohttp.ClientError as exc:
                requests.append({"url": inbox, "status": None, "error": repr(exc)})
                continue
            requests.append(
                {
                    "url": inbox,
                    "status": response.status,
                    "responseBody": text[:1000] if response.status >= 400 else None,
                }
            )
        delivered = bool(requests) and all(
            r["status"] is not None and 200 <= r["status"] < 300 for r in requests
        )
        return {"delivered": delivered, "requests": requests}

    async def inboxes_of(self, recipients: set[str]) -> list[str]:
        """The inboxes of the actors among the recipients (collections and Public skipped)."""
        inboxes = []
        for uri in sorted(recipients - set(uris_for_public)):
            if uri.startswith(self.actor_id):
                continue
            try:
                document = await self.fetch(uri)
            except HttpError:
                continue  # e.g. a followers collection that is not public
            if isinstance(document.get("inbox"), str):
                inboxes.append(document["inbox"])
        return inboxes

    def remember(self, *objects: Json) -> None:
        for obj in objects:
            self.objects[obj["id"]] = obj

    def own_note(self, note_id: Any) -> Json:
        note = self.objects.get(str(note_id))
        if note is None or note.get("type") != "Note" or note_id in self.deleted:
            raise HttpError(404, f"unknown note {note_id}")
        return note


def recipients(obj: Json) -> set[str]:
    found: set[str] = set()
    for key in ("to", "cc"):
        value = obj.get(key, [])
        found |= {value} if isinstance(value, str) else set(value)
    return found


# -- control API ------------------------------------------------------------------------------


async def control_health(peer: Peer, _body: Json, _query: Any) -> Json:
    return {
        "ok": True,
        "baseUrl": peer.base,
        "actor": peer.actor_id,
        "inbox": peer.inbox_url,
        "bovine": version("bovine"),
        "aiohttp": version("aiohttp"),
        "python": sys.version.split()[0],
        "startupMs": STARTUP_MS,
    }


async def control_inbox(peer: Peer, _body: Json, query: Any) -> Json:
    since = int(query.get("since", 0) or 0)

    def after(entries: list[Json]) -> list[Json]:
        return [e for e in entries if e["seq"] > since]

    return {
        "seq": peer.seq,
        "activities": after(peer.activities),
        "outgoing": after(peer.outgoing),
        "incoming": after(peer.incoming),
        "errors": after(peer.errors),
    }


async def control_state(peer: Peer, _body: Json, _query: Any) -> Json:
    following = [{k: v for k, v in f.items() if k != "follow"} for f in peer.following.values()]
    notes = [k for k, v in peer.objects.items() if v.get("type") == "Note"]
    return {"following": following, "notes": notes, "deleted": sorted(peer.deleted)}


async def control_logs(peer: Peer, _body: Json, _query: Any) -> Json:
    return {"logs": list(peer.logs)}


async def control_reset(peer: Peer, _body: Json, _query: Any) -> Json:
    for entries in (peer.activities, peer.incoming, peer.outgoing, peer.errors):
        entries.clear()
    peer.logs.clear()
    return {"ok": True}


async def control_follow(peer: Peer, body: Json, _query: Any) -> Json:
    target = await peer.resolve_actor(str(body.get("target", "")))
    follow = peer.activities_factory.follow(target).build()
    peer.remember(follow)
    peer.following[target["id"]] = {
        "actor": target["id"],
        "inbox": target["inbox"],
        "followId": follow["id"],
        "status": "pending",
        "follow": follow,
    }
    result = await peer.deliver([target["inbox"]], follow)
    return {"followId": follow["id"], "targetActor": target["id"], "json": follow, **result}


async def control_unfollow(peer: Peer, body: Json, _query: Any) -> Json:
    target = await peer.resolve_actor(str(body.get("target", "")))
    following = peer.following.get(target["id"])
    if following is None:
        raise HttpError(409, f"not following {target['id']}")
    # bovine's Undo names the Follow by its id (it embeds only activities without one).
    undo = peer.activities_factory.undo(following["follow"]).build()
    peer.remember(undo)
    result = await peer.deliver([target["inbox"]], undo)
    del peer.following[target["id"]]
    return {"undoId": undo["id"], "followId": following["followId"], "json": undo, **result}


async def control_reply(peer: Peer, body: Json, _query: Any) -> Json:
    if not isinstance(body.get("inReplyTo"), str) or not isinstance(body.get("content"), str):
        raise HttpError(400, "inReplyTo and content are required")
    original = await peer.fetch(body["inReplyTo"])
    # Addressed to the author, with a Mention of them (fetched again, signed) and the
    # original's audience in cc: bovine's reply_with_mention, made for Mastodon.
    note = (
        await peer.objects_factory.reply_with_mention(original, content=body["content"])
    ).build()
    create = peer.activities_factory.create(note).build()
    peer.remember(note, create)
    result = await peer.deliver(await peer.inboxes_of(recipients(note)), create)
    return {"noteId": note["id"], "createId": create["id"], "json": create, **result}


async def control_update(peer: Peer, body: Json, _query: Any) -> Json:
    note = peer.own_note(body.get("noteId"))
    if not isinstance(body.get("content"), str):
        raise HttpError(400, "content is required")
    note = {**note, "content": body["content"], "updated": now_isoformat()}
    update = peer.activities_factory.update(note).build()
    peer.remember(note, update)
    result = await peer.deliver(await peer.inboxes_of(recipients(note)), update)
    return {"updateId": update["id"], "noteId": note["id"], "json": update, **result}


async def control_delete(peer: Peer, body: Json, _query: Any) -> Json:
    note = peer.own_note(body.get("noteId"))
    # bovine's Delete names the object by its id; the id then answers 410 with a Tombstone.
    delete = peer.activities_factory.delete(
        note["id"], to=set(note.get("to", [])), cc=set(note.get("cc", []))
    ).build()
    peer.deleted.add(note["id"])
    peer.remember(delete)
    result = await peer.deliver(await peer.inboxes_of(recipients(note)), delete)
    return {"deleteId": delete["id"], "noteId": note["id"], "json": delete, **result}


async def _author_of(peer: Peer, object_id: str) -> Json:
    obj = await peer.fetch(object_id)
    author = id_for_object(obj.get("attributedTo"))
    if not author:
        raise HttpError(502, f"{object_id} has no attributedTo")
    return await peer.resolve_actor(author)


async def control_like(peer: Peer, body: Json, _query: Any) -> Json:
    author = await _author_of(peer, str(body.get("object")))
    like = peer.activities_factory.like(str(body["object"]), to={author["id"]}).build()
    peer.remember(like)
    result = await peer.deliver([author["inbox"]], like)
    return {"likeId": like["id"], "json": like, **result}


async def control_announce(peer: Peer, body: Json, _query: Any) -> Json:
    author = await _author_of(peer, str(body.get("object")))
    announce = (
        peer.activities_factory.announce(str(body["object"]), cc={author["id"]}).as_public().build()
    )
    peer.remember(announce)
    result = await peer.deliver([author["inbox"]], announce)
    return {"announceId": announce["id"], "json": announce, **result}


async def control_send(peer: Peer, body: Json, _query: Any) -> Json:
    """A raw delivery: these exact bytes, signed by bovine with the chosen digest (or not)."""
    if not isinstance(body.get("inbox"), str) or not isinstance(body.get("activity"), dict):
        raise HttpError(400, "inbox and activity are required")
    digest = body.get("digest", "digest")
    if digest != "unsigned" and digest not in DIGESTS:
        raise HttpError(400, f"digest must be one of {sorted(DIGESTS)} or 'unsigned'")
    activity = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": peer.new_id(),
        "actor": peer.actor_id,
        **body["activity"],
    }
    payload = json.dumps(activity)
    assert peer.session is not None
    if digest == "unsigned":
        response = await peer.session.post(
            body["inbox"], data=payload, headers={"content-type": AS2}
        )
    else:
        client = SignedHttpClient(
            peer.session, peer.key_id, peer.private_pem, digest_method=DIGESTS[digest]
        )
        response = await client.post(body["inbox"], payload)
    return {
        "activityId": activity["id"],
        "status": response.status,
        "responseBody": (await response.text())[:2000],
        "digest": digest,
    }


CONTROL: dict[str, Callable[[Peer, Json, Any], Awaitable[Json]]] = {
    "GET health": control_health,
    "GET inbox": control_inbox,
    "GET state": control_state,
    "GET logs": control_logs,
    "POST reset": control_reset,
    "POST follow": control_follow,
    "POST unfollow": control_unfollow,
    "POST reply": control_reply,
    "POST update": control_update,
    "POST delete": control_delete,
    "POST like": control_like,
    "POST announce": control_announce,
    "POST send": control_send,
}


async def handle_control(request: web.Request) -> web.Response:
    peer: Peer = request.app["peer"]
    key = f"{request.method} {request.match_info['action']}"
    handler = CONTROL.get(key)
    if handler is None:
        return web.json_response({"error": f"no control endpoint {key}"}, status=404)
    body: Json = {}
    if request.method == "POST" and request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "invalid JSON body"}, status=400)
    try:
        return web.json_response(await handler(peer, body, request.query))
    except HttpError as exc:
        return web.json_response({"error": str(exc), **exc.extra}, status=exc.status)
    except Exception as exc:
        logging.getLogger("peer.control").exception("control %s failed", key)
        peer.errors.append({"seq": peer.next_seq(), "where": key, "error": repr(exc)})
        return web.json_response({"error": repr(exc)}, status=500)


# -- the federation side ----------------------------------------------------------------------


def as2(document: Json, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(document), status=status, content_type=AS2)


@web.middleware
async def log_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every non-control request goes into ``incoming``; signed GETs are verified too."""
    if request.path.startswith("/_control/"):
        return await handler(request)
    peer: Peer = request.app["peer"]
    entry = {
        "seq": peer.next_seq(),
        "time": datetime.now(UTC).isoformat(),
        "method": request.method,
        "path": request.path_qs,
        "accept": request.headers.get("accept"),
        "userAgent": request.headers.get("user-agent"),
        **signature_info(request.headers),
        "status": None,
        "signatureVerified": None,  # for signed GETs, filled in after the answer
        "keyOwner": None,
    }
    peer.incoming.append(entry)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        entry["status"] = exc.status
        raise
    entry["status"] = response.status
    if request.method == "GET" and entry["scheme"] != "none":
        # Verified after answering: the key fetch goes back to the requester, which may
        # be waiting for this very answer.
        task = asyncio.get_running_loop().create_task(_verify_get(peer, request, entry))
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)
    return response


async def _verify_get(peer: Peer, request: web.Request, entry: Json) -> None:
    result = await peer.verify(request, None)
    entry["keyOwner"] = result["keyOwner"]
    entry["verifyLog"] = result["verifyLog"]
    entry["signatureVerified"] = result["keyOwner"] is not None


async def webfinger(request: web.Request) -> web.Response:
    peer: Peer = request.app["peer"]
    resource = request.query.get("resource", "")
    host = peer.base.split("://", 1)[1]
    if resource not in {f"acct:{peer.username}@{host}", peer.actor_id}:
        return web.json_response({"error": "not found"}, status=404)
    jrd = webfinger_response_json(f"acct:{peer.username}@{host}", peer.actor_id)
    return web.json_response(jrd, content_type="application/jrd+json")


async def actor(request: web.Request) -> web.Response:
    return as2(request.app["peer"].actor)


async def collection(request: web.Request) -> web.Response:
    peer: Peer = request.app["peer"]
    name = request.match_info["name"]
    items = []
    if name == "following":
        items = [f["actor"] for f in peer.following.values() if f["status"] == "accepted"]
    if name == "outbox":
        items = [k for k, v in peer.objects.items() if v.get("type") == "Create"]
    built = OrderedCollection(id=f"{peer.actor_id}/{name}", items=items, count=len(items)).build()
    return as2(built)


async def stored_object(request: web.Request) -> web.Response:
    peer: Peer = request.app["peer"]
    object_id = f"{peer.actor_id}/objects/{request.match_info['id']}"
    if object_id in peer.deleted:
        tombstone = {"@context": "https://www.w3.org/ns/activitystreams", "type": "Tombstone"}
        return as2({**tombstone, "id": object_id}, status=410)
    if object_id not in peer.objects:
        return web.json_response({"error": "not found"}, status=404)
    return as2(peer.objects[object_id])


async def inbox(request: web.Request) -> web.Response:
    """Verify with bovine's checker, record, apply Accept/Reject; 202, or 401 if unverified."""
    peer: Peer = request.app["peer"]
    body = await request.read()
    try:
        activity = json.loads(body)
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(activity, dict):
        return web.json_response({"error": "body is not a JSON object"}, status=400)
    checked = await peer.verify(request, body)
    actor_id = id_for_object(activity.get("actor"))
    owner = checked["keyOwner"]
    entry = {
        "seq": peer.next_seq(),
        "receivedAt": datetime.now(UTC).isoformat(),
        "type": activity.get("type"),
        "id": activity.get("id"),
        "actor": actor_id,
        "object": id_for_object(activity.get("object")),
        "inbox": request.path,
        # bovine's checker returns the key's owner when the signature holds; the owner
        # must also be the activity's actor.
        "verified": owner is not None and owner == actor_id,
        **checked,
        **signature_info(request.headers),
        "digest": request.headers.get("digest"),
        "contentDigest": request.headers.get("content-digest"),
        "contentType": request.headers.get("content-type"),
        "userAgent": request.headers.get("user-agent"),
        "raw": activity,
    }
    peer.activities.append(entry)
    if not entry["verified"]:
        return web.json_response({"error": "signature not verified"}, status=401)
    if activity.get("type") in {"Accept", "Reject"}:
        answered = id_for_object(activity.get("object"))
        for following in peer.following.values():
            if following["followId"] == answered and following["actor"] == actor_id:
                following["status"] = "accepted" if activity["type"] == "Accept" else "rejected"
                following["answerId"] = activity.get("id")
    return web.Response(status=202)


def build_app(peer: Peer) -> web.Application:
    app = web.Application(middlewares=[log_requests])
    app["peer"] = peer
    user = f"/users/{peer.username}"
    app.router.add_get("/.well-known/webfinger", webfinger)
    app.router.add_get(user, actor)
    app.router.add_post(f"{user}/inbox", inbox)
    app.router.add_get(user + "/{name:followers|following|outbox}", collection)
    app.router.add_get(user + "/objects/{id}", stored_object)
    app.router.add_route("*", "/_control/{action}", handle_control)
    return app


STARTUP_MS = 0


async def main() -> None:
    global STARTUP_MS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--username", default="alice")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--exit-with-stdin", action="store_true")
    options = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", options.port))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"

    peer = Peer(base, options.username)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(options.log_level.upper())
    stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    root.addHandler(RingHandler(peer))
    for noisy in ("asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    await peer.start()
    runner = web.AppRunner(build_app(peer), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    STARTUP_MS = round((time.monotonic() - T0) * 1000)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if options.exit_with_stdin:
        # The peer exits when its stdin reaches EOF: a test harness that dies without
        # cleaning up does not leave it running (start it with stdin=PIPE).
        threading.Thread(target=_wait_for_eof, args=(loop, stop), daemon=True).start()

    print(f"READY {base}", flush=True)
    await stop.wait()
    await runner.cleanup()
    await peer.stop()


def _wait_for_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    while sys.stdin.buffer.read(4096):
        pass
    loop.call_soon_threadsafe(stop.set)


if __name__ == "__main__":
    asyncio.run(main())
