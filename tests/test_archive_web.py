"""Assembly archives from the browser: an admin downloads an encrypted export from the
assembly's settings page, and another instance's administrator imports it from the admin
pages, approves it, follows again what it followed and brings its followers over.

Our app runs under uvicorn on loopback (instance A, and B for the import), each with a media
folder of its own; the Mastodon-like peer follows the assembly on A and later receives the
Move that B sends once A is gone. The archive is checked with server/archive.py's own
decrypt and unpack, as an import would read it.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from server import archive, assemblies
from server.config import Settings
from server.context import Context, create_context
from server.models import (
    Assembly,
    AssemblyStatus,
    Communique,
    Following,
    FollowStatus,
    Media,
    MemberRole,
)
from tests.conftest import make_settings
from tests.helpers import approved_assembly, count, post
from tests.helpers_web import add_member, create_user, csrf_token, field_error, log_in
from tests.support.peer import Peer
from tests.support.servers import ServerThread
from tests.test_archive import PASSPHRASE, populate
from tests.test_committees_e2e import drain

pytestmark = pytest.mark.e2e

ADMIN = "admin@example.org"  # an admin of the assembly on A
OPERATOR = "operator@example.org"  # an administrator of instance A, member of nothing
B_OPERATOR = "operator@refugio.example"  # an administrator of instance B
Client = Callable[[], httpx.AsyncClient]


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    """Instance A, with media and exports folders of its own."""
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "a/media")


@pytest.fixture
async def ctx_b(second_database_url: str, port_b: int, tmp_path: Path) -> AsyncIterator[Context]:
    context = await create_context(
        make_settings(
            second_database_url, f"http://127.0.0.1:{port_b}", media_dir=tmp_path / "b/media"
        )
    )
    yield context
    await context.aclose()


@pytest.fixture
async def browser() -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []

    def new(base_url: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=60)
        opened.append(client)
        return client

    yield new
    for client in opened:
        await client.aclose()


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


async def signed_in(
    browser: Callable[[str], httpx.AsyncClient], base_url: str, email: str
) -> httpx.AsyncClient:
    client = browser(base_url)
    await log_in(client, email)
    return client


async def export(
    client: httpx.AsyncClient, handle: str, passphrase: str, again: str | None = None
) -> httpx.Response:
    page = await client.get(f"/manage/{handle}/settings")
    assert page.status_code == 200
    return await client.post(
        f"/manage/{handle}/export",
        data={
            "csrf_token": csrf_token(page.text),
            "export_passphrase": passphrase,
            "export_passphrase_again": passphrase if again is None else again,
        },
    )


def flash(page: str) -> str:
    found = re.search(r'<p class="flash"[^>]*>(.*?)</p>', page, re.S)
    assert found, "no flash message on the page"
    return html.unescape(found.group(1)).strip()


async def test_an_admin_downloads_an_export_that_opens_with_the_passphrase(
    ctx: Context, server: ServerThread, browser: Callable[[str], httpx.AsyncClient]
) -> None:
    old = await populate(ctx)
    await add_member(ctx, await create_user(ctx, ADMIN), "libertyplaza", MemberRole.ADMIN)
    await create_user(ctx, OPERATOR, is_admin=True)
    async with ctx.sessions() as session:
        files = (await session.scalars(select(Media.file_name))).all()

    for email in (ADMIN, OPERATOR):  # its admin, and the instance's administrator
        client = await signed_in(browser, server.base_url, email)
        page = await client.get("/manage/libertyplaza/settings")
        assert "Export this assembly" in page.text
        response = await export(client, "libertyplaza", PASSPHRASE)
        assert response.status_code == 200, field_error(response.text, "export_passphrase")
        today = ctx.clock().strftime("%Y-%m-%d")
        assert response.headers["content-disposition"] == (
            f'attachment; filename="libertyplaza-{today}.interocc"'
        )
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["content-type"] == "application/octet-stream"
        data = response.content
        assert data.startswith(archive.MAGIC) and b"Liberty Plaza" not in data

        members = archive.unpack(archive.decrypt(data, PASSPHRASE))
        assert set(members) == set(archive.JSON_MEMBERS) | {f"media/{f}" for f in files}
        opened = archive.open_archive(data, PASSPHRASE)
        assert (opened.actor_uri, opened.handle) == (old.actor_uri, "libertyplaza")
        assert (opened.private_key_pem, opened.public_key_pem) == (
            old.private_key_pem,
            old.public_key_pem,
        )
        assert [c.url for c in opened.communiques] == [
            old.founding_url,
            old.photo_url,
            old.ratified_url,
            old.poll_url,
        ]
        with pytest.raises(archive.ArchiveError, match="wrong passphrase"):
            archive.decrypt(data, PASSPHRASE + "!")


@pytest.mark.parametrize(
    ("passphrase", "again", "field", "says"),
    [
        (PASSPHRASE, PASSPHRASE + " ", "export_passphrase_again", "the two passphrases differ"),
        ("too short", "too short", "export_passphrase", "at least 12 characters"),
        ("x" * 1025, "x" * 1025, "export_passphrase", "at most 1024 characters"),
    ],
)
async def test_an_export_needs_the_same_long_enough_passphrase_twice(
    ctx: Context,
    server: ServerThread,
    browser: Callable[[str], httpx.AsyncClient],
    passphrase: str,
    again: str,
    field: str,
    says: str,
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await add_member(ctx, await create_user(ctx, ADMIN), "libertyplaza", MemberRole.ADMIN)
    client = await signed_in(browser, server.base_url, ADMIN)
    response = await export(client, "libertyplaza", passphrase, again)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "content-disposition" not in response.headers
    assert says in (field_error(response.text, field) or "")
    assert passphrase not in response.text  # never shown again


async def test_an_instance_admin_imports_an_archive_then_refollows_and_recovers(
    ctx: Context,
    server: ServerThread,
    ctx_b: Context,
    server_b: ServerThread,
    peer: Peer,
    browser: Callable[[str], httpx.AsyncClient],
) -> None:
    # On A: the assembly, followed by alice on the peer, following bob there.
    await approved_assembly(ctx, "plaza", summary="The plaza's assembly.")
    old, new = ctx.urls.actor("plaza"), ctx_b.urls.actor("plaza_libre")
    alice, bob = peer.add_actor("alice"), peer.add_actor("bob")
    await peer.follow(alice, f"plaza@{ctx.urls.host}")
    await drain(ctx)
    assert f"{old}#main-key" in peer.key_cache  # the peer verified A's Accept
    await post(ctx, "plaza", "Before the eviction.")
    async with ctx.sessions() as session, session.begin():
        plaza = await assemblies.get(session, "plaza")
        session.add(
            Following(
                assembly_id=plaza.id,
                target_uri=bob.id,
                inbox_uri=bob.inbox,
                follow_uri=f"{old}/follows/bob",
                status=FollowStatus.ACCEPTED,
            )
        )
    await add_member(ctx, await create_user(ctx, ADMIN), "plaza", MemberRole.ADMIN)
    a_admin = await signed_in(browser, server.base_url, ADMIN)
    sealed = (await export(a_admin, "plaza", PASSPHRASE)).content
    server.stop()  # A is gone for good

    await approved_assembly(ctx_b, "plaza")  # a namesake: the handle is taken on B
    await create_user(ctx_b, B_OPERATOR, is_admin=True)
    operator = await signed_in(browser, server_b.base_url, B_OPERATOR)
    page = await operator.get("/admin/import")
    assert page.status_code == 200 and 'aria-current="page">Import<' in page.text

    async def send(handle: str, passphrase: str) -> httpx.Response:
        return await operator.post(
            "/admin/import",
            data={"csrf_token": csrf_token(page.text), "handle": handle, "passphrase": passphrase},
            files={"archive": ("plaza.interocc", sealed, "application/octet-stream")},
        )

    taken = await send("plaza", PASSPHRASE)
    assert taken.status_code == 409
    assert "already exists" in (field_error(taken.text, "handle") or "")
    wrong = await send("plaza_libre", "not the passphrase at all")
    assert wrong.status_code == 400
    assert field_error(wrong.text, "archive") == archive.WRONG_PASSPHRASE
    assert await count(ctx_b, Assembly) == 1

    done = await send("plaza_libre", PASSPHRASE)
    assert done.status_code == 303 and done.headers["location"] == "/admin/assemblies"
    review = await operator.get("/admin/assemblies")
    notice = flash(review.text)
    assert notice.startswith("@plaza_libre is imported, pending: 1 communiqués, 0 letters")
    assert "1 follows to send again, 1 followers to recover" in notice
    assert "Approve it, then press Follow again and Recover followers" in notice
    async with ctx_b.sessions() as session:
        imported = await assemblies.get(session, "plaza_libre")
        [text] = (
            await session.scalars(
                select(Communique.source).where(Communique.assembly_id == imported.id)
            )
        ).all()
    assert imported.status is AssemblyStatus.PENDING
    assert imported.also_known_as == [old] and imported.summary == "The plaza's assembly."
    assert text.startswith("Before the eviction.")
    assert f"*First published at <{old}/communiques/" in text
    assert "/admin/assemblies/plaza_libre/refollow" not in review.text  # not before approval

    approve = await operator.post(
        "/admin/assemblies/plaza_libre/approve", data={"csrf_token": csrf_token(review.text)}
    )
    assert approve.status_code == 303
    review = await operator.get("/admin/assemblies")
    assert "/admin/assemblies/plaza_libre/refollow" in review.text
    assert "/admin/assemblies/plaza_libre/recover" in review.text
    assert "/admin/assemblies/plaza/refollow" not in review.text  # not imported

    token = {"csrf_token": csrf_token(review.text)}
    refollowed = await operator.post("/admin/assemblies/plaza_libre/refollow", data=token)
    assert refollowed.status_code == 303
    notice = flash((await operator.get("/admin/assemblies")).text)
    assert notice == "@plaza_libre: 1 follow request(s) sent, 0 already followed, 0 not followed."
    async with ctx_b.sessions() as session:
        follows = (
            await session.scalars(select(Following).where(Following.assembly_id == imported.id))
        ).all()
    assert [(f.target_uri, f.status) for f in follows] == [(bob.id, FollowStatus.PENDING)]

    recovered = await operator.post("/admin/assemblies/plaza_libre/recover", data=token)
    assert recovered.status_code == 303
    notice = flash((await operator.get("/admin/assemblies")).text)
    assert notice == (
        "@plaza_libre: 1 server(s) took the Move from its old identity; "
        "0 refused it or could not be reached."
    )
    [move] = peer.inbox_activities("Move")  # verified with the key the peer cached from A
    assert (move["actor"], move["object"], move["target"]) == (old, old, new)
