"""The load generator of the inbound benchmark: raw HTTP/1.1 over keep-alive connections, in a
process of its own.

An httpx client in the server's own process measures the client more than the server (a few
hundred requests a second). Here every request is serialised before the clock starts, each
connection writes one request and reads its answer (status line, Content-Length, body), and
the process does nothing else, so what is measured is the server's rate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from collections import Counter
from urllib.parse import urlsplit


def raw_request(method: str, url: str, headers: dict[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 request as bytes (keep-alive, with Host and Content-Length)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "host"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _one_connection(host: str, port: int, requests: list[bytes], seen: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            seen[int(head[9:12])] += 1
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
    finally:
        writer.close()


async def _drive(host: str, port: int, requests: list[bytes], connections: int) -> tuple:
    shares = [requests[i::connections] for i in range(connections)]
    seen: Counter[int] = Counter()
    start = time.perf_counter()
    await asyncio.gather(*(_one_connection(host, port, share, seen) for share in shares))
    return time.perf_counter() - start, dict(seen)


def _run(host: str, port: int, requests: list[bytes], connections: int) -> tuple:
    try:
        import uvloop

        return uvloop.run(_drive(host, port, requests, connections))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(_drive(host, port, requests, connections))


async def drive(url: str, requests: list[bytes], connections: int) -> tuple[float, dict[int, int]]:
    """Seconds to get every answer, and the answers' status codes, from a fresh process."""
    parts = urlsplit(url)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(_run, parts.hostname, parts.port, requests, connections)
        seconds, seen = await asyncio.wrap_future(future)
    return seconds, seen
