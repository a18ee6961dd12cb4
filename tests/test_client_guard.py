"""The one outgoing HTTP client: SSRF guard, redirects, size and time bounds, identity, signing.

Every request here goes to a real uvicorn server on 127.0.0.1 (or nowhere at all). Addresses
outside loopback appear only in URLs the guard must refuse before connecting; a tripwire
under the guard makes sure of that: any attempt to open a connection to a non-loopback
address fails the test instead of sending a packet.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import ipaddress
import json
import socket
import time
import tomllib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import httpcore
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from server.activitypub import client as client_module
from server.activitypub.client import (
    AS2_ACCEPT,
    FederationClient,
    SignatureAuth,
    is_public_address,
)
from server.config import VERSION, Settings
from server.errors import RemoteError, UnsafeAddress
from tests.support import httpsig
from tests.support.peer import pooled_key, public_pem
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

KEY_ID = "https://occupy.example/assemblies/libertyplaza#main-key"
AS2_JSON = "application/activity+json"

# ---- the tiny remote server ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str  # path plus "?query"
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Remote:
    """What one tiny server received; `generation` releases handlers that are still waiting."""

    seen: list[Seen] = field(default_factory=list)
    generation: int = 0

    def paths(self) -> list[str]:
        return [s.target.split("?", 1)[0] for s in self.seen]


@functools.cache
def gzipped(size: int) -> bytes:
    return gzip.compress(b" " * size, compresslevel=9)


def make_app(remote: Remote) -> Starlette:
    async def document(request: Request) -> Response:
        return JSONResponse({"id": str(request.url), "type": "Note"}, media_type=AS2_JSON)

    async def inbox(request: Request) -> Response:
        remote.seen[-1].body = await request.body()
        return Response(status_code=202)

    async def redirect(request: Request) -> Response:
        status = int(request.query_params.get("status", "302"))
        return RedirectResponse(request.query_params["to"], status_code=status)

    async def chain(request: Request) -> Response:
        n = int(request.path_params["n"])
        if n == 0:
            return JSONResponse({"id": str(request.url), "type": "Note"}, media_type=AS2_JSON)
        return RedirectResponse(f"/chain/{n - 1}", status_code=302)  # relative Location

    async def sized(request: Request) -> Response:
        return Response(b"x" * int(request.path_params["n"]), media_type="text/plain")

    async def chunked(request: Request) -> Response:
        n = int(request.path_params["n"])

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            while sent < n:
                piece = min(65_536, n - sent)
                yield b"x" * piece
                sent += piece

        return StreamingResponse(body(), media_type="text/plain")

    async def gzip_body(request: Request) -> Response:
        return Response(
            gzipped(int(request.path_params["n"])),
            media_type=AS2_JSON,
            headers={"Content-Encoding": "gzip"},
        )

    async def gzip_json(request: Request) -> Response:
        doc = json.dumps({"id": str(request.url), "content": "ok " * 1000}).encode()
        return Response(
            gzip.compress(doc), media_type=AS2_JSON, headers={"Content-Encoding": "gzip"}
        )

    async def stall(request: Request) -> Response:
        generation = remote.generation
        deadline = time.monotonic() + 10
        # The flag is bumped from the test's thread, so an asyncio.Event would not do.
        while remote.generation == generation and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return JSONResponse({"id": "late"}, media_type=AS2_JSON)

    async def drip(request: Request) -> Response:
        generation = remote.generation

        async def body() -> AsyncIterator[bytes]:
            yield b"{"
            deadline = time.monotonic() + 10
            while remote.generation == generation and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                yield b" "  # every read completes well within the per-read timeout

        return StreamingResponse(body(), media_type=AS2_JSON)

    async def text(request: Request) -> Response:
        return Response("this is not JSON", media_type=AS2_JSON)

    async def plain(request: Request) -> Response:
        return PlainTextResponse('{"id": "a JSON object served as plain text"}')

    async def array(request: Request) -> Response:
        return JSONResponse([{"id": "x"}], media_type=AS2_JSON)

    async def status(request: Request) -> Response:
        return Response(status_code=int(request.path_params["code"]))

    app = Starlette(
        routes=[
            Route("/json", document),
            Route("/inbox", inbox, methods=["POST"]),
            Route("/redirect", redirect, methods=["GET", "POST"]),
            Route("/chain/{n:int}", chain),
            Route("/bytes/{n:int}", sized),
            Route("/chunked/{n:int}", chunked),
            Route("/gzip/{n:int}", gzip_body),
            Route("/gzip-json", gzip_json),
            Route("/stall", stall, methods=["GET", "POST"]),
            Route("/drip", drip, methods=["GET", "POST"]),
            Route("/text", text),
            Route("/plain", plain),
            Route("/array", array),
            Route("/status/{code:int}", status),
        ]
    )

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope["query_string"].decode()
            remote.seen.append(
                Seen(
                    method=scope["method"],
                    target=scope["path"] + (f"?{query}" if query else ""),
                    headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
                )
            )
        await app(scope, receive, send)

    return recording  # type: ignore[return-value]


@dataclass
class Running:
    remote: Remote
    thread: ServerThread

    @property
    def url(self) -> str:
        return self.thread.base_url

    @property
    def port(self) -> int:
        return self.thread.port

    @property
    def seen(self) -> list[Seen]:
        return self.remote.seen

    def paths(self) -> list[str]:
        return self.remote.paths()


@pytest.fixture(scope="module")
def _server_a() -> Iterator[Running]:
    remote = Remote()
    with ServerThread(make_app(remote)) as thread:
        yield Running(remote, thread)
        remote.generation += 1


@pytest.fixture(scope="module")
def _server_b() -> Iterator[Running]:
    remote = Remote()
    with ServerThread(make_app(remote)) as thread:
        yield Running(remote, thread)
        remote.generation += 1


def _fresh(running: Running) -> Iterator[Running]:
    running.remote.seen.clear()
    yield running
    running.remote.generation += 1  # let any handler still waiting for this test finish


@pytest.fixture
def remote(_server_a: Running) -> Iterator[Running]:
    yield from _fresh(_server_a)


@pytest.fixture
def remote_b(_server_b: Running) -> Iterator[Running]:
    yield from _fresh(_server_b)


# ---- clients and the tripwire ----------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the client really connects to (after the guard); loopback only.

    Name resolution is held to IP literals and localhost too, so no test sends a DNS query.
    """
    attempts: list[str] = []
    resolve = anyio.getaddrinfo

    async def local_resolution_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name != "localhost":
            try:
                ipaddress.ip_address(name.split("%", 1)[0])
            except ValueError:
                if name not in {"127.1"}:  # inet_aton shorthand, resolved without DNS
                    raise AssertionError(f"test tried to resolve {name!r}") from None
        return await resolve(host, *args, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", local_resolution_only)
    original = httpcore.AnyIOBackend.connect_tcp

    async def tripwire(
        self: httpcore.AnyIOBackend, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.AsyncNetworkStream:
        attempts.append(host)
        if not _is_loopback(host):
            raise AssertionError(f"test tried to connect to non-loopback {host}:{port}")
        return await original(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", tripwire)
    return attempts


ClientFactory = Callable[..., FederationClient]


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    made: list[FederationClient] = []

    def factory(**overrides: Any) -> FederationClient:
        options: dict[str, Any] = {
            "user_agent": "InterOcc-test",
            "allow_private": True,
            "timeout": 5.0,
            "max_bytes": 2_000_000,
            "delivery_timeout": 5.0,
        }
        options.update(overrides)
        made.append(FederationClient(**options))
        return made[-1]

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
def guarded(make_client: ClientFactory) -> FederationClient:
    """A client as production runs it: private addresses refused."""
    return make_client(allow_private=False)


@pytest.fixture
def local(make_client: ClientFactory) -> FederationClient:
    """A client as the test suite runs it: loopback allowed."""
    return make_client(allow_private=True)


def auth() -> SignatureAuth:
    return SignatureAuth(KEY_ID, pooled_key())


@pytest.fixture
def ipv6_listener() -> Iterator[socket.socket | None]:
    """A bare listening socket on [::1] if this machine has IPv6 loopback, else None."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.bind(("::1", 0))
    except OSError:
        sock.close()
        yield None
        return
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def nothing_connected_to(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# ---- the guard: private addresses are refused before any connection ---------------------


LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "0.0.0.0"]
UNREACHABLE_PRIVATE_HOSTS = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",
    "[fe80::1]",
    "[fd00::1]",
    "[::]",
    "[::ffff:10.0.0.1]",
]


async def test_the_tripwires_are_in_place(local: FederationClient, connections: list[str]) -> None:
    assert httpcore.AnyIOBackend.connect_tcp.__name__ == "tripwire"
    with pytest.raises(AssertionError, match="tried to resolve 'occupy.invalid'"):
        await local.get("http://occupy.invalid/")
    assert connections == []


async def test_allowed_client_reaches_the_test_server(
    local: FederationClient, remote: Running, connections: list[str]
) -> None:
    # The control for everything below: the same request does arrive when it is allowed.
    fetched = await local.fetch_json(f"{remote.url}/json")
    assert fetched.document["type"] == "Note"
    assert remote.paths() == ["/json"]
    assert connections == ["127.0.0.1"]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_get_to_a_loopback_server_is_refused_and_nothing_arrives(
    guarded: FederationClient, remote: Running, connections: list[str], host: str
) -> None:
    with pytest.raises(UnsafeAddress):
        await guarded.get(f"http://{host}:{remote.port}/json")
    with pytest.raises(UnsafeAddress):
        await guarded.fetch_json(f"http://{host}:{remote.port}/json")
    assert remote.seen == []
    assert connections == []


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_post_to_a_loopback_server_is_refused_and_nothing_arrives(
    guarded: FederationClient, remote: Running, connections: list[str], host: str
) -> None:
    with pytest.raises(UnsafeAddress):
        await guarded.post(f"http://{host}:{remote.port}/inbox", b"{}", auth=auth())
    assert remote.seen == []
    assert connections == []


async def test_ipv6_loopback_is_refused_before_connecting(
    guarded: FederationClient,
    ipv6_listener: socket.socket | None,
    remote: Running,
    connections: list[str],
) -> None:
    # With IPv6 loopback a listener on [::1] would see a connection if the guard let one
    # through; without it the guard must still refuse ::1 (it checks before connecting).
    port = ipv6_listener.getsockname()[1] if ipv6_listener is not None else remote.port
    with pytest.raises(UnsafeAddress):
        await guarded.get(f"http://[::1]:{port}/json")
    with pytest.raises(UnsafeAddress):
        await guarded.post(f"http://[::1]:{port}/inbox", b"{}", auth=auth())
    assert connections == []
    if ipv6_listener is not None:
        assert nothing_connected_to(ipv6_listener)


@pytest.mark.parametrize("host", UNREACHABLE_PRIVATE_HOSTS)
async def test_private_ranges_are_refused_before_connecting(
    guarded: FederationClient, connections: list[str], host: str
) -> None:
    started = time.monotonic()
    with pytest.raises(UnsafeAddress):
        await guarded.fetch_json(f"http://{host}/users/x")
    with pytest.raises(UnsafeAddress):
        await guarded.post(f"http://{host}/inbox", b"{}", auth=auth())
    assert connections == []
    assert time.monotonic() - started < 1.0  # refused, not timed out


async def test_unsafe_address_is_a_remote_error(guarded: FederationClient) -> None:
    # Callers that handle RemoteError (fetching actors, delivering) handle this too.
    with pytest.raises(RemoteError) as caught:
        await guarded.fetch_json("http://10.0.0.1/users/x")
    assert isinstance(caught.value, UnsafeAddress)
    assert caught.value.status == 502


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "1.1.1.1",
        "2606:2800:220:1:248:1893:25c8:1946",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",
    ],
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(address) is True


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "127.255.255.254",
        "::1",
        "10.0.0.1",  # private
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "fc00::1",
        "fd12:3456::1",
        "169.254.169.254",  # link-local
        "fe80::1",
        "fe80::1%eth0",
        "100.64.0.1",  # carrier-grade NAT
        "100.127.255.254",
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "ff02::1",
        "ff0e::1",
        "0.0.0.0",  # unspecified
        "::",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "192.0.2.1",  # documentation and reserved
        "2001:db8::1",
        "198.18.0.1",
        "240.0.0.1",
        "255.255.255.255",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert is_public_address(address) is False


# ---- URLs: only http(s), no credentials ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_GET",
        "ftp://127.0.0.1/x",
        "dict://127.0.0.1:11211/stat",
        "javascript:alert(1)",
        "data:application/json,{}",
        "http:///no-host",
        "/relative/path",
        "",
    ],
)
async def test_non_http_urls_are_refused(
    local: FederationClient, connections: list[str], url: str
) -> None:
    with pytest.raises(UnsafeAddress):
        await local.get(url)
    with pytest.raises(UnsafeAddress):
        await local.fetch_json(url)
    with pytest.raises(UnsafeAddress):
        await local.post(url, b"{}", auth=auth())
    assert connections == []


@pytest.mark.parametrize(
    "url", ["http://[oops/x", "http://127.0.0.1:99999/x", "http://127.0.0.1:port/x"]
)
async def test_malformed_urls_are_refused(
    local: FederationClient, connections: list[str], url: str
) -> None:
    # A keyId or inbox URL from a remote document can be anything.
    with pytest.raises(UnsafeAddress):
        await local.fetch_json(url)
    with pytest.raises(UnsafeAddress):
        await local.post(url, b"{}", auth=auth())
    assert connections == []


async def test_urls_with_credentials_are_refused(
    local: FederationClient, remote: Running, connections: list[str]
) -> None:
    for url in (
        f"http://user:pw@127.0.0.1:{remote.port}/json",
        f"http://user@127.0.0.1:{remote.port}/json",
    ):
        with pytest.raises(UnsafeAddress):
            await local.fetch_json(url)
        with pytest.raises(UnsafeAddress):
            await local.post(url, b"{}", auth=auth())
    assert remote.seen == []
    assert connections == []


# ---- redirects -------------------------------------------------------------------------------


def redirect_url(server: Running, to: str, status: int = 302) -> str:
    return f"{server.url}/redirect?{urlencode({'to': to, 'status': status})}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_server_is_followed(
    local: FederationClient, remote: Running, remote_b: Running, status: int
) -> None:
    target = f"{remote_b.url}/json"
    fetched = await local.fetch_json(redirect_url(remote, target, status))
    assert fetched.url == target
    assert fetched.status == 200
    assert fetched.document == {"id": target, "type": "Note"}
    assert remote.paths() == ["/redirect"]
    assert remote_b.paths() == ["/json"]
    assert remote_b.seen[0].headers["accept"] == AS2_ACCEPT


async def test_five_redirects_are_followed(local: FederationClient, remote: Running) -> None:
    fetched = await local.fetch_json(f"{remote.url}/chain/5")
    assert fetched.url == f"{remote.url}/chain/0"
    assert fetched.document["id"] == f"{remote.url}/chain/0"
    assert len(remote.seen) == 6


async def test_six_redirects_are_too_many(local: FederationClient, remote: Running) -> None:
    with pytest.raises(RemoteError) as caught:
        await local.fetch_json(f"{remote.url}/chain/6")
    assert caught.value.message == "too many redirects"
    assert not isinstance(caught.value, UnsafeAddress)
    assert remote.paths() == [f"/chain/{n}" for n in range(6, 0, -1)]  # /chain/0 never asked


@pytest.mark.parametrize(
    "to", ["ftp://x/doc", "file:///etc/passwd", "gopher://127.0.0.1:70/_x", "//user:pw@x/"]
)
async def test_a_redirect_to_another_scheme_is_refused(
    local: FederationClient, remote: Running, connections: list[str], to: str
) -> None:
    with pytest.raises(UnsafeAddress):
        await local.fetch_json(redirect_url(remote, to))
    assert remote.paths() == ["/redirect"]
    assert connections == ["127.0.0.1"]


@pytest.mark.parametrize(
    "to", ["javascript:alert(1)", "mailto:ga@x.org", "data:text/plain,hi", "http://[oops/"]
)
async def test_a_redirect_to_an_unusable_location_is_a_remote_error(
    local: FederationClient, remote: Running, connections: list[str], to: str
) -> None:
    # Callers handle RemoteError; a hostile Location must not surface as anything else.
    with pytest.raises(RemoteError):
        await local.fetch_json(redirect_url(remote, to))
    assert remote.paths() == ["/redirect"]
    assert connections == ["127.0.0.1"]


async def test_a_redirect_to_a_url_with_credentials_is_refused(
    local: FederationClient, remote: Running, remote_b: Running
) -> None:
    to = f"http://user:pw@127.0.0.1:{remote_b.port}/json"
    with pytest.raises(UnsafeAddress):
        await local.fetch_json(redirect_url(remote, to))
    assert remote.paths() == ["/redirect"]
    assert remote_b.seen == []


@pytest.fixture
def pretend_127_0_0_1_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline there is no public server to start from, so 127.0.0.1 plays one.

    Only the address classification is replaced; the guard, the redirects and the HTTP are
    real. Every other loopback or private spelling stays forbidden.
    """
    original = client_module.is_public_address
    monkeypatch.setattr(
        client_module, "is_public_address", lambda a: a == "127.0.0.1" or original(a)
    )


@pytest.mark.usefixtures("pretend_127_0_0_1_is_public")
async def test_a_public_server_may_redirect_to_another_public_address(
    guarded: FederationClient, remote: Running, remote_b: Running
) -> None:
    fetched = await guarded.fetch_json(redirect_url(remote, f"{remote_b.url}/json"))
    assert fetched.url == f"{remote_b.url}/json"
    assert remote_b.paths() == ["/json"]


@pytest.mark.usefixtures("pretend_127_0_0_1_is_public")
@pytest.mark.parametrize(
    "host", ["[::ffff:127.0.0.1]", "[::1]", "10.0.0.1", "169.254.169.254", "192.168.1.1"]
)
async def test_a_public_server_cannot_redirect_to_a_private_address(
    guarded: FederationClient,
    remote: Running,
    remote_b: Running,
    connections: list[str],
    host: str,
) -> None:
    # Each hop is checked where it connects: the redirect target is refused after DNS,
    # before any connection, however the first hop was judged.
    with pytest.raises(UnsafeAddress):
        await guarded.fetch_json(redirect_url(remote, f"http://{host}:{remote_b.port}/json"))
    assert remote.paths() == ["/redirect"]
    assert remote_b.seen == []
    assert connections == ["127.0.0.1"]


async def test_post_does_not_follow_redirects(
    local: FederationClient, remote: Running, remote_b: Running
) -> None:
    # The signature covers the target; a delivery is never re-sent elsewhere.
    response = await local.post(
        redirect_url(remote, f"{remote_b.url}/inbox", 307), b"{}", auth=auth()
    )
    assert response.status_code == 307
    assert remote.paths() == ["/redirect"]
    assert remote_b.seen == []


# ---- size bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
async def test_a_body_larger_than_max_bytes_is_refused(
    make_client: ClientFactory, remote: Running, kind: str
) -> None:
    client = make_client(max_bytes=2_000_000)
    with pytest.raises(RemoteError) as caught:
        await client.get(f"{remote.url}/{kind}/3000000")
    assert caught.value.message == "remote document too large"


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
async def test_max_bytes_is_inclusive(
    make_client: ClientFactory, remote: Running, kind: str
) -> None:
    client = make_client(max_bytes=100_000)
    response, body = await client.get(f"{remote.url}/{kind}/100000")
    assert len(body) == 100_000
    with pytest.raises(RemoteError, match="too large"):
        await client.get(f"{remote.url}/{kind}/100001")


async def test_the_two_size_tests_really_cover_both_framings(
    local: FederationClient, remote: Running
) -> None:
    declared, _ = await local.get(f"{remote.url}/bytes/1000")
    assert declared.headers["content-length"] == "1000"
    streamed, _ = await local.get(f"{remote.url}/chunked/1000")
    assert "content-length" not in streamed.headers
    assert streamed.headers["transfer-encoding"] == "chunked"


async def test_a_small_gzip_body_that_inflates_past_max_bytes_is_refused(
    make_client: ClientFactory, remote: Running
) -> None:
    client = make_client(max_bytes=2_000_000)
    assert len(gzipped(3_000_000)) < 10_000  # small on the wire
    with pytest.raises(RemoteError) as caught:
        await client.fetch_json(f"{remote.url}/gzip/3000000")
    assert caught.value.message == "remote document too large"


async def test_a_gzip_bomb_is_refused_without_inflating_it_in_memory(
    make_client: ClientFactory, remote: Running
) -> None:
    client = make_client(max_bytes=200_000)
    bomb = gzipped(64_000_000)
    assert len(bomb) < 200_000  # passes the bound on the wire
    tracemalloc.start()
    try:
        with pytest.raises(RemoteError, match="too large"):
            await client.get(f"{remote.url}/gzip/64000000")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16_000_000, f"peak {peak} bytes: the bomb was inflated"


async def test_a_gzip_document_within_bounds_is_decoded(
    local: FederationClient, remote: Running
) -> None:
    fetched = await local.fetch_json(f"{remote.url}/gzip-json")
    assert fetched.document["content"] == "ok " * 1000
    assert remote.seen[0].headers["accept-encoding"]  # compression is offered


# ---- time bounds -----------------------------------------------------------------------------


async def timed(call: Awaitable[Any]) -> float:
    started = time.monotonic()
    await call
    return time.monotonic() - started


async def test_a_server_that_never_answers_is_given_up_on(
    make_client: ClientFactory, remote: Running
) -> None:
    client = make_client(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RemoteError):
        await client.fetch_json(f"{remote.url}/stall")
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5  # about the timeout, at most twice it (plus scheduling slack)


async def test_a_server_that_drips_bytes_is_cut_off_by_the_overall_bound(
    make_client: ClientFactory, remote: Running
) -> None:
    # Each read arrives within the per-read timeout; only the overall bound (2x) stops it.
    client = make_client(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        await client.fetch_json(f"{remote.url}/drip")
    elapsed = time.monotonic() - started
    assert caught.value.message == "remote server timed out"
    assert 0.9 < elapsed < 1.5


@pytest.mark.parametrize("path", ["/stall", "/drip"])
async def test_a_delivery_to_a_slow_inbox_is_given_up_on(
    make_client: ClientFactory, remote: Running, path: str
) -> None:
    client = make_client(delivery_timeout=0.5)
    started = time.monotonic()
    # The worker records these as "no answer" and retries later.
    with pytest.raises((httpx.HTTPError, TimeoutError)):
        await client.post(f"{remote.url}{path}", b"{}", auth=auth())
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5


async def test_an_unreachable_port_is_a_remote_error(
    local: FederationClient, remote: Running
) -> None:
    with socket.socket() as sock:  # a port that was just free and is now closed again
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RemoteError, match="unreachable"):
        await local.fetch_json(f"http://127.0.0.1:{port}/json")


# ---- fetch_json: only a JSON object with 200 is a document -----------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/text", "remote document is not JSON"),
        ("/plain", "remote document is not served as ActivityStreams"),
        ("/array", "remote document is not a JSON object"),
        ("/status/404", "remote server answered 404"),
        ("/status/500", "remote server answered 500"),
        ("/status/204", "remote server answered 204"),
        ("/status/410", "remote object is gone"),
    ],
)
async def test_fetch_json_refuses_what_is_not_a_document(
    local: FederationClient, remote: Running, path: str, message: str
) -> None:
    with pytest.raises(RemoteError) as caught:
        await local.fetch_json(f"{remote.url}{path}")
    assert caught.value.message == message
    assert not isinstance(caught.value, UnsafeAddress)


async def test_fetch_json_says_gone_for_410(local: FederationClient, remote: Running) -> None:
    with pytest.raises(RemoteError, match="gone"):
        await local.fetch_json(f"{remote.url}/status/410")


# ---- identity: User-Agent and Accept ---------------------------------------------------------


async def test_requests_name_interocc_its_version_and_the_instance(
    make_client: ClientFactory, remote: Running
) -> None:
    settings = Settings(
        base_url="https://occupy.example",
        database_url="sqlite+aiosqlite:///unused.sqlite3",
        secret_key="k" * 32,
    )
    client = make_client(user_agent=settings.user_agent)
    await client.fetch_json(f"{remote.url}/json")
    await client.post(f"{remote.url}/inbox", b"{}", auth=auth())
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert VERSION == pyproject["project"]["version"]
    for seen in remote.seen:
        assert seen.headers["user-agent"] == f"InterOcc/{VERSION} (+https://occupy.example/)"


async def test_fetch_json_asks_for_activitystreams(
    local: FederationClient, remote: Running
) -> None:
    await local.fetch_json(f"{remote.url}/json")
    assert AS2_ACCEPT == (
        'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
    )
    assert remote.seen[0].headers["accept"] == AS2_ACCEPT


async def test_a_delivery_is_posted_as_activity_json(
    local: FederationClient, remote: Running
) -> None:
    body = b'{"type":"Create"}'
    response = await local.post(f"{remote.url}/inbox", body, auth=auth())
    assert response.status_code == 202
    [seen] = remote.seen
    assert seen.method == "POST"
    assert seen.headers["content-type"] == AS2_JSON
    assert seen.body == body


# ---- signing ---------------------------------------------------------------------------------


class SteppingClock:
    """Returns the given times in turn: one per signature."""

    def __init__(self, *times: datetime) -> None:
        self.times = list(times)
        self.calls = 0

    def __call__(self) -> datetime:
        self.calls += 1
        return self.times.pop(0)


async def test_each_delivery_is_signed_afresh(local: FederationClient, remote: Running) -> None:
    first = datetime(2024, 3, 5, 7, 8, 9, tzinfo=UTC)
    second = first + timedelta(minutes=10)
    key = pooled_key()
    clock = SteppingClock(first, second)
    signer = SignatureAuth(KEY_ID, key, clock=clock)
    body = b'{"type":"Create","id":"https://occupy.example/activities/1"}'

    await local.post(f"{remote.url}/inbox", body, auth=signer)
    await local.post(f"{remote.url}/inbox", body, auth=signer)

    assert clock.calls == 2
    one, two = remote.seen
    assert one.headers["date"] == "Tue, 05 Mar 2024 07:08:09 GMT"
    assert two.headers["date"] == "Tue, 05 Mar 2024 07:18:09 GMT"
    assert one.headers["signature"] != two.headers["signature"]
    for seen, when in ((one, first), (two, second)):
        params = httpsig.parse_signature_header(seen.headers["signature"])
        assert params["keyId"] == KEY_ID
        assert params["headers"] == "(request-target) host date digest"
        ok, reason = httpsig.verify(
            "POST", seen.target, seen.headers, seen.body, public_pem(key), now=when
        )
        assert ok, reason
    # A signature is bound to its Date: the first request replayed ten minutes later with a
    # 5-minute window is stale, while the fresh one is not.
    stale, _ = httpsig.verify(
        "POST", one.target, one.headers, one.body, public_pem(key), now=second, window_seconds=300
    )
    assert not stale


async def test_a_signed_fetch_verifies_and_covers_accept(
    local: FederationClient, remote: Running
) -> None:
    key = pooled_key()
    await local.fetch_json(f"{remote.url}/json", auth=SignatureAuth(KEY_ID, key))
    [seen] = remote.seen
    params = httpsig.parse_signature_header(seen.headers["signature"])
    assert params["headers"] == "(request-target) host date accept"
    ok, reason = httpsig.verify("GET", seen.target, seen.headers, b"", public_pem(key))
    assert ok, reason


async def test_a_signed_fetch_is_signed_again_for_each_redirect_hop(
    local: FederationClient, remote: Running, remote_b: Running
) -> None:
    key = pooled_key()
    await local.fetch_json(
        redirect_url(remote, f"{remote_b.url}/json"), auth=SignatureAuth(KEY_ID, key)
    )
    for seen in (remote.seen[0], remote_b.seen[0]):
        ok, reason = httpsig.verify("GET", seen.target, seen.headers, b"", public_pem(key))
        assert ok, reason
    assert remote_b.seen[0].headers["host"] == f"127.0.0.1:{remote_b.port}"
