"""The bare baselines of the inbound benchmark, as uvicorn app factories.

``inbox_app``: verifies the same draft-cavage signature (Digest included) with the one key
every bench actor shares and parses the JSON, nothing else. ``get_app``: answers the actor
document from memory. Run by uvicorn in processes of their own, like ``interocc serve``;
they read what they need from the environment (BENCH_PUBLIC_PEM, BENCH_DOCUMENT).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.activitypub.signatures import Rejected, load_public_key, verify_request
from server.config import Settings

READY = "/ready"


async def _ready(request: Request) -> Response:
    return Response("ready")


def inbox_app() -> Starlette:
    public_key = load_public_key(os.environ["BENCH_PUBLIC_PEM"])
    assert public_key is not None
    window = Settings.__dataclass_fields__["signature_window"].default

    async def inbox(request: Request) -> Response:
        body = await request.body()
        result = verify_request(
            "POST",
            request.url.path,
            request.headers,
            body,
            public_key=public_key,
            now=datetime.now(UTC),
            window=window,
        )
        if isinstance(result, Rejected):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        json.loads(body)
        return JSONResponse({"status": "accepted"}, status_code=202)

    return Starlette(routes=[Route("/inbox", inbox, methods=["POST"]), Route(READY, _ready)])


def get_app() -> Starlette:
    document = json.loads(os.environ["BENCH_DOCUMENT"])

    async def actor(request: Request) -> Response:
        return JSONResponse(document, media_type="application/activity+json")

    return Starlette(routes=[Route("/actors/{handle}", actor), Route(READY, _ready)])
