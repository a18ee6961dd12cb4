"""Tests drive the inbox queue the way they drive the delivery worker: explicitly.

``ProcessInboxNow`` wraps our app under test: when an inbox POST is answered 202, the queue is
drained (claimed and processed exactly as a worker does it) before the answer reaches the
client. A test can then look at the database right after its POST, as it could when the
inbox processed activities inside the request. The answer itself is the one the app gave.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from server.federation import inbox_queue


class ProcessInboxNow:
    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not str(scope["path"]).endswith("/inbox")
        ):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []
        status = 0

        async def hold(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            held.append(message)

        await self.app(scope, receive, hold)
        if status == 202:
            await inbox_queue.drain(self.app.state.ctx)
        for message in held:
            await send(message)
