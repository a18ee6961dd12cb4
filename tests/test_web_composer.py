"""The composer in a browser's shoes: write, preview, publish, edit and delete communiqués
with a content warning and attachments, through the HTML forms (CSRF and all).

Our app runs under uvicorn on loopback (the ``server`` fixture); httpx plays the browser.
Uploaded files land in a per-test media directory, so "nothing stored" is checked on disk
as well as in the Media table.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from server import assemblies, communiques
from server.config import Settings
from server.context import Context
from server.models import Activity, Communique, Media
from tests.conftest import make_settings
from tests.helpers import count
from tests.helpers_web import create_user, csrf_token, field_error, form_error, input_value, log_in
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

ALICE = "alice@example.org"
MALLORY = "mallory@example.org"
HANDLE = "libertyplaza"


@pytest.fixture
def upload_limit() -> int:
    return 8_000_000


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path, upload_limit: int) -> Settings:
    return make_settings(
        database_url,
        f"http://127.0.0.1:{port}",
        media_dir=tmp_path / "media",
        max_upload_bytes=upload_limit,
    )


async def _assembly(ctx: Context, handle: str, owner: int, *, approve: bool = True) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(
            session, handle=handle, name=f"{handle} assembly", requested_by_id=owner
        )
        if approve:
            await assemblies.approve(session, handle, now=ctx.clock())


@pytest.fixture
async def alice(ctx: Context, server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    """Alice, signed in, facilitates the approved assembly @libertyplaza."""
    user_id = await create_user(ctx, ALICE)
    await _assembly(ctx, HANDLE, user_id)
    async with httpx.AsyncClient(base_url=ctx.urls.base) as client:
        await log_in(client, ALICE)
        yield client


def jpeg(size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "JPEG", **save)
    return out.getvalue()


def png(size: tuple[int, int] = (32, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", size, (0, 120, 0, 200)).save(out, "PNG")
    return out.getvalue()


def media_files(settings: Settings) -> list[str]:
    directory = settings.media_dir
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def assert_forms_carry_the_token(page: str) -> None:
    """Every form of the page has the CSRF token (not only the header's log-out form)."""
    tokens = re.findall(r'name="csrf_token" value="([^"]*)"', page)
    assert len(tokens) >= 2 and all(tokens), tokens


async def compose(
    client: httpx.AsyncClient,
    data: dict[str, str],
    files: dict[str, tuple[str, bytes, str]] | None = None,
    *,
    page: str = f"/manage/{HANDLE}/compose",
    token_from: str | None = None,
) -> httpx.Response:
    got = await client.get(token_from or page)
    assert got.status_code == 200, got.text
    body = {"csrf_token": csrf_token(got.text), "language": "en", **data}
    return await client.post(page, data=body, files=files or {})


# -- publishing ---------------------------------------------------------------------------


async def test_publish_with_warning_and_attachments(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    page = await alice.get(f"/manage/{HANDLE}/compose")
    assert page.status_code == 200
    assert 'name="attachment_4"' in page.text and 'name="alt_4"' in page.text
    assert_forms_carry_the_token(page.text)
    response = await compose(
        alice,
        {
            "content": "General strike tomorrow. #GeneralStrike",
            "summary": "police at the square",
            "alt_1": "Banner reading 'We are the 99%'",
            "action": "publish",
        },
        {
            "attachment_1": ("banner.jpg", jpeg(), "image/jpeg"),
            "attachment_2": ("minutes.pdf", b"%PDF-1.4\nminutes\n%%EOF\n", "application/pdf"),
        },
    )
    assert response.status_code == 303, response.text
    async with ctx.sessions() as session:
        item = (await session.scalars(select(Communique))).one()
        files = (await communiques.attachments_of(session, [item.id]))[item.id]
    assert response.headers["location"] == ctx.urls.communique(HANDLE, item.public_id)
    assert item.summary == "police at the square"
    assert item.hashtags == ["GeneralStrike"]
    assert [(m.media_type, m.position, m.alt_text) for m in files] == [
        ("image/jpeg", 0, "Banner reading 'We are the 99%'"),
        ("application/pdf", 1, ""),
    ]
    assert media_files(settings) == sorted(m.file_name for m in files)

    async with ctx.sessions() as session:
        create = (await session.scalars(select(Activity).where(Activity.type == "Create"))).one()
    note = create.document["object"]
    assert note["summary"] == "police at the square" and note["sensitive"] is True
    assert [a["mediaType"] for a in note["attachment"]] == ["image/jpeg", "application/pdf"]
    assert note["attachment"][0]["name"] == "Banner reading 'We are the 99%'"
    assert (note["attachment"][0]["width"], note["attachment"][0]["height"]) == (64, 48)

    # The files are public now that they are published.
    async with httpx.AsyncClient() as anonymous:
        got = await anonymous.get(note["attachment"][0]["url"])
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"


async def test_preview_keeps_what_was_typed_and_the_files(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    response = await compose(
        alice,
        {
            "content": "**Assembly** at 7pm. #OccupyWallStreet",
            "summary": "kettling",
            "alt_1": "The square at night",
            "action": "preview",
        },
        {"attachment_1": ("square.png", png(), "image/png")},
    )
    assert response.status_code == 200, response.text
    page = response.text
    preview = page.split('<section class="preview"', 1)[1].split("</section>", 1)[0]
    assert "<strong>Assembly</strong>" in preview and "kettling" in preview
    assert 'class="mention hashtag"' in preview
    assert input_value(page, "content") == "**Assembly** at 7pm. #OccupyWallStreet"
    assert input_value(page, "summary") == "kettling"
    assert input_value(page, "alt_1") == "The square at night"
    assert await count(ctx, Communique) == 0
    # The file is kept, unattached, and carried on by the page.
    async with ctx.sessions() as session:
        (kept,) = (await session.scalars(select(Media))).all()
    assert kept.communique_id is None and kept.media_type == "image/png"
    assert input_value(page, "kept_1") == kept.public_id
    assert f"/media/{kept.file_name}" in preview
    # Only facilitators see a file that is not published.
    assert (await alice.get(f"/media/{kept.file_name}")).status_code == 200
    async with httpx.AsyncClient(base_url=ctx.urls.base) as anonymous:
        assert (await anonymous.get(f"/media/{kept.file_name}")).status_code == 404

    # Publishing attaches the kept file, with the description as typed now.
    response = await alice.post(
        f"/manage/{HANDLE}/compose",
        data={
            "csrf_token": csrf_token(page),
            "content": "**Assembly** at 7pm.",
            "language": "en",
            "kept_1": kept.public_id,
            "alt_1": "The square, at night",
            "action": "publish",
        },
    )
    assert response.status_code == 303, response.text
    async with ctx.sessions() as session:
        (row,) = (await session.scalars(select(Media))).all()
        item = (await session.scalars(select(Communique))).one()
    assert row.communique_id == item.id and row.alt_text == "The square, at night"
    assert media_files(settings) == [row.file_name]


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("notes.jpg", b"this is not a photo", "image/jpeg"),
        ("page.png", b"<!doctype html><script>alert(1)</script>", "image/png"),
    ],
    ids=["text-named-jpg", "html-claiming-png"],
)
async def test_a_refused_file_stores_nothing(
    ctx: Context,
    settings: Settings,
    alice: httpx.AsyncClient,
    name: str,
    data: bytes,
    content_type: str,
) -> None:
    response = await compose(
        alice,
        {"content": "Minutes attached.", "alt_2": "kept text", "action": "publish"},
        {
            "attachment_1": ("good.jpg", jpeg(), "image/jpeg"),
            "attachment_2": (name, data, content_type),
        },
    )
    assert response.status_code == 400
    assert field_error(response.text, "attachment_2") == (
        f"“{name}” is not a JPEG, PNG, GIF, WebP image or a PDF"
    )
    assert input_value(response.text, "content") == "Minutes attached."
    assert input_value(response.text, "alt_2") == "kept text"
    assert "choose them again" in response.text
    assert await count(ctx, Media) == 0 and await count(ctx, Communique) == 0
    assert media_files(settings) == []


async def test_a_png_named_gif_is_taken_as_png(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    response = await compose(
        alice,
        {"content": "Map of the camp.", "action": "publish"},
        {"attachment_1": ("map.gif", png(), "image/gif")},
    )
    assert response.status_code == 303
    async with ctx.sessions() as session:
        m = (await session.scalars(select(Media))).one()
    assert m.media_type == "image/png" and m.file_name.endswith(".png")


@pytest.mark.parametrize("upload_limit", [20_000])
async def test_an_oversized_file_is_refused_beside_its_field(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    noise = Image.effect_noise((200, 200), 100).convert("RGB")
    out = io.BytesIO()
    noise.save(out, "PNG")
    assert len(out.getvalue()) > 20_000
    response = await compose(
        alice,
        {"content": "Too big.", "action": "publish"},
        {"attachment_3": ("noise.png", out.getvalue(), "image/png")},
    )
    assert response.status_code == 400
    assert field_error(response.text, "attachment_3") == "“noise.png” is larger than 0.02 MB"
    assert await count(ctx, Media) == 0 and await count(ctx, Communique) == 0
    assert media_files(settings) == []


async def test_an_unknown_mention_is_refused_beside_the_text(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    response = await compose(
        alice,
        {"content": "Solidarity with @nobody@127.0.0.1:9", "action": "publish"},
        {"attachment_1": ("good.jpg", jpeg(), "image/jpeg")},
    )
    assert response.status_code == 400
    error = field_error(response.text, "content")
    assert error is not None and error.startswith("cannot find @nobody@127.0.0.1:9")
    assert await count(ctx, Media) == 0 and await count(ctx, Communique) == 0
    assert media_files(settings) == []


async def test_empty_text_and_long_description(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    response = await compose(alice, {"content": "  ", "action": "publish"})
    assert response.status_code == 400
    assert field_error(response.text, "content") == "a communiqué needs some text"
    response = await compose(
        alice,
        {"content": "Hello", "alt_1": "x" * 1501, "action": "publish"},
        {"attachment_1": ("good.jpg", jpeg(), "image/jpeg")},
    )
    assert response.status_code == 400
    assert field_error(response.text, "alt_1") == "a description is at most 1500 characters"
    assert await count(ctx, Media) == 0 and media_files(settings) == []


async def test_without_the_csrf_token_nothing_is_stored(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    response = await alice.post(
        f"/manage/{HANDLE}/compose",
        data={"content": "Forged", "language": "en", "action": "publish"},
        files={"attachment_1": ("good.jpg", jpeg(), "image/jpeg")},
    )
    assert response.status_code == 403
    assert await count(ctx, Media) == 0 and await count(ctx, Communique) == 0
    assert media_files(settings) == []


async def test_a_pending_assembly_cannot_publish(
    ctx: Context, settings: Settings, server: ServerThread
) -> None:
    user_id = await create_user(ctx, ALICE)
    await _assembly(ctx, "newcamp", user_id, approve=False)
    async with httpx.AsyncClient(base_url=ctx.urls.base) as client:
        await log_in(client, ALICE)
        page = await client.get("/manage/newcamp")
        assert page.status_code == 200 and "badge pending" in page.text
        response = await compose(
            client,
            {"content": "Hello", "action": "publish"},
            {"attachment_1": ("good.jpg", jpeg(), "image/jpeg")},
            page="/manage/newcamp/compose",
        )
    assert response.status_code == 400
    assert form_error(response.text) == "newcamp is pending: it cannot publish"
    assert await count(ctx, Media) == 0 and media_files(settings) == []


# -- editing and deleting -----------------------------------------------------------------


async def _publish_two_files(alice: httpx.AsyncClient, ctx: Context) -> Communique:
    response = await compose(
        alice,
        {"content": "Day 1. #occupy", "alt_1": "tents", "alt_2": "kitchen", "action": "publish"},
        {
            "attachment_1": ("tents.jpg", jpeg(), "image/jpeg"),
            "attachment_2": ("kitchen.png", png(), "image/png"),
        },
    )
    assert response.status_code == 303, response.text
    async with ctx.sessions() as session:
        return (await session.scalars(select(Communique))).one()


async def test_edit_removes_adds_and_describes_files(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    item = await _publish_two_files(alice, ctx)
    edit = f"/manage/{HANDLE}/communiques/{item.public_id}/edit"
    async with ctx.sessions() as session:
        tents, kitchen = (await communiques.attachments_of(session, [item.id]))[item.id]
    page = (await alice.get(edit)).text
    assert input_value(page, "content") == "Day 1. #occupy"
    assert input_value(page, "kept_1") == tents.public_id
    assert input_value(page, "kept_2") == kitchen.public_id
    assert input_value(page, "alt_2") == "kitchen"
    assert 'name="remove_1"' in page and "Delete this communiqué" in page
    assert_forms_carry_the_token(page)

    response = await alice.post(
        edit,
        data={
            "csrf_token": csrf_token(page),
            "content": "Day 1, amended.",
            "language": "en",
            "summary": "injuries",
            "kept_1": tents.public_id,
            "alt_1": "tents in the rain",
            "kept_2": kitchen.public_id,
            "alt_2": "kitchen",
            "remove_2": "on",
            "action": "update",
        },
        files={"attachment_3": ("minutes.pdf", b"%PDF-1.5\nx\n%%EOF", "application/pdf")},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == ctx.urls.communique(HANDLE, item.public_id)
    async with ctx.sessions() as session:
        files = (await communiques.attachments_of(session, [item.id]))[item.id]
        update = (await session.scalars(select(Activity).where(Activity.type == "Update"))).one()
        edited = (await session.scalars(select(Communique))).one()
    assert [(m.public_id, m.alt_text) for m in files][0] == (tents.public_id, "tents in the rain")
    assert [m.media_type for m in files] == ["image/jpeg", "application/pdf"]
    assert edited.summary == "injuries" and edited.source == "Day 1, amended."
    assert media_files(settings) == sorted(m.file_name for m in files)  # kitchen's file gone
    note = update.document["object"]
    assert note["summary"] == "injuries" and note["sensitive"] is True
    assert [a.get("name") for a in note["attachment"]] == ["tents in the rain", None]


async def test_delete_removes_the_files(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    item = await _publish_two_files(alice, ctx)
    edit = f"/manage/{HANDLE}/communiques/{item.public_id}/edit"
    response = await compose(
        alice, {}, page=f"/manage/{HANDLE}/communiques/{item.public_id}/delete", token_from=edit
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/manage/{HANDLE}"
    async with ctx.sessions() as session:
        gone = (await session.scalars(select(Communique))).one()
    assert await count(ctx, Activity, Activity.type == "Delete") == 1
    assert gone.deleted_at is not None
    assert await count(ctx, Media) == 0 and media_files(settings) == []
    assert (await alice.get(edit)).status_code == 410


async def test_others_cannot_touch_an_assemblys_communiques(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    item = await _publish_two_files(alice, ctx)
    mallory_id = await create_user(ctx, MALLORY)
    await _assembly(ctx, "mallorys", mallory_id)
    edit = f"/manage/{HANDLE}/communiques/{item.public_id}/edit"
    async with httpx.AsyncClient(base_url=ctx.urls.base) as mallory:
        await log_in(mallory, MALLORY)
        assert (await mallory.get(f"/manage/{HANDLE}")).status_code == 403
        assert (await mallory.get(edit)).status_code == 403
        token = csrf_token((await mallory.get("/manage/mallorys/compose")).text)
        for target in (edit, f"/manage/{HANDLE}/communiques/{item.public_id}/delete"):
            response = await mallory.post(
                target,
                data={"csrf_token": token, "content": "Defaced", "language": "en"},
                files={"attachment_1": ("x.jpg", jpeg(), "image/jpeg")},
            )
            assert response.status_code == 403
        # Through her own assembly's address, the communiqué does not exist.
        own = f"/manage/mallorys/communiques/{item.public_id}/edit"
        assert (await mallory.get(own)).status_code == 404
        response = await mallory.post(
            own, data={"csrf_token": token, "content": "Defaced", "language": "en"}
        )
        assert response.status_code == 404
    async with ctx.sessions() as session:
        after = (await session.scalars(select(Communique))).one()
    assert after.source == "Day 1. #occupy" and after.deleted_at is None
    assert await count(ctx, Media) == 2 and len(media_files(settings)) == 2
    assert await count(ctx, Activity, Activity.type.in_(["Update", "Delete"])) == 0


async def test_manage_lists_communiques(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    item = await _publish_two_files(alice, ctx)
    page = await alice.get(f"/manage/{HANDLE}")
    assert page.status_code == 200
    assert "badge approved" in page.text
    assert f"/manage/{HANDLE}/communiques/{item.public_id}/edit" in page.text
    for tab in ("compose", "followers", "settings", "facilitators"):
        assert f'href="/manage/{HANDLE}/{tab}"' in page.text
    async with httpx.AsyncClient(base_url=ctx.urls.base) as anonymous:
        response = await anonymous.get(f"/manage/{HANDLE}")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


# -- serving files ------------------------------------------------------------------------


async def test_files_are_served_inert(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    item = await _publish_two_files(alice, ctx)
    async with ctx.sessions() as session:
        tents, _kitchen = (await communiques.attachments_of(session, [item.id]))[item.id]
    async with httpx.AsyncClient(base_url=ctx.urls.base) as anonymous:
        got = await anonymous.get(f"/media/{tents.file_name}")
        assert got.status_code == 200
        assert got.headers["content-type"] == "image/jpeg"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert got.headers["content-disposition"] == 'inline; filename="tents.jpg"'
        assert got.content == (settings.media_dir / tents.file_name).read_bytes()
        for bad in ("nothere1234567890ab.jpg", "..%2fsecret", tents.file_name + ".html"):
            assert (await anonymous.get(f"/media/{bad}")).status_code == 404


def _slots_shown_and_folded(page: str) -> tuple[list[str], list[str]]:
    """The attachment fields outside and inside the "Add another attachment" fold."""
    head, _, rest = page.partition('<details class="more-attachments">')
    folded, _, tail = rest.partition("</details>")
    field = re.compile(r'name="(attachment_\d)"')
    return field.findall(head + tail), field.findall(folded)


async def test_the_composer_shows_one_slot_and_folds_the_others(
    ctx: Context, settings: Settings, alice: httpx.AsyncClient
) -> None:
    """One attachment slot on a phone-sized form; the rest open on demand (no JavaScript: a
    <details>). A slot with something in it (a description, an error) is never folded."""
    page = (await alice.get(f"/manage/{HANDLE}/compose")).text
    assert _slots_shown_and_folded(page) == (
        ["attachment_1"],
        ["attachment_2", "attachment_3", "attachment_4"],
    )
    response = await compose(alice, {"content": "Hello", "alt_3": "A banner", "action": "preview"})
    shown, folded = _slots_shown_and_folded(response.text)
    assert shown == ["attachment_1", "attachment_3"] and folded == ["attachment_2", "attachment_4"]
    assert "A banner" in response.text
