"""What the hostile inbox cases share: an attacker's server, a snapshot of every table, and
signed POSTs built by hand.

``Attacker`` is a real loopback HTTP server (uvicorn in a thread) that serves whatever a test
puts at a path — any body, any media type, as slowly as asked — and records every request it
gets, so a test can assert that we fetched nothing (or exactly one thing) from it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server.context import Context
from server.models import (
    Activity,
    Delivery,
    Follower,
    InboxActivity,
    Letter,
    RemoteActor,
    RemoteKey,
    RemotePost,
    Reply,
    Report,
    Share,
    TimelineEntry,
)
from tests.support import httpsig
from tests.support.peer import pooled_key, public_pem
from tests.support.servers import ServerThread

AP_JSON = "application/activity+json"
AS = "https://www.w3.org/ns/activitystreams"
TABLES = (
    InboxActivity,
    Follower,
    Activity,
    Delivery,
    RemoteActor,
    RemoteKey,
    Reply,
    Letter,
    Share,
    RemotePost,
    TimelineEntry,
    Report,
)


async def snapshot(ctx: Context) -> dict[str, int]:
    """Row counts of every table an inbox POST could write to."""
    counts: dict[str, int] = {}
    async with ctx.sessions() as session:
        for model in TABLES:
            counts[model.__name__] = int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
    return counts


@dataclass
class Served:
    body: bytes
    content_type: str = AP_JSON
    status: int = 200
    delay: float = 0.0  # seconds before the answer starts
    trickle: float = 0.0  # seconds between 64 KiB chunks of the body


@dataclass
class Attacker:
    """A loopback server under the attacker's control."""

    documents: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _thread: ServerThread | None = None

    def __post_init__(self) -> None:
        self.app = Starlette(
            routes=[Route("/{path:path}", self._serve, methods=["GET", "POST"])],
        )

    async def _serve(self, request: Request) -> Response:
        path = request.url.path
        self.requests.append((request.method, path, dict(request.headers)))
        served = self.documents.get(path)
        if served is None:
            return Response(status_code=404)
        if served.delay:
            await asyncio.sleep(served.delay)
        if not served.trickle:
            return Response(served.body, status_code=served.status, media_type=served.content_type)

        async def chunks() -> Any:
            for start in range(0, len(served.body), 65536):
                yield served.body[start : start + 65536]
                await asyncio.sleep(served.trickle)

        return StreamingResponse(
            chunks(), status_code=served.status, media_type=served.content_type
        )

    def start(self) -> Attacker:
        self._thread = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    @property
    def base_url(self) -> str:
        assert self._thread is not None
        return self._thread.base_url

    def url(self, path: str) -> str:
        return self.base_url + path

    def serve(self, path: str, document: Any, **kw: Any) -> str:
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.documents[path] = Served(body, **kw)
        return self.url(path)

    def gets(self, path: str | None = None) -> list[str]:
        return [p for m, p, _h in self.requests if m == "GET" and (path is None or p == path)]


def attacker_server() -> Iterator[Attacker]:
    attacker = Attacker().start()
    try:
        yield attacker
    finally:
        attacker.stop()


@dataclass
class Keyed:
    """An actor the attacker controls: its id, key id and private key."""

    id: str
    key_id: str
    private_key: rsa.RSAPrivateKey

    @property
    def public_key_pem(self) -> str:
        return public_pem(self.private_key)


def actor_document(
    attacker: Attacker, name: str, *, key: rsa.RSAPrivateKey | None = None, **extra: Any
) -> tuple[Keyed, dict[str, Any]]:
    """Serve a well-formed Person on the attacker's host; returns it and its document."""
    key = key or pooled_key()
    actor_id = attacker.url(f"/users/{name}")
    keyed = Keyed(actor_id, f"{actor_id}#main-key", key)
    doc: dict[str, Any] = {
        "@context": [AS, "https://w3id.org/security/v1"],
        "id": actor_id,
        "type": "Person",
        "preferredUsername": name,
        "inbox": f"{actor_id}/inbox",
        "outbox": f"{actor_id}/outbox",
        "followers": f"{actor_id}/followers",
        "endpoints": {"sharedInbox": attacker.url("/inbox")},
        "publicKey": {"id": keyed.key_id, "owner": actor_id, "publicKeyPem": keyed.public_key_pem},
    }
    doc.update(extra)
    attacker.serve(f"/users/{name}", doc)
    return keyed, doc


async def signed_post(
    url: str,
    activity: dict[str, Any] | bytes,
    *,
    key_id: str,
    private_key: rsa.RSAPrivateKey,
    date: datetime | None = None,
    sign_url: str | None = None,
    content_type: str = AP_JSON,
    extra_headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
    headers = {"Content-Type": content_type, "Accept": AP_JSON}
    headers |= httpsig.sign(
        "POST", sign_url or url, headers, body, key_id=key_id, private_key=private_key, date=date
    )
    headers |= extra_headers or {}
    async with httpx.AsyncClient(timeout=20.0, trust_env=False) as client:
        return await client.post(url, content=body, headers=headers)


def follow(actor_id: str, target: str, n: int = 1) -> dict[str, Any]:
    return {
        "@context": AS,
        "id": f"{actor_id}#follows/{n}",
        "type": "Follow",
        "actor": actor_id,
        "object": target,
    }
