"""The access log: one line per request, and never who made it.

uvicorn's own access log (turned off in ``interocc serve``) prints every client's address
and the query string. Ours keeps what running the server needs (method, path, status,
time taken) and nothing that identifies a person: no address, no query (a search, a
``next=``), no headers.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_PATH = 300


def _printable(path: str) -> str:
    # A path is the requester's text: control characters would forge log lines.
    cleaned = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in path[:MAX_PATH])
    return cleaned + ("…" if len(path) > MAX_PATH else "")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the error middleware answers if the app raises

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info("%s %s %d %.0fms", scope["method"], _printable(scope["path"]), status, elapsed)
