"""Who may export an assembly, schedule its exports, download its kept archives, import an
archive, and follow again or recover from the web, and what a request can name.

An archive holds the assembly's private key and its letters: only the assembly's admins and
the instance's administrators may make or download one, and only the instance's
administrators may import one. Everyone else is refused before the form is read, and
nothing changes: no archive is made, no schedule set or stopped, no kept archive deleted,
no assembly imported. A download names an archive of the listing the server builds: a path,
a dot-dot, a link or another assembly's archive is not found. The key a schedule keeps is
shown on no page. Our app runs under uvicorn on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import html
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server import archive, assemblies, exports
from server.config import Settings
from server.context import Context
from server.errors import NotFound
from server.models import Assembly, ExportSchedule, MemberRole
from server.web import archives as web_archives
from tests.conftest import make_settings
from tests.helpers import approved_assembly, count
from tests.helpers_web import add_member, create_user, csrf_token, log_in
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

HANDLE, NEIGHBOURS = "libertyplaza", "tahrir"
ADMIN = "admin@example.org"  # an admin of libertyplaza
FACILITATOR = "facilitator@example.org"  # a facilitator of libertyplaza, not an admin
NEIGHBOUR = "neighbour@example.org"  # an admin of another assembly
OPERATOR = "operator@example.org"  # an administrator of the instance
PASSPHRASE = "we are the ninety-nine percent"
CHEAP = archive.ScryptParams(log2_n=14, r=8, p=1)
T0 = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
KEPT = "20260301T040000Z.interocc"
Client = Callable[[], httpx.AsyncClient]


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "media")


@pytest.fixture
async def browser(server: ServerThread) -> AsyncIterator[Client]:
    opened: list[httpx.AsyncClient] = []

    def new() -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=server.base_url,
            trust_env=False,
            timeout=60,
            headers={"Accept": "text/html"},  # as a browser asks for pages
        )
        opened.append(client)
        return client

    yield new
    for client in opened:
        await client.aclose()


@pytest.fixture
async def scene(ctx: Context, server: ServerThread) -> bytes:
    """Two assemblies, each with its scheduled exports on and one archive kept; its people.
    Returns the key libertyplaza's schedule keeps."""
    for handle in (HANDLE, NEIGHBOURS):
        await approved_assembly(ctx, handle)
    key = archive.derive_key(PASSPHRASE, params=CHEAP)
    async with ctx.sessions() as session, session.begin():
        for handle in (HANDLE, NEIGHBOURS):
            assembly = await assemblies.get(session, handle)
            await exports.schedule(
                session, assembly=assembly, keep=3, key=key, user_id=None, now=T0
            )
    assert len(await exports.run_due(ctx, now=T0)) == 2
    for email, handle, role in (
        (ADMIN, HANDLE, MemberRole.ADMIN),
        (FACILITATOR, HANDLE, MemberRole.FACILITATOR),
        (NEIGHBOUR, NEIGHBOURS, MemberRole.ADMIN),
    ):
        await add_member(ctx, await create_user(ctx, email), handle, role)
    await create_user(ctx, OPERATOR, is_admin=True)
    return key.key


async def signed_in(browser: Client, email: str) -> httpx.AsyncClient:
    client = browser()
    await log_in(client, email)
    return client


def forms() -> dict[str, dict[str, str]]:
    """Each form a refused person might send, filled so that it would do something."""
    return {
        f"/manage/{HANDLE}/export": {
            "export_passphrase": PASSPHRASE,
            "export_passphrase_again": PASSPHRASE,
        },
        f"/manage/{HANDLE}/export-schedule": {
            "keep": "1",
            "schedule_passphrase": "another passphrase, theirs",
            "schedule_passphrase_again": "another passphrase, theirs",
        },
        f"/manage/{HANDLE}/export-schedule/stop": {},
    }


async def unchanged(ctx: Context, key: bytes) -> None:
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(ExportSchedule))).all()
    assert [(r.keep, r.key) for r in rows] == [(3, key), (3, key)]
    for handle in (HANDLE, NEIGHBOURS):
        assert [k.name for k in exports.kept(ctx.settings, handle)] == [KEPT]


@pytest.mark.parametrize(
    ("email", "says"),
    [
        (FACILITATOR, "only this assembly's admins"),
        (NEIGHBOUR, "not a facilitator of this assembly"),
    ],
)
async def test_only_its_admins_export_schedule_and_download(
    ctx: Context, scene: bytes, browser: Client, email: str, says: str
) -> None:
    client = await signed_in(browser, email)
    page = await client.get(f"/manage/{HANDLE}/settings")
    assert page.status_code == 403 and says in html.unescape(page.text).lower()
    token = csrf_token(page.text)  # a valid token of their own
    for path, data in forms().items():
        response = await client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 403, path
        assert "content-disposition" not in response.headers, path
        assert says in html.unescape(response.text).lower(), path
    download = await client.get(f"/manage/{HANDLE}/archives/{KEPT}")
    assert download.status_code == 403 and not download.content.startswith(archive.MAGIC)
    await unchanged(ctx, scene)


async def test_an_anonymous_visitor_is_sent_to_log_in(
    ctx: Context, scene: bytes, browser: Client
) -> None:
    visitor = browser()
    token = csrf_token((await visitor.get("/login")).text)
    for path, data in forms().items():
        response = await visitor.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/login?next={path}"
    for path in (f"/manage/{HANDLE}/archives/{KEPT}", "/admin/import"):
        response = await visitor.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    await unchanged(ctx, scene)


async def test_a_form_without_our_csrf_token_is_refused(
    ctx: Context, scene: bytes, browser: Client
) -> None:
    admin = await signed_in(browser, ADMIN)
    foreign = csrf_token((await browser().get("/login")).text)  # another visitor's token
    for path, data in forms().items():
        for sent in (data, {"csrf_token": foreign, **data}):
            response = await admin.post(path, data=sent)
            assert response.status_code == 403, path
            assert "did not come from this site" in response.text
            assert "content-disposition" not in response.headers
    await unchanged(ctx, scene)


async def raw_get(client: httpx.AsyncClient, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (an HTTP client would resolve its dot segments, as
    ``curl --path-as-is`` does not), with ``client``'s cookies: the status and the body."""
    url = client.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nCookie: {cookies}\r\n"
        "Accept: text/html\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../../interocc.sqlite3",
        f"../{NEIGHBOURS}/{KEPT}",
        "%2e%2e",
        "..%2f..%2finterocc.sqlite3",
        "%2e%2e%2f%2e%2e%2fmedia",
        f"..%2f{NEIGHBOURS}%2f{KEPT}",
        f"{KEPT}%00.txt",
        "20260301T040000Z.INTEROCC",
        "link.interocc",
        "20990101T000000Z.interocc",  # a link, with an archive's name, to a secret file
        "20990202T000000Z.interocc",  # a folder with an archive's name
        "notes.txt",
    ],
)
async def test_a_download_names_only_an_archive_of_the_listing(
    ctx: Context, scene: bytes, browser: Client, tmp_path: Path, name: str
) -> None:
    folder = exports.folder(ctx.settings, HANDLE)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for download")
    (folder / "notes.txt").write_text("not an archive")
    os.symlink(secret, folder / "20990101T000000Z.interocc")
    os.symlink(secret, folder / "link.interocc")
    (folder / "20990202T000000Z.interocc").mkdir()
    admin = await signed_in(browser, ADMIN)
    status, body = await raw_get(admin, f"/manage/{HANDLE}/archives/{name}")
    assert status == 404, body[:200]
    assert b"not for download" not in body and archive.MAGIC not in body
    # The listing the page shows, and the only names served, are the real archives.
    assert [k.name for k in exports.kept(ctx.settings, HANDLE)] == [KEPT]
    ok = await admin.get(f"/manage/{HANDLE}/archives/{KEPT}")
    assert ok.status_code == 200 and ok.content.startswith(archive.MAGIC)


def test_the_kept_file_lookup_takes_no_path(tmp_path: Path) -> None:
    settings = make_settings("sqlite+aiosqlite:///unused", media_dir=tmp_path / "media")
    folder = settings.exports_root / HANDLE
    folder.mkdir(parents=True)
    (folder / KEPT).write_bytes(b"archive")
    assert exports.kept_file(settings, HANDLE, KEPT) == folder / KEPT
    for name in ("", ".", "..", f"../{HANDLE}/{KEPT}", f"./{KEPT}", f"/{KEPT}", str(folder / KEPT)):
        with pytest.raises(NotFound):
            exports.kept_file(settings, HANDLE, name)
    for handle in ("..", "../x", "a/b", "", "UPPER"):
        with pytest.raises(NotFound):
            exports.kept_file(settings, handle, KEPT)


async def test_the_kept_key_appears_on_no_page(ctx: Context, scene: bytes, browser: Client) -> None:
    spellings = [
        scene.hex(),
        scene.hex().upper(),
        base64.b64encode(scene).decode(),
        base64.urlsafe_b64encode(scene).decode(),
        base64.b64encode(scene).decode().rstrip("="),
        scene.decode("latin-1"),
    ]
    seen = 0
    for email, paths in (
        (ADMIN, [f"/manage/{HANDLE}/settings", "/dashboard"]),
        (
            OPERATOR,
            [f"/manage/{HANDLE}/settings", "/admin", "/admin/assemblies", "/admin/import"],
        ),
    ):
        client = await signed_in(browser, email)
        for path in paths:
            page = await client.get(path)
            assert page.status_code == 200, path
            assert all(s not in page.text for s in spellings), path
            seen += 1
        # A refused schedule form shows the page again: no key, no passphrase.
        token = csrf_token((await client.get(f"/manage/{HANDLE}/settings")).text)
        refused = await client.post(
            f"/manage/{HANDLE}/export-schedule",
            data={
                "csrf_token": token,
                "keep": "3",
                "schedule_passphrase": PASSPHRASE,
                "schedule_passphrase_again": PASSPHRASE + "?",
            },
        )
        assert refused.status_code == 400
        assert all(s not in refused.text for s in spellings)
        assert PASSPHRASE not in refused.text
    assert seen == 6


async def test_only_the_instance_administrators_import_refollow_and_recover(
    ctx: Context, scene: bytes, browser: Client
) -> None:
    async with ctx.sessions() as session, session.begin():
        exported = await archive.export_assembly(
            session, ctx.settings, ctx.urls, handle=HANDLE, now=T0
        )
    sealed = archive.encrypt(exported.zip_data, PASSPHRASE, params=CHEAP)
    for email in (ADMIN, FACILITATOR):
        client = await signed_in(browser, email)
        page = await client.get("/admin/import")
        assert page.status_code == 403
        assert "only the instance's administrators" in html.unescape(page.text).lower()
        token = csrf_token(page.text)
        response = await client.post(
            "/admin/import",
            data={"csrf_token": token, "handle": "stolen", "passphrase": PASSPHRASE},
            files={"archive": ("a.interocc", sealed, "application/octet-stream")},
        )
        assert response.status_code == 403
        for action in ("refollow", "recover"):
            response = await client.post(
                f"/admin/assemblies/{HANDLE}/{action}", data={"csrf_token": token}
            )
            assert response.status_code == 403, action
    assert await count(ctx, Assembly) == 2


async def test_an_import_larger_than_allowed_is_refused_while_it_arrives(
    ctx: Context, scene: bytes, browser: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bound, made small for the test (the server runs in this process).
    monkeypatch.setattr(web_archives, "MAX_IMPORT_BYTES", 100_000)
    operator = await signed_in(browser, OPERATOR)
    token = csrf_token((await operator.get("/admin/import")).text)
    boundary = "interocc-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="handle"\r\n\r\nbig\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="passphrase"\r\n\r\n'
            f"{PASSPHRASE}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="a.interocc"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + archive.MAGIC
        + os.urandom(200_000)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    declared = await operator.post("/admin/import", content=body, headers=headers)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    try:
        streamed = await operator.post("/admin/import", content=chunks(), headers=headers)
    except httpx.WriteError:  # the server may close before the client finished writing
        pass
    else:
        assert streamed.status_code == 413
    assert await count(ctx, Assembly) == 2
    async with ctx.sessions() as session:
        assert await assemblies.find(session, "big") is None
