"""A Mastodon-like ActivityPub peer for end-to-end tests over loopback HTTP.

It serves WebFinger, actor documents and inboxes (verifying HTTP signatures with its
own code in tests/support/httpsig.py) and offers an async API to act like a remote
server: follow/unfollow, post (possibly tampered) activities and do signed fetches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import base58
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.activitypub.context_tables import tables as _context_tables

from . import httpsig, keys, ldsig_spec
from .servers import ServerThread

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
AP_JSON = "application/activity+json"
ACTOR_ACCEPT = (
    'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams",'
    " text/html;q=0.1"
)

# RSA-2048 generation costs ~0.1 s; every Peer in the test session shares a small pool of
# fixed test keys (tests/support/keys.py), none of them an assembly's.
_key_counter = itertools.count()


def pooled_key() -> rsa.RSAPrivateKey:
    """The next of the peers' fixed keys, in turn (consecutive calls give different keys)."""
    return keys.peer_private_key(next(_key_counter) % keys.PEER_KEYS)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


# Contexts other servers download when they check a signature (published documents, which
# pyld does not ship): the data-integrity contexts our activities name.
PUBLISHED_CONTEXTS = {
    url: doc for url, doc in _context_tables().items() if "w3id.org/security" in url
}


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=10.0, trust_env=False)


@dataclass
class PeerActor:
    peer: Peer = field(repr=False)
    username: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    # Other identities (Mastodon's account aliases): a Move to this actor names them.
    also_known_as: list[str] = field(default_factory=list)
    # An Ed25519 key for FEP-8b32 proofs, published as a Multikey under assertionMethod.
    ed25519_key: ed25519.Ed25519PrivateKey | None = field(default=None, repr=False)

    # Derived from the peer's address, so actors may be added before Peer.start().
    @property
    def id(self) -> str:
        return f"{self.peer.base_url}/users/{self.username}"

    @property
    def inbox(self) -> str:
        return f"{self.id}/inbox"

    @property
    def shared_inbox(self) -> str:
        return f"{self.peer.base_url}/inbox"

    @property
    def key_id(self) -> str:
        return f"{self.id}#main-key"

    @property
    def public_key_pem(self) -> str:
        return public_pem(self.private_key)

    @property
    def assertion_key_id(self) -> str:
        return f"{self.id}#ed25519-key"

    def with_proof_key(self) -> PeerActor:
        """Give this actor an Ed25519 key, published in its document (FEP-521a)."""
        self.ed25519_key = ed25519.Ed25519PrivateKey.generate()
        return self

    @property
    def handle(self) -> str:
        return f"{self.username}@{self.peer.host}"

    def document(self) -> dict[str, Any]:
        doc = self._document()
        if self.also_known_as:
            doc["alsoKnownAs"] = list(self.also_known_as)
        if self.ed25519_key is not None:
            raw = self.ed25519_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            # Multibase base58btc of the multicodec ed25519-pub prefix and the key (FEP-521a).
            doc["@context"] = [
                *doc["@context"],
                "https://w3id.org/security/multikey/v1",
                {
                    "assertionMethod": {
                        "@id": "https://w3id.org/security#assertionMethod",
                        "@type": "@id",
                        "@container": "@set",
                    }
                },
            ]
            doc["assertionMethod"] = [
                {
                    "id": self.assertion_key_id,
                    "type": "Multikey",
                    "controller": self.id,
                    "publicKeyMultibase": "z" + base58.b58encode(b"\xed\x01" + raw).decode(),
                }
            ]
        return doc

    def _document(self) -> dict[str, Any]:
        return {
            "@context": [AS_CONTEXT, "https://w3id.org/security/v1"],
            "id": self.id,
            "type": "Person",
            "preferredUsername": self.username,
            "name": self.username.title(),
            "url": self.id,
            "inbox": self.inbox,
            "outbox": f"{self.id}/outbox",
            "followers": f"{self.id}/followers",
            "following": f"{self.id}/following",
            "manuallyApprovesFollowers": False,
            "endpoints": {"sharedInbox": self.shared_inbox},
            "publicKey": {"id": self.key_id, "owner": self.id, "publicKeyPem": self.public_key_pem},
        }


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any] | None
    verified: bool
    reason: str
    status: int
    at: float


class Peer:
    def __init__(self, *, name: str = "peer", statuses: list[int] | None = None) -> None:
        self.name = name
        self.statuses: deque[int] = deque(statuses or [])
        self.retry_after: str | None = None
        self.delay: float = 0.0  # seconds each inbox POST waits before it is answered
        self.actors: dict[str, PeerActor] = {}
        self.received: list[Received] = []
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.key_cache: dict[str, tuple[str, str]] = {}  # keyId -> (owner, pem)
        self.follow_inboxes: dict[str, str] = {}  # Follow id -> inbox it was sent to
        # Documents the peer serves at {base}/objects/{name} (its own activities, as an
        # origin serves them); a GET of one is logged in ``gets`` like every other.
        self.objects: dict[str, dict[str, Any]] = {}
        self._http: httpx.AsyncClient | None = None  # lives in the server thread's loop
        self._thread: ServerThread | None = None
        self.app = Starlette(
            routes=[
                Route("/.well-known/webfinger", self._webfinger, methods=["GET"]),
                Route("/users/{username}", self._actor, methods=["GET"]),
                Route("/users/{username}/{collection:str}", self._collection, methods=["GET"]),
                Route("/users/{username}/inbox", self._inbox, methods=["POST"]),
                Route("/objects/{name}", self._object, methods=["GET"]),
                Route("/inbox", self._inbox, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    # ---- lifecycle -------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with _client() as self._http:
            yield
        self._http = None

    def start(self) -> Peer:
        self._thread = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def __enter__(self) -> Peer:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._thread is None:
            raise RuntimeError(f"peer {self.name!r} not started")
        return self._thread.base_url

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def add_actor(self, username: str) -> PeerActor:
        actor = PeerActor(self, username, pooled_key())
        self.actors[username] = actor
        return actor

    # ---- routes ----------------------------------------------------------------------

    def _log_get(self, request: Request) -> None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        self.gets.append((path, dict(request.headers)))

    async def _webfinger(self, request: Request) -> Response:
        self._log_get(request)
        resource = request.query_params.get("resource", "")
        user, _, host = resource.removeprefix("acct:").partition("@")
        actor = self.actors.get(user)
        if not resource.startswith("acct:") or actor is None or host != self.host:
            return Response(status_code=404)
        jrd = {
            "subject": f"acct:{actor.handle}",
            "aliases": [actor.id],
            "links": [{"rel": "self", "type": AP_JSON, "href": actor.id}],
        }
        return JSONResponse(jrd, media_type="application/jrd+json")

    async def _actor(self, request: Request) -> Response:
        self._log_get(request)
        actor = self.actors.get(request.path_params["username"])
        if actor is None:
            return Response(status_code=404)
        return JSONResponse(actor.document(), media_type=AP_JSON)

    async def _object(self, request: Request) -> Response:
        self._log_get(request)
        doc = self.objects.get(request.path_params["name"])
        if doc is None:
            return Response(status_code=404)
        return JSONResponse(doc, media_type=AP_JSON)

    def object_url(self, name: str) -> str:
        return f"{self.base_url}/objects/{name}"

    async def _collection(self, request: Request) -> Response:
        self._log_get(request)
        actor = self.actors.get(request.path_params["username"])
        name = request.path_params["collection"]
        if actor is None or name not in ("outbox", "followers", "following"):
            return Response(status_code=404)
        doc = {
            "@context": AS_CONTEXT,
            "id": f"{actor.id}/{name}",
            "type": "OrderedCollection",
            "totalItems": 0,
            "orderedItems": [],
        }
        return JSONResponse(doc, media_type=AP_JSON)

    async def _inbox(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        try:
            doc = json.loads(body)
            doc = doc if isinstance(doc, dict) else None
        except ValueError:
            doc = None
        target = path + (f"?{request.url.query}" if request.url.query else "")
        username = request.path_params.get("username")
        if username is not None and username not in self.actors:
            ok, reason, status = False, f"no actor {username!r} here", 404
        else:
            ok, reason = await self._verify(request.method, target, request.headers, body, doc)
            status = 401 if not ok else (self.statuses.popleft() if self.statuses else 202)
        rec = Received(path, dict(request.headers), body, doc, ok, reason, status, time.time())
        self.received.append(rec)
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {}
        if status in (429, 503) and self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return Response(status_code=status, headers=headers)

    # ---- inbox signature verification ------------------------------------------------

    async def _verify(
        self, method: str, target: str, headers: Any, body: bytes, doc: dict[str, Any] | None
    ) -> tuple[bool, str]:
        if "signature" not in headers:
            return False, "missing Signature header"
        try:
            key_id = httpsig.parse_signature_header(headers["signature"]).get("keyId", "")
        except ValueError as exc:
            return False, str(exc)
        if not key_id:
            return False, "no keyId"
        was_cached = key_id in self.key_cache
        try:
            owner, pem = await self._key(key_id, refresh=False)
            ok, reason = httpsig.verify(method, target, headers, body, pem)
            if not ok and was_cached:  # the key may have rotated: refetch once
                owner, pem = await self._key(key_id, refresh=True)
                ok, reason = httpsig.verify(method, target, headers, body, pem)
        except Exception as exc:  # any failure to get the key means "not verified"
            return False, f"key fetch failed: {exc}"
        if not ok:
            return False, reason
        actor = (doc or {}).get("actor")
        actor = actor.get("id") if isinstance(actor, dict) else actor
        if actor != owner:
            # A forwarded activity (signed by the forwarder): trusted on a Linked Data
            # signature by its actor, as Mastodon checks, else only if its origin serves the
            # same activity at its id, as Pleroma checks.
            if doc is not None and await self._ld_signed_by(doc, actor):
                return True, f"forwarded by {owner}; Linked Data signature by its actor holds"
            if doc is not None and await self._same_at_origin(doc):
                return True, f"forwarded by {owner}; confirmed at its origin"
            return False, f"activity actor {actor!r} is not the key owner {owner!r}"
        return True, "ok"

    async def _ld_signed_by(self, doc: dict[str, Any], actor: object) -> bool:
        """An RsaSignature2017 signature by a key of ``actor``, checked with the independent
        implementation (tests/support/ldsig_spec.py)."""
        signature = doc.get("signature")
        if not isinstance(signature, dict) or not isinstance(signature.get("creator"), str):
            return False
        try:
            owner, pem = await self._key(signature["creator"], refresh=False)
            key = serialization.load_pem_public_key(pem.encode())
            return owner == actor and ldsig_spec.verify(doc, key, PUBLISHED_CONTEXTS)
        except Exception:  # no key, a context we lack, a malformed signature: not verified
            return False

    async def _same_at_origin(self, doc: dict[str, Any]) -> bool:
        activity_id = doc.get("id")
        if not isinstance(activity_id, str):
            return False
        assert self._http is not None, "peer app runs without lifespan"
        try:
            resp = await self._http.get(activity_id, headers={"Accept": AP_JSON})
            fetched = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return False
        if not isinstance(fetched, dict):
            return False
        return all(fetched.get(k) == doc.get(k) for k in ("id", "type", "actor", "object"))

    async def _key(self, key_id: str, *, refresh: bool) -> tuple[str, str]:
        if refresh or key_id not in self.key_cache:
            self.key_cache[key_id] = await self._fetch_key(key_id)
        return self.key_cache[key_id]

    async def _fetch_key(self, key_id: str) -> tuple[str, str]:
        """GET the keyId URL without fragment; return (owner, publicKeyPem)."""
        url = key_id.partition("#")[0]
        headers = {"Accept": AP_JSON}
        if self.actors:  # sign like Mastodon's authorized fetch, as our first actor
            signer = next(iter(self.actors.values()))
            headers |= httpsig.sign(
                "GET", url, headers, None, key_id=signer.key_id, private_key=signer.private_key
            )
        assert self._http is not None, "peer app runs without lifespan"
        resp = await self._http.get(url, headers=headers)
        resp.raise_for_status()
        doc = resp.json()
        if "publicKey" in doc:
            keys = doc["publicKey"] if isinstance(doc["publicKey"], list) else [doc["publicKey"]]
            key = next((k for k in keys if k.get("id") == key_id), None)
            if key is None:
                raise ValueError(f"no publicKey with id {key_id} in {url}")
            if doc.get("id") != url:
                raise ValueError(f"actor document id {doc.get('id')!r} != {url}")
            return key.get("owner", doc["id"]), key["publicKeyPem"]
        if doc.get("id") != key_id or "publicKeyPem" not in doc:
            raise ValueError(f"{url} is neither an actor with publicKey nor key {key_id}")
        return doc["owner"], doc["publicKeyPem"]

    # ---- test-side API (runs in the test's event loop) -------------------------------

    async def post_activity(
        self,
        actor: PeerActor,
        inbox_url: str,
        activity: dict[str, Any] | bytes,
        *,
        sign: bool = True,
        headers_override: dict[str, str | None] | None = None,
        date: datetime | None = None,
        key_id: str | None = None,
        tamper_body: bytes | None = None,
        sign_url: str | None = None,
    ) -> httpx.Response:
        """Sign and POST. For negative tests: headers_override is applied after signing
        (a None value drops the header), date/key_id change what is signed, tamper_body
        is sent instead of the body that was signed, sign_url is the URL the signature
        claims (default: inbox_url)."""
        body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
        headers: dict[str, str] = {"Content-Type": AP_JSON, "Accept": AP_JSON}
        if sign:
            headers |= httpsig.sign(
                "POST",
                sign_url or inbox_url,
                headers,
                body,
                key_id=key_id or actor.key_id,
                private_key=actor.private_key,
                date=date,
            )
        for name, value in (headers_override or {}).items():
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            if value is not None:
                headers[name] = value
        async with _client() as client:
            return await client.post(
                inbox_url, content=body if tamper_body is None else tamper_body, headers=headers
            )

    async def fetch(
        self, url: str, *, signed_by: PeerActor | None = None, accept: str = AP_JSON
    ) -> httpx.Response:
        headers = {"Accept": accept}
        if signed_by is not None:
            headers |= httpsig.sign(
                "GET",
                url,
                headers,
                None,
                key_id=signed_by.key_id,
                private_key=signed_by.private_key,
            )
        async with _client() as client:
            return await client.get(url, headers=headers)

    async def resolve(self, actor: PeerActor, handle_or_url: str) -> dict[str, Any]:
        """WebFinger (for a handle) then a signed actor fetch, as Mastodon does."""
        url = handle_or_url
        if "://" not in url:
            user, _, host = url.removeprefix("@").partition("@")
            async with _client() as client:
                resp = await client.get(
                    f"http://{host}/.well-known/webfinger",
                    params={"resource": f"acct:{user}@{host}"},
                    headers={"Accept": "application/jrd+json"},
                )
            if resp.status_code != 200:
                raise RuntimeError(f"webfinger {handle_or_url}: {resp.status_code} {resp.text}")
            links = resp.json().get("links", [])
            url = next(
                (
                    link["href"]
                    for link in links
                    if link.get("rel") == "self" and link.get("type") == AP_JSON
                ),
                "",
            )
            if not url:
                raise RuntimeError(f"webfinger {handle_or_url}: no self link in {links}")
        resp = await self.fetch(url, signed_by=actor, accept=ACTOR_ACCEPT)
        if resp.status_code != 200:
            raise RuntimeError(f"actor fetch {url}: {resp.status_code} {resp.text}")
        doc: dict[str, Any] = resp.json()
        if doc.get("id") != url:
            raise RuntimeError(f"actor document id {doc.get('id')!r} != fetched URL {url}")
        return doc

    async def follow(self, actor: PeerActor, handle_or_url: str) -> dict[str, Any]:
        target = await self.resolve(actor, handle_or_url)
        follow = {
            "@context": AS_CONTEXT,
            "id": f"{actor.id}#follows/{uuid.uuid4()}",
            "type": "Follow",
            "actor": actor.id,
            "object": target["id"],
        }
        await self._deliver(actor, target["inbox"], follow)
        self.follow_inboxes[follow["id"]] = target["inbox"]
        return follow

    async def unfollow(self, actor: PeerActor, follow_activity: dict[str, Any]) -> None:
        undo = {
            "@context": AS_CONTEXT,
            "id": f"{follow_activity['id']}/undo",
            "type": "Undo",
            "actor": actor.id,
            "object": {k: v for k, v in follow_activity.items() if k != "@context"},
        }
        await self._deliver(actor, self.follow_inboxes[follow_activity["id"]], undo)

    async def _deliver(self, actor: PeerActor, inbox: str, activity: dict[str, Any]) -> None:
        resp = await self.post_activity(actor, inbox, activity)
        if not resp.is_success:
            raise RuntimeError(
                f"{activity['type']} to {inbox} answered {resp.status_code}: {resp.text}"
            )

    def inbox_activities(self, type: str | None = None) -> list[dict[str, Any]]:
        return [
            r.json
            for r in list(self.received)
            if r.verified and r.json is not None and (type is None or r.json.get("type") == type)
        ]

    async def wait_for(
        self,
        predicate: Callable[[list[Received]], Any],
        timeout: float = 10.0,  # noqa: ASYNC109 - polls a list
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            snapshot = list(self.received)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                summary = [
                    (r.path, (r.json or {}).get("type"), r.status, r.reason) for r in snapshot
                ]
                raise TimeoutError(
                    f"peer {self.name!r}: condition not met in {timeout}s: {summary}"
                )
            await asyncio.sleep(0.02)
