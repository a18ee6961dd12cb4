"""Attachments and content warnings in federation: the Note carries its files as Mastodon
does (``Document`` with mediaType, url, name = alt text, width, height, in order) and its
content warning as ``summary`` with ``sensitive``; edits may keep, remove or add files."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from starlette.datastructures import Headers, UploadFile

from server import assemblies, cli, communiques, media, worker
from server.activitypub.vocab import build_attachment, build_note
from server.config import Settings, load_settings
from server.context import Context, create_context
from server.errors import BadRequest
from server.models import Media, MediaPurpose
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly, count
from tests.helpers_web import create_user, csrf_token, log_in
from tests.support.peer import Peer
from tests.support.servers import ServerThread

NOW = datetime(2011, 9, 17, 15, 0, tzinfo=UTC)


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "media")


def png_upload(name: str = "square.png", size: tuple[int, int] = (30, 20)) -> UploadFile:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    out.seek(0)
    return UploadFile(file=out, filename=name, headers=Headers({"content-type": "image/png"}))


async def stored(ctx: Context, handle: str, name: str = "square.png", alt: str = "") -> Media:
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        return await media.store_upload(
            session,
            ctx.settings,
            assembly=assembly,
            upload=png_upload(name),
            purpose=MediaPurpose.ATTACHMENT,
            alt_text=alt,
            now=ctx.clock(),
        )


# -- the documents (pure) -----------------------------------------------------------------


def test_note_without_warning_or_files() -> None:
    note = build_note(
        note_id="https://i.example/n/1",
        actor_id="https://i.example/a",
        followers="https://i.example/a/followers",
        content_html="<p>Hi</p>",
        language="en",
        published=NOW,
        updated=None,
        hashtags=[],
    )
    assert (note["summary"], note["sensitive"], note["attachment"]) == (None, False, [])
    assert note["contentMap"] == {"en": "<p>Hi</p>"}


def test_note_with_warning_and_files() -> None:
    files = [
        build_attachment(
            url="https://i.example/media/a.jpg",
            media_type="image/jpeg",
            name="Tents",
            width=800,
            height=600,
        ),
        build_attachment(url="https://i.example/media/b.pdf", media_type="application/pdf"),
    ]
    note = build_note(
        note_id="https://i.example/n/1",
        actor_id="https://i.example/a",
        followers="https://i.example/a/followers",
        content_html="<p>Hi</p>",
        language="es",
        published=NOW,
        updated=None,
        hashtags=[],
        summary="police",
        attachments=files,
    )
    assert (note["summary"], note["sensitive"]) == ("police", True)
    assert note["attachment"] == [
        {
            "type": "Document",
            "mediaType": "image/jpeg",
            "url": "https://i.example/media/a.jpg",
            "name": "Tents",
            "width": 800,
            "height": 600,
        },
        {
            "type": "Document",
            "mediaType": "application/pdf",
            "url": "https://i.example/media/b.pdf",
        },
    ]
    assert note["contentMap"] == {"es": "<p>Hi</p>"}


def test_preview_renders_as_publishing_does() -> None:
    html = communiques.render_preview("**Hi** <script>x</script> #Strike")
    assert html.startswith("<p><strong>Hi</strong> &lt;script&gt;")
    assert 'href="/tags/strike"' in html


# -- publish and edit (domain) ------------------------------------------------------------


async def test_publish_links_files_in_order_and_edit_rearranges_them(ctx: Context) -> None:
    await approved_assembly(ctx, "libertyplaza")
    first = await stored(ctx, "libertyplaza", "one.png", alt="one")
    second = await stored(ctx, "libertyplaza", "two.png")
    async with ctx.sessions() as session, session.begin():
        published = await communiques.publish(
            session,
            ctx.urls,
            handle="libertyplaza",
            source="With files.",
            summary="  a  warning ",
            attachments=[second, first],
            now=ctx.clock(),
        )
    note = published.activity.document["object"]
    assert note["summary"] == "a warning" and note["sensitive"] is True
    assert [a["url"] for a in note["attachment"]] == [
        media.media_url(ctx.urls, second),
        media.media_url(ctx.urls, first),
    ]
    assert note["attachment"][1]["name"] == "one" and "name" not in note["attachment"][0]
    assert (note["attachment"][0]["width"], note["attachment"][0]["height"]) == (30, 20)

    # The fetched Note carries the same attachments.
    async with ctx.sessions() as session:
        assembly, item = await communiques.get(
            session, "libertyplaza", published.communique.public_id
        )
        fetched = await communiques.note_of(session, ctx.urls, assembly, item)
    assert fetched["attachment"] == note["attachment"]

    # Edit: keep `first`, drop `second`, add `third`, lift the warning.
    third = await stored(ctx, "libertyplaza", "three.png")
    async with ctx.sessions() as session, session.begin():
        edited = await communiques.edit(
            session,
            ctx.urls,
            url=published.url,
            source="Fewer files.",
            summary=None,
            attachments=[first, third],
            now=ctx.clock(),
        )
    assert [m.id for m in edited.removed_media] == [second.id]
    note = edited.activity.document["object"]
    assert (note["summary"], note["sensitive"]) == (None, False)
    assert [a["url"] for a in note["attachment"]] == [
        media.media_url(ctx.urls, first),
        media.media_url(ctx.urls, third),
    ]
    assert await count(ctx, Media) == 2

    # Edit without attachments (the command line's edit) keeps files and warning as they are.
    async with ctx.sessions() as session, session.begin():
        again = await communiques.edit(
            session, ctx.urls, url=published.url, source="Text only.", now=ctx.clock()
        )
    assert len(again.activity.document["object"]["attachment"]) == 2
    assert again.removed_media == ()

    # Delete takes the rows; the caller removes the files.
    async with ctx.sessions() as session, session.begin():
        deleted = await communiques.delete(session, ctx.urls, url=published.url, now=ctx.clock())
    assert {m.id for m in deleted.removed_media} == {first.id, third.id}
    assert await count(ctx, Media) == 0


async def test_what_cannot_be_attached(ctx: Context) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await approved_assembly(ctx, "oakland", name="Oakland General Assembly")
    theirs = await stored(ctx, "oakland")
    files = [await stored(ctx, "libertyplaza", f"{i}.png") for i in range(5)]
    cases = [
        ([theirs], "this file cannot be attached to this assembly's communiqués"),
        (files, "a communiqué has at most 4 attachments"),
        ([files[0], files[0]], "the same file is attached twice"),
    ]
    for attachments, message in cases:
        with pytest.raises(BadRequest) as caught:
            async with ctx.sessions() as session, session.begin():
                await communiques.publish(
                    session,
                    ctx.urls,
                    handle="libertyplaza",
                    source="x",
                    attachments=attachments,
                    now=ctx.clock(),
                )
        assert caught.value.message == message
    async with ctx.sessions() as session, session.begin():
        await communiques.publish(
            session, ctx.urls, handle="libertyplaza", source="x", attachments=[files[0]], now=NOW
        )
    with pytest.raises(BadRequest, match="already attached"):
        async with ctx.sessions() as session, session.begin():
            await communiques.publish(
                session,
                ctx.urls,
                handle="libertyplaza",
                source="y",
                attachments=[files[0]],
                now=NOW,
            )
    with pytest.raises(BadRequest) as caught:
        async with ctx.sessions() as session, session.begin():
            await communiques.publish(
                session, ctx.urls, handle="libertyplaza", source="y", summary="!" * 501, now=NOW
            )
    assert caught.value.field == "summary"


# -- end to end: a Mastodon-like follower -------------------------------------------------


@pytest.fixture
def peer() -> Iterator[Peer]:
    with Peer(name="mastodon") as p:
        yield p


@pytest.fixture
async def alice(ctx: Context, server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    user_id = await create_user(ctx, "alice@example.org")
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(
            session, handle="libertyplaza", name="Liberty Plaza", requested_by_id=user_id
        )
        await assemblies.approve(session, "libertyplaza", now=ctx.clock())
    async with httpx.AsyncClient(base_url=ctx.urls.base) as client:
        await log_in(client, "alice@example.org")
        yield client


@pytest.mark.e2e
async def test_follower_receives_files_warning_and_edits(
    ctx: Context, peer: Peer, alice: httpx.AsyncClient
) -> None:
    bob = peer.add_actor("bob")
    await peer.follow(bob, f"libertyplaza@{ctx.urls.host}")
    assert await worker.run_once(ctx) == 1  # the Accept

    compose = "/manage/libertyplaza/compose"
    token = csrf_token((await alice.get(compose)).text)
    out = io.BytesIO()
    Image.new("RGB", (120, 80), (200, 0, 0)).save(out, "JPEG")
    response = await alice.post(
        compose,
        data={
            "csrf_token": token,
            "content": "March at noon. #GeneralStrike",
            "language": "en",
            "summary": "crowds",
            "alt_1": "Red banner",
            "action": "publish",
        },
        files={"attachment_1": ("banner.jpg", out.getvalue(), "image/jpeg")},
    )
    assert response.status_code == 303, response.text
    url = response.headers["location"]
    assert await worker.run_once(ctx) == 1
    (create,) = [r for r in peer.received if r.json and r.json.get("type") == "Create"]
    assert create.verified, create.reason
    note = create.json["object"]
    assert note["id"] == url
    assert (note["summary"], note["sensitive"]) == ("crowds", True)
    (attachment,) = note["attachment"]
    assert attachment["type"] == "Document" and attachment["mediaType"] == "image/jpeg"
    assert attachment["name"] == "Red banner"
    assert (attachment["width"], attachment["height"]) == (120, 80)
    assert {"type": "Hashtag", "href": ctx.urls.tag("GeneralStrike"), "name": "#GeneralStrike"} in (
        note["tag"]
    )
    # The follower's server fetches the file to show it.
    async with httpx.AsyncClient() as http:
        got = await http.get(attachment["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(got.content)).size == (120, 80)

    # Edit: the file's description changes and the warning goes: an Update follows.
    public_id = url.rsplit("/", 1)[1]
    edit = f"/manage/libertyplaza/communiques/{public_id}/edit"
    page = (await alice.get(edit)).text
    kept = page.split('name="kept_1" value="', 1)[1].split('"', 1)[0]
    response = await alice.post(
        edit,
        data={
            "csrf_token": csrf_token(page),
            "content": "March at noon, from the square. #GeneralStrike",
            "language": "en",
            "summary": "",
            "kept_1": kept,
            "alt_1": "Red banner with a raised fist",
            "action": "update",
        },
    )
    assert response.status_code == 303, response.text
    assert await worker.run_once(ctx) == 1
    (update,) = [r for r in peer.received if r.json and r.json.get("type") == "Update"]
    assert update.verified, update.reason
    note = update.json["object"]
    assert note["id"] == url and "updated" in note
    assert (note["summary"], note["sensitive"]) == (None, False)
    assert [a["name"] for a in note["attachment"]] == ["Red banner with a raised fist"]
    assert note["attachment"][0]["url"] == attachment["url"]


# -- the command line ---------------------------------------------------------------------


def test_cli_post_attaches_files_or_stores_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    env = {
        "INTEROCC_DATABASE_URL": database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": "http://127.0.0.1:8765",
        "INTEROCC_MEDIA_DIR": str(tmp_path / "media"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()

    async def setup() -> None:
        ctx = await create_context(settings)
        try:
            await approved_assembly(ctx, "libertyplaza")
        finally:
            await ctx.aclose()

    async def rows() -> list[tuple[str, int | None, str]]:
        ctx = await create_context(settings)
        try:
            async with ctx.sessions() as session:
                found = (await session.scalars(select(Media).order_by(Media.id))).all()
                return [(m.media_type, m.communique_id, m.alt_text) for m in found]
        finally:
            await ctx.aclose()

    asyncio.run(setup())
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (12, 12), (0, 0, 0)).save(photo, "JPEG")
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")

    argv = ["post", "libertyplaza", "--text", "Photo.", "--attach", str(photo), "--alt", "Dark"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.startswith("http://127.0.0.1:8765/actors/libertyplaza/")
    ((kind, communique_id, alt),) = asyncio.run(rows())
    assert (kind, alt) == ("image/jpeg", "Dark") and communique_id is not None
    assert len(list((tmp_path / "media").iterdir())) == 1

    argv = ["post", "libertyplaza", "--text", "Bad.", "--attach", str(photo)]
    assert cli.main([*argv, "--attach", str(notes)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "interocc: “notes.jpg” is not a JPEG, PNG, GIF, WebP image or a PDF\n"
    assert len(asyncio.run(rows())) == 1
    assert len(list((tmp_path / "media").iterdir())) == 1
