"""GET /ns/interocc/v1: our interocc JSON-LD context (server/activitypub/contexts/).

Our documents that carry interocc terms name this URL in their ``@context``; software doing
full JSON-LD processing (Fedify, for one) fetches it. InterOcc itself never does: every
instance has the same file bundled.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.activitypub.jsonld import INTEROCC_CONTEXT_FILE
from server.ratification import CONTEXT_PATH

_BODY = INTEROCC_CONTEXT_FILE.read_bytes()


async def interocc_context(request: Request) -> Response:
    return Response(
        _BODY,
        media_type="application/ld+json",
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=86400"},
    )


def context_url(base: str) -> str:
    return base.rstrip("/") + CONTEXT_PATH


routes = [Route(CONTEXT_PATH, interocc_context)]
