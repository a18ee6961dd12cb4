"""Many inbox servers at once for delivery tests: live, hanging and refusing hosts, each on a
loopback port of its own, all served by one event loop in a background thread.

- a **live** host answers every POST (HTTP/1.1, keep-alive) with 202 after ``delay`` seconds,
  records what it received, and the most requests it ever had in flight at once;
- a **hanging** host accepts the connection and never reads or answers;
- a **refusing** host is a port nothing listens on (connection refused).

Real sockets and real HTTP on 127.0.0.1, so the worker's client, timeouts and caps are what
is tested; a minimal server keeps 100 of them cheap where 100 uvicorn threads would not be.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import free_port


@dataclass
class Received:
    path: str
    body: bytes
    at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Host:
    kind: str  # "live", "hanging", "refusing"
    port: int
    delay: float = 0.0
    status: int = 202
    answer: bytes = b""
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    server: asyncio.base_events.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inbox(self, n: int = 0) -> str:
        return f"{self.base_url}/users/u{n}/inbox"


class Sinks:
    """Start with ``with Sinks() as sinks:``; add hosts with ``live()``, ``hanging()``,
    ``refusing()`` (each returns a :class:`Host`)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.hosts: list[Host] = []
        self._hung: list[asyncio.StreamWriter] = []
        self._open: list[asyncio.StreamWriter] = []

    def __enter__(self) -> Sinks:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _close(self) -> None:
        for host in self.hosts:
            if host.server is not None:
                host.server.close()
        for writer in self._hung + self._open:
            writer.close()
        # Closed connections end their handlers (end of stream); a task cancelled instead
        # makes asyncio log an error from the stream's own callback.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        await asyncio.sleep(0)  # let the closed transports go

    def live(
        self, *, delay: float = 0.0, status: int = 202, answer: bytes = b"", port: int = 0
    ) -> Host:
        host = Host("live", port, delay=delay, status=status, answer=answer)
        self._call(self._listen(host, self._serve))
        self.hosts.append(host)
        return host

    def hanging(self) -> Host:
        host = Host("hanging", 0)
        self._call(self._listen(host, self._hang))
        self.hosts.append(host)
        return host

    def refusing(self) -> Host:
        host = Host("refusing", free_port())
        self.hosts.append(host)
        return host

    def revive(self, host: Host, *, delay: float = 0.0) -> None:
        """A refusing or hanging host comes back, on the same port, as a live one."""
        if host.server is not None:
            self._call(self._stop(host))
        host.kind, host.delay, host.status = "live", delay, 202
        self._call(self._listen(host, self._serve))

    async def _stop(self, host: Host) -> None:
        assert host.server is not None
        host.server.close()
        for writer in self._hung:
            writer.close()
        self._hung.clear()
        await host.server.wait_closed()

    async def _listen(self, host: Host, handler: Any) -> None:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await handler(host, reader, writer)

        host.server = await asyncio.start_server(
            connected, "127.0.0.1", host.port, reuse_address=True
        )
        host.port = int(host.server.sockets[0].getsockname()[1])

    async def _hang(
        self, host: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._hung.append(writer)  # held open, never read, never answered

    async def _serve(
        self, host: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._open.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                host.in_flight += 1
                host.most_in_flight = max(host.most_in_flight, host.in_flight)
                try:
                    host.received.append(Received(path, body, time.monotonic()))
                    if host.delay:
                        await asyncio.sleep(host.delay)
                finally:
                    host.in_flight -= 1
                reason = "Accepted" if host.status == 202 else "Error"
                status_line = (
                    f"HTTP/1.1 {host.status} {reason}\r\nContent-Length: {len(host.answer)}"
                )
                writer.write(status_line.encode() + b"\r\n\r\n" + host.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._open.remove(writer)

    def received_objects(self, host: Host) -> Counter[str]:
        """How often each activity's object (its id) reached ``host``."""
        found: Counter[str] = Counter()
        for r in list(host.received):
            obj = r.json.get("object")
            found[str(obj.get("id") if isinstance(obj, dict) else obj)] += 1
        return found
