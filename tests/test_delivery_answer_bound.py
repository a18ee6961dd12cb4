"""A delivery's answer is read only up to a bound: an inbox cannot make us hold a huge body."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from server.activitypub.client import MAX_ANSWER_BYTES, FederationClient
from tests.support.servers import ServerThread


class NoAuth(httpx.Auth):
    pass


async def test_huge_error_answer_is_cut_short() -> None:

    async def inbox(request: Request) -> StreamingResponse:
        await request.body()

        async def endless() -> AsyncIterator[bytes]:
            for _ in range(200):  # 200 MiB if anyone read it all
                yield b"x" * (1 << 20)

        return StreamingResponse(endless(), status_code=500, headers={"Retry-After": "30"})

    client = FederationClient(
        user_agent="test", allow_private=True, timeout=5, max_bytes=1000, delivery_timeout=5
    )
    try:
        with ServerThread(Starlette(routes=[Route("/inbox", inbox, methods=["POST"])])) as srv:
            response = await client.post(f"{srv.base_url}/inbox", b"{}", auth=NoAuth())
    finally:
        await client.aclose()
    assert response.status_code == 500
    assert response.headers["retry-after"] == "30"
    assert 0 < len(response.content) <= MAX_ANSWER_BYTES
