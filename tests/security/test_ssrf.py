"""SSRF: the outgoing client reaches only globally routable addresses, however they are spelt.

An IPv6 address can carry an IPv4 address that a translator or tunnel on the path delivers
to: NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32, the client
address XOR 0xffffffff), IPv4-mapped, -translated and -compatible. Each such form of a
private, loopback or metadata address is refused, as are the special-purpose ranges
themselves. tests/test_client_guard.py covers the plain private ranges, redirects, sizes and
times; this file covers the embedded forms and the numeric spellings of 127.0.0.1.

The end-to-end cases point a production-like client (private addresses refused) at a
tripwire: a real TCP listener on 127.0.0.1 that records every connection it accepts. Under
the guard, name resolution is held to numbers and fake names, and a second tripwire refuses
any connection that would leave this host, so no case can send a packet anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import anyio
import httpcore
import pytest

from server.activitypub import client as client_module
from server.activitypub.client import FederationClient, SignatureAuth, is_public_address
from server.errors import UnsafeAddress
from tests.support.peer import pooled_key

pytestmark = pytest.mark.e2e

# ---- spelling an IPv4 address inside IPv6 ----------------------------------------------------


def _v6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def _v4(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


def nat64(v4: str) -> str:
    return _v6(int(ipaddress.IPv6Address("64:ff9b::")) | _v4(v4))


def nat64_local(v4: str) -> str:
    return _v6(int(ipaddress.IPv6Address("64:ff9b:1::")) | _v4(v4))


def sixtofour(v4: str) -> str:
    return _v6((0x2002 << 112) | (_v4(v4) << 80) | 1)


def ipv4_compatible(v4: str) -> str:
    return _v6(_v4(v4))


def ipv4_mapped(v4: str) -> str:
    return _v6((0xFFFF << 32) | _v4(v4))


def ipv4_translated(v4: str) -> str:
    return _v6((0xFFFF << 48) | _v4(v4))


def teredo_client(v4: str) -> str:
    """A Teredo address whose client (last 32 bits, inverted) is ``v4``; a public server."""
    return _v6((0x2001_0000 << 96) | (_v4("8.8.8.8") << 64) | (~_v4(v4) & 0xFFFF_FFFF))


def teredo_server(v4: str) -> str:
    """A Teredo address whose server (bits 32-63) is ``v4``; a public client."""
    return _v6((0x2001_0000 << 96) | (_v4(v4) << 64) | (~_v4("1.1.1.1") & 0xFFFF_FFFF))


FORMS: dict[str, Callable[[str], str]] = {
    "nat64": nat64,
    "nat64-local": nat64_local,
    "6to4": sixtofour,
    "teredo-client": teredo_client,
    "teredo-server": teredo_server,
    "ipv4-compatible": ipv4_compatible,
    "ipv4-mapped": ipv4_mapped,
    "ipv4-translated": ipv4_translated,
}

PRIVATE_V4 = {
    "loopback": "127.0.0.1",
    "loopback-high": "127.255.255.254",
    "private-10": "10.0.0.1",
    "private-172": "172.16.0.1",
    "private-192": "192.168.1.1",
    "metadata": "169.254.169.254",
    "cgnat": "100.64.0.1",
    "this-network": "0.0.0.0",
    "ietf-192.0.0": "192.0.0.1",
    "benchmark": "198.18.0.1",
    "multicast": "224.0.0.1",
    "broadcast": "255.255.255.255",
}

EMBEDDED_HOSTILE = [
    pytest.param(spell(v4), id=f"{form}-{name}")
    for form, spell in FORMS.items()
    for name, v4 in PRIVATE_V4.items()
]

SPECIAL_HOSTILE = [
    # IPv4 special-purpose ranges beyond the ones tests/test_client_guard.py lists
    pytest.param("0.1.2.3", id="this-network-0/8"),
    pytest.param("192.0.0.9", id="192.0.0.0/24-pcp-anycast"),
    pytest.param("192.0.0.170", id="192.0.0.0/24-nat64-discovery"),
    pytest.param("192.0.0.255", id="192.0.0.0/24-end"),
    pytest.param("192.88.99.1", id="6to4-relay-anycast"),
    pytest.param("198.19.255.255", id="benchmark-198.18/15-end"),
    pytest.param("198.51.100.7", id="test-net-2"),
    pytest.param("203.0.113.7", id="test-net-3"),
    pytest.param("233.252.0.1", id="mcast-test-net"),
    pytest.param("255.255.255.254", id="reserved-240/4-end"),
    # IPv6 outside global unicast, or special inside it
    pytest.param("fec0::1", id="site-local"),
    pytest.param("feff:ffff::1", id="site-local-end"),
    pytest.param("fdff:ffff::1", id="unique-local-end"),
    pytest.param("febf::1", id="link-local-end"),
    pytest.param("ff05::2", id="multicast-site"),
    pytest.param("100::1", id="discard-only"),
    pytest.param("2001:2::1", id="benchmark-v6"),
    pytest.param("2001:10::1", id="orchid"),
    pytest.param("2001:db8:ffff::1", id="documentation-v6"),
    pytest.param("3fff::1", id="documentation-v6-3fff"),
    pytest.param("5f00::1", id="srv6-sid"),
    pytest.param("4000::1", id="unassigned-outside-2000::/3"),
    # Forms refused whole, whatever IPv4 address they carry
    pytest.param(nat64_local("8.8.8.8"), id="nat64-local-of-public"),
    pytest.param(ipv4_compatible("8.8.8.8"), id="ipv4-compatible-of-public"),
    pytest.param(ipv4_translated("8.8.8.8"), id="ipv4-translated-of-public"),
    pytest.param(teredo_client("1.1.1.1"), id="teredo-of-public"),
    # Scoped, and not addresses at all: refused, not an exception
    pytest.param("::ffff:127.0.0.1%lo", id="scoped-mapped-loopback"),
    pytest.param("fe80::1%1", id="scoped-link-local"),
    pytest.param("", id="empty"),
    pytest.param("localhost", id="a-name"),
    pytest.param("127.1", id="shorthand-is-not-an-address"),
    pytest.param("1.2.3.4.5", id="five-octets"),
    pytest.param("::ffff:1.2.3", id="bad-mapped"),
]

PUBLIC = [
    pytest.param("8.8.8.8", id="google-dns"),
    pytest.param("1.1.1.1", id="cloudflare-dns"),
    pytest.param("9.9.9.9", id="quad9"),
    pytest.param("1.0.0.0", id="first-public"),
    pytest.param("100.63.255.255", id="just-below-cgnat"),
    pytest.param("100.128.0.0", id="just-above-cgnat"),
    pytest.param("172.15.255.255", id="just-below-172.16/12"),
    pytest.param("172.32.0.0", id="just-above-172.16/12"),
    pytest.param("192.0.1.1", id="just-above-192.0.0/24"),
    pytest.param("198.17.255.255", id="just-below-benchmark"),
    pytest.param("198.20.0.0", id="just-above-benchmark"),
    pytest.param("223.255.255.255", id="just-below-multicast"),
    pytest.param("2606:4700:4700::1111", id="cloudflare-dns-v6"),
    pytest.param("2001:4860:4860::8888", id="google-dns-v6"),
    pytest.param("2a01:4f8:c2c:123f::1", id="hetzner-v6"),
    pytest.param("2001:200::1", id="just-above-2001::/23"),
    pytest.param(sixtofour("8.8.8.8"), id="6to4-of-public"),
    pytest.param(nat64("8.8.8.8"), id="nat64-of-public"),
    pytest.param(nat64("1.1.1.1"), id="nat64-of-public-2"),
    pytest.param(ipv4_mapped("9.9.9.9"), id="ipv4-mapped-of-public"),
]


def test_the_spellings_carry_what_they_claim() -> None:
    # The builders above are checked against ipaddress's own unwrapping and known literals,
    # so the tables test what their names say.
    metadata = "169.254.169.254"
    assert nat64(metadata) == "64:ff9b::a9fe:a9fe"
    assert nat64_local("127.0.0.1") == "64:ff9b:1::7f00:1"
    assert ipv4_translated("127.0.0.1") == "::ffff:0:7f00:1"
    assert ipv4_compatible("127.0.0.1") == "::7f00:1"
    assert ipaddress.IPv6Address(sixtofour(metadata)).sixtofour == ipaddress.IPv4Address(metadata)
    assert ipaddress.IPv6Address(ipv4_mapped(metadata)).ipv4_mapped == ipaddress.IPv4Address(
        metadata
    )
    server, client = ipaddress.IPv6Address(teredo_client(metadata)).teredo or (None, None)
    assert (str(server), str(client)) == ("8.8.8.8", metadata)
    server, client = ipaddress.IPv6Address(teredo_server(metadata)).teredo or (None, None)
    assert (str(server), str(client)) == (metadata, "1.1.1.1")
    assert client_module.embedded_ipv4(ipaddress.IPv6Address(nat64(metadata))) == (
        ipaddress.IPv4Address(metadata),
    )


@pytest.mark.parametrize("address", EMBEDDED_HOSTILE)
def test_an_embedded_private_ipv4_address_is_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", SPECIAL_HOSTILE)
def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_globally_routable_addresses_are_allowed(address: str) -> None:
    assert is_public_address(address) is True


@pytest.mark.parametrize("form", list(FORMS))
def test_every_embedded_form_is_unwrapped(form: str) -> None:
    # Whatever the verdict on the form itself, the IPv4 address inside is found.
    address = ipaddress.IPv6Address(FORMS[form]("10.1.2.3"))
    assert ipaddress.IPv4Address("10.1.2.3") in client_module.embedded_ipv4(address)


# ---- end to end: a tripwire on 127.0.0.1 ----------------------------------------------------


@dataclass
class Tripwire:
    """A real listener on 127.0.0.1: records each connection it accepts, answers any request
    with a small JSON document, or with a redirect for ``/redirect?to=URL``."""

    port: int = 0
    connections: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(str(writer.get_extra_info("peername")[0]))
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            target = head.split(b" ", 2)[1].decode()
            if target.startswith("/redirect?to="):
                location = unquote(target.removeprefix("/redirect?to="))
                answer = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                writer.write(f"{answer}Connection: close\r\n\r\n".encode())
            else:
                body = b'{"id": "tripwire", "type": "Note"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/activity+json\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def tripwire() -> AsyncIterator[Tripwire]:
    wire = Tripwire()
    server = await asyncio.start_server(wire.handle, "127.0.0.1", 0)
    wire.port = server.sockets[0].getsockname()[1]
    async with server:
        yield wire


def _stays_on_this_host(host: str) -> bool:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified  # 0.0.0.0 and :: reach this host


# Fake names for the resolver: the guard must judge the addresses a name resolves to.
FAKE_DNS = {
    "nat64.test": [nat64("127.0.0.1")],
    "metadata.test": [sixtofour("169.254.169.254"), nat64("169.254.169.254")],
    "mixed.test": [teredo_client("10.0.0.1"), ipv4_translated("192.168.1.1"), "0.0.0.0"],
}


@pytest.fixture(autouse=True)
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address the client tries to connect to, under the guard; never one off this host.

    Resolution is held to numbers, localhost and FAKE_DNS: no case sends a DNS query.
    """
    tried: list[str] = []
    resolve = anyio.getaddrinfo

    async def resolve_locally(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in FAKE_DNS:
            family = socket.AF_INET6
            return [
                (family, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
                for address in FAKE_DNS[name]
            ]
        numeric = kwargs.pop("flags", 0) | socket.AI_NUMERICHOST
        if name == "localhost":
            numeric &= ~socket.AI_NUMERICHOST
        try:
            return await resolve(host, port, *args, flags=numeric, **kwargs)
        except socket.gaierror:
            # inet_aton's spellings (127.1, 2130706433, 0x7f000001) need no DNS either.
            packed = socket.inet_aton(name)
            return await resolve(socket.inet_ntoa(packed), port, *args, flags=numeric, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", resolve_locally)
    original = httpcore.AnyIOBackend.connect_tcp

    async def tripwire(
        self: httpcore.AnyIOBackend, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.AsyncNetworkStream:
        tried.append(host)
        if not _stays_on_this_host(host):
            raise AssertionError(f"the client tried to connect to {host}:{port}")
        return await original(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", tripwire)
    return tried


def _client(*, allow_private: bool) -> FederationClient:
    return FederationClient(
        user_agent="InterOcc-test",
        allow_private=allow_private,
        timeout=5.0,
        max_bytes=100_000,
        delivery_timeout=5.0,
    )


@pytest.fixture
async def guarded() -> AsyncIterator[FederationClient]:
    """A client as production runs it: private addresses refused."""
    client = _client(allow_private=False)
    yield client
    await client.aclose()


@pytest.fixture
async def unguarded() -> AsyncIterator[FederationClient]:
    client = _client(allow_private=True)
    yield client
    await client.aclose()


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# Spellings of this host that a kernel really connects to the tripwire with.
REACHING_THE_TRIPWIRE = [
    "127.0.0.1",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "2130706433",  # 127.0.0.1 as one decimal number
    "0x7f000001",
    "017700000001",  # octal
]
# Forms of 127.0.0.1 (and friends) that only a translator or tunnel would deliver.
EMBEDDED_LOOPBACK = [
    _bracket(spell("127.0.0.1")) for spell in FORMS.values() if spell is not ipv4_mapped
] + [_bracket(nat64("169.254.169.254")), _bracket(sixtofour("10.0.0.1"))]


@pytest.mark.parametrize("host", REACHING_THE_TRIPWIRE)
async def test_the_tripwire_sees_each_spelling_when_private_addresses_are_allowed(
    unguarded: FederationClient, tripwire: Tripwire, host: str
) -> None:
    # The control: these spellings do arrive, so the refusals below are the guard's doing.
    fetched = await unguarded.fetch_json(f"http://{host}:{tripwire.port}/")
    assert fetched.document["id"] == "tripwire"
    assert len(tripwire.connections) == 1


@pytest.mark.parametrize("host", REACHING_THE_TRIPWIRE + EMBEDDED_LOOPBACK)
async def test_a_guarded_client_never_reaches_the_tripwire(
    guarded: FederationClient, tripwire: Tripwire, attempts: list[str], host: str
) -> None:
    url = f"http://{host}:{tripwire.port}/"
    with pytest.raises(UnsafeAddress):
        await guarded.fetch_json(url)
    with pytest.raises(UnsafeAddress):
        await guarded.post(url, b"{}", auth=SignatureAuth("https://x.example/k", pooled_key()))
    assert tripwire.connections == []
    assert attempts == []


@pytest.mark.parametrize("name", list(FAKE_DNS))
async def test_a_name_resolving_to_embedded_private_addresses_is_refused(
    guarded: FederationClient, tripwire: Tripwire, attempts: list[str], name: str
) -> None:
    # Checked after resolution, on every address the name has.
    with pytest.raises(UnsafeAddress, match="non-public"):
        await guarded.fetch_json(f"http://{name}:{tripwire.port}/")
    assert tripwire.connections == []
    assert attempts == []


@pytest.fixture
def pretend_127_0_0_1_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 (that exact spelling) plays a public server, so a redirect can start there."""
    original = client_module.is_public_address
    monkeypatch.setattr(
        client_module, "is_public_address", lambda a: a == "127.0.0.1" or original(a)
    )


@pytest.mark.usefixtures("pretend_127_0_0_1_is_public")
@pytest.mark.parametrize("host", ["[::ffff:7f00:1]", *EMBEDDED_LOOPBACK[:4]])
async def test_a_redirect_to_an_embedded_private_address_is_refused(
    guarded: FederationClient, tripwire: Tripwire, attempts: list[str], host: str
) -> None:
    target = f"http://{host}:{tripwire.port}/"
    with pytest.raises(UnsafeAddress):
        await guarded.fetch_json(
            f"http://127.0.0.1:{tripwire.port}/redirect?to={quote(target, safe='')}"
        )
    assert tripwire.connections == ["127.0.0.1"]  # the first hop only
    assert attempts == ["127.0.0.1"]
