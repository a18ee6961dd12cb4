"""The one outgoing HTTP client: signing, SSRF guard, size and time limits.

Every remote GET and every delivery POST goes through :class:`FederationClient`.
The guard sits in the network backend, so the address that is checked is the address
that is connected to — after DNS, for every connection, redirects included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import anyio
import httpcore
import httpx

from server.activitypub.bounds import TooComplex, check_document
from server.activitypub.negotiation import is_activity_json
from server.activitypub.signatures import PrivateKey, sign_request
from server.activitypub.vocab import AS2_MEDIA_TYPE, LD_MEDIA_TYPE
from server.errors import RemoteError, UnsafeAddress

AS2_ACCEPT = f"{AS2_MEDIA_TYPE}, {LD_MEDIA_TYPE}"
MAX_REDIRECTS = 5
MAX_ANSWER_BYTES = 16_384

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# Not globally reachable: the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890
# and its successors), written out because ipaddress's is_global differs between Python
# patch releases (3.11.7 calls 192.0.0.9, fec0::/10, 3fff::/20 and ::127.0.0.1 global). Where
# the registry excepts a few anycast addresses from a block (192.0.0.9, 2001:1::1…), the
# whole block is refused: no fediverse server lives there.
_NOT_GLOBAL_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata at 169.254.169.254
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments (DS-Lite, NAT64 discovery…)
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    )
)
# Only global unicast (2000::/3) reaches the internet; everything outside it is special or
# unassigned: ::, ::1, ::/96 (IPv4-compatible, deprecated), ::ffff:0:0:0/96 (IPv4-translated,
# inside a translator's domain only), 64:ff9b:1::/48 (local-use NAT64, RFC 8215), 100::/64
# (discard), fc00::/7 (unique local), fe80::/10 (link-local), fec0::/10 (site-local),
# ff00::/8 (multicast).
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NOT_GLOBAL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID…
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # segment routing SIDs (RFC 9602)
    )
)
# Prefixes that only carry an IPv4 address to the internet: the address they carry decides.
_IPV4_CARRIERS = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::ffff:0:0/96",  # IPv4-mapped: the kernel connects over IPv4
        "64:ff9b::/96",  # NAT64 well-known prefix (RFC 6052)
        "2002::/16",  # 6to4 (RFC 3056)
    )
)
# Where an IPv4 address sits in the last 32 bits. IPv4-mapped, 6to4 and Teredo addresses are
# unwrapped by ipaddress itself.
_LAST_32_BITS_V4 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "64:ff9b::/96",  # NAT64 well-known prefix
        "64:ff9b:1::/48",  # NAT64 local-use prefix, in its /96 layout
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
        "::/96",  # IPv4-compatible (RFC 4291)
    )
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries, which a translator or tunnel on the path
    would send its packets to: Teredo carries two (its server, and its client XOR
    0xffffffff)."""
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if any(ip in net for net in _LAST_32_BITS_V4):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF),)
    return ()


def _is_public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not any(ip in net for net in _NOT_GLOBAL_V4)


def is_public_address(address: str) -> bool:
    """Only a globally routable unicast address; anything unparseable is not.

    An IPv6 address that carries IPv4 addresses (NAT64, 6to4, Teredo, IPv4-mapped,
    -translated or -compatible) is public only if every IPv4 address it carries is, and
    its own prefix is too: a translator or tunnel on the path would otherwise deliver to
    127.0.0.1 or 10.0.0.1.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return _is_public_v4(ip)
    if not all(_is_public_v4(v4) for v4 in embedded_ipv4(ip)):
        return False
    if any(ip in net for net in _IPV4_CARRIERS):
        return True
    return (
        ip in _GLOBAL_UNICAST_V6
        and not any(ip in net for net in _NOT_GLOBAL_V6)
        and ip.is_global  # and whatever else this Python's registry knows
    )


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses non-public addresses, connects to the checked IP."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [a for a in addresses if self._allow_private or is_public_address(a)]
        if not allowed:
            raise UnsafeAddress(detail=f"{host} resolves only to non-public addresses")
        last: Exception | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # try the next address
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeAddress(detail="unix sockets are not reachable")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, *, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx exposes no network_backend option, so the pool it built is replaced by an
        # identical one that connects through the guard.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private=allow_private),
        )


class SignatureAuth(httpx.Auth):
    """Signs each request afresh (draft-cavage), so a retried delivery carries a new Date."""

    requires_request_body = True

    def __init__(self, key_id: str, private_key: PrivateKey, clock: Clock = utc_now) -> None:
        self.key_id = key_id
        self.private_key = private_key
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        body = request.content if request.method != "GET" else None
        signed = sign_request(
            request.method,
            str(request.url),
            dict(request.headers),
            body,
            key_id=self.key_id,
            private_key=self.private_key,
            now=self.clock(),
        )
        for name, value in signed.items():
            request.headers[name] = value
        yield request


@dataclass(frozen=True)
class Fetched:
    url: str  # the final URL after redirects
    status: int
    document: dict[str, Any]


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port beyond 65535
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise UnsafeAddress(f"not a valid URL: {url[:200]!r}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UnsafeAddress(f"only http(s) URLs can be fetched, not {url[:200]!r}")
    if parts.username or parts.password:
        raise UnsafeAddress("URLs with credentials are not fetched")


class FederationClient:
    def __init__(
        self,
        *,
        user_agent: str,
        allow_private: bool,
        timeout: float,
        max_bytes: int,
        delivery_timeout: float,
        delivery_connect_timeout: float | None = None,
        max_connections: int = 100,
    ) -> None:
        # Every connection in use may be kept alive: a pool smaller than the delivery slots
        # would reconnect (a TLS handshake) for most deliveries.
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.delivery_timeout = delivery_timeout
        # The connect phase gets its own, shorter bound: a dead host fails fast.
        self.delivery_connect_timeout = min(
            delivery_connect_timeout or delivery_timeout, delivery_timeout
        )
        self.http = httpx.AsyncClient(
            transport=GuardedTransport(allow_private=allow_private, limits=limits),
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _read_limited(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise RemoteError("remote document too large", detail=str(response.url))
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.max_bytes:
                raise RemoteError("remote document too large", detail=str(response.url))
            chunks.append(chunk)
        raw = b"".join(chunks)
        encoding = response.headers.get("content-encoding", "").lower()
        if encoding in {"gzip", "deflate", "br"}:
            # Decode by hand with the same bound, a little at a time: a small compressed body
            # may inflate to gigabytes, which must never be held in memory.
            pieces = (raw[i : i + 1024] for i in range(0, len(raw), 1024))
            decoded = httpx.Response(200, headers={"content-encoding": encoding}, content=pieces)
            data: list[bytes] = []
            size = 0
            for piece in decoded.iter_bytes():
                size += len(piece)
                if size > self.max_bytes:
                    raise RemoteError("remote document too large", detail=str(response.url))
                data.append(piece)
            return b"".join(data)
        return raw

    async def get(
        self, url: str, *, accept: str = AS2_ACCEPT, auth: httpx.Auth | None = None
    ) -> tuple[httpx.Response, bytes]:
        """GET with redirects followed by hand (each hop checked), bounded in size and time."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            check_url(current)
            request = self.http.build_request("GET", current, headers={"Accept": accept})
            try:
                async with asyncio.timeout(self.timeout * 2):
                    response = await self.http.send(request, auth=auth, stream=True)
                    try:
                        if response.is_redirect and "location" in response.headers:
                            current = urljoin(current, response.headers["location"])
                            continue
                        body = await self._read_limited(response)
                    finally:
                        await response.aclose()
            except TimeoutError as exc:
                raise RemoteError("remote server timed out", detail=current) from exc
            except (httpx.InvalidURL, ValueError) as exc:  # a Location that is no URL
                raise RemoteError("remote server sent a bad redirect", detail=current) from exc
            except httpx.HTTPError as exc:
                raise RemoteError("remote server unreachable", detail=f"{current}: {exc}") from exc
            return response, body
        raise RemoteError("too many redirects", detail=url)

    async def fetch_json(
        self, url: str, *, auth: httpx.Auth | None = None, accept: str = AS2_ACCEPT
    ) -> Fetched:
        response, body = await self.get(url, accept=accept, auth=auth)
        if response.status_code == 410:
            raise RemoteError("remote object is gone", detail=url)
        if response.status_code != 200:
            raise RemoteError(f"remote server answered {response.status_code}", detail=f"GET {url}")
        if accept == AS2_ACCEPT and not is_activity_json(response.headers.get("content-type")):
            # FEP-96ff: only a document served as ActivityStreams is one. Anything else (an
            # uploaded file on the actor's host, an HTML page) is refused before it is read.
            raise RemoteError("remote document is not served as ActivityStreams", detail=url)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RemoteError("remote document is not JSON", detail=url) from exc
        if not isinstance(document, dict):
            raise RemoteError("remote document is not a JSON object", detail=url)
        try:
            check_document(document)
        except TooComplex as exc:
            raise RemoteError(f"remote document refused: {exc.reason}", detail=url) from exc
        return Fetched(url=str(response.url), status=response.status_code, document=document)

    async def post(self, url: str, body: bytes, *, auth: httpx.Auth) -> httpx.Response:
        """POST an activity; redirects are not followed (the signature covers the target)."""
        check_url(url)
        request = self.http.build_request(
            "POST",
            url,
            content=body,
            headers={"Content-Type": AS2_MEDIA_TYPE, "Accept": AS2_ACCEPT},
            timeout=httpx.Timeout(self.delivery_timeout, connect=self.delivery_connect_timeout),
        )
        async with asyncio.timeout(self.delivery_timeout * 2):
            response = await self.http.send(request, auth=auth, stream=True)
            try:
                # Only the start of an answer is kept (for the delivery's error record):
                # an inbox cannot make us hold an unbounded body.
                kept = bytearray()
                async for chunk in response.aiter_raw():
                    kept += chunk[: MAX_ANSWER_BYTES - len(kept)]
                    if len(kept) >= MAX_ANSWER_BYTES:
                        break
            finally:
                await response.aclose()
        # The kept bytes are raw (maybe compressed, cut short): only the headers the worker
        # reads travel on, so nothing tries to decode them.
        keep = {k: v for k, v in response.headers.items() if k.lower() in {"retry-after"}}
        return httpx.Response(
            response.status_code,
            headers=keep,
            content=bytes(kept).decode("utf-8", "replace").encode(),
            request=request,
        )
