"""Uploads are judged by their content: what decodes as an image is re-encoded without its
metadata, a PDF must look like one, everything else is refused with a message for the form
field — and a refusal leaves neither a Media row nor a file behind."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from starlette.datastructures import Headers, UploadFile

from server import assemblies, media
from server.config import Settings
from server.context import Context
from server.errors import BadRequest
from server.models import Assembly, Media, MediaPurpose
from tests.helpers import count

GPS = {1: "N", 2: (40.0, 42.0, 36.0), 3: "W", 4: (74.0, 0.0, 40.0)}  # Liberty Plaza
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


@pytest.fixture
def media_settings(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(settings, media_dir=tmp_path / "media")


@pytest.fixture
async def assembly(ctx: Context) -> AsyncIterator[Assembly]:
    async with ctx.sessions() as session, session.begin():
        found = await assemblies.create(session, handle="libertyplaza", name="Liberty Plaza")
    yield found


def upload(data: bytes, name: str, content_type: str = "image/jpeg") -> UploadFile:
    return UploadFile(
        file=io.BytesIO(data), filename=name, headers=Headers({"content-type": content_type})
    )


def image_bytes(kind: str, size: tuple[int, int] = (40, 20), **save: object) -> bytes:
    out = io.BytesIO()
    mode = "RGBA" if kind in {"PNG", "WEBP"} else "RGB"
    Image.new(mode, size, (10, 120, 200)).save(out, kind, **save)
    return out.getvalue()


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"  # camera make
    exif[0x8825] = GPS
    return exif


async def store(
    ctx: Context,
    settings: Settings,
    assembly: Assembly,
    file: UploadFile,
    purpose: MediaPurpose = MediaPurpose.ATTACHMENT,
    alt_text: str = "",
) -> Media:
    async with ctx.sessions() as session, session.begin():
        return await media.store_upload(
            session,
            settings,
            assembly=assembly,
            upload=file,
            purpose=purpose,
            alt_text=alt_text,
            field="attachment_1",
            now=ctx.clock(),
        )


async def refused(
    ctx: Context,
    settings: Settings,
    assembly: Assembly,
    file: UploadFile,
    purpose: MediaPurpose = MediaPurpose.ATTACHMENT,
    alt_text: str = "",
) -> str:
    with pytest.raises(BadRequest) as caught:
        await store(ctx, settings, assembly, file, purpose, alt_text)
    assert caught.value.field == "attachment_1"
    assert await count(ctx, Media) == 0
    assert stored_files(settings) == []
    return caught.value.message


def stored_files(settings: Settings) -> list[Path]:
    return sorted(settings.media_dir.iterdir()) if settings.media_dir.exists() else []


def reopen(settings: Settings, m: Media) -> Image.Image:
    return Image.open(settings.media_dir / m.file_name)


# -- images are cleaned -------------------------------------------------------------------


async def test_jpeg_loses_gps_and_camera_and_is_turned_upright(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    original = image_bytes("JPEG", (40, 20), exif=exif_with_gps(orientation=6), comment=b"cam")
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the test has GPS
    m = await store(ctx, media_settings, assembly, upload(original, "IMG_0001.JPG"), alt_text="A")
    assert (m.media_type, m.width, m.height) == ("image/jpeg", 20, 40)  # rotated 90°
    assert m.file_name.endswith(".jpg") and m.original_name == "IMG_0001.JPG"
    assert m.alt_text == "A" and m.assembly_id == assembly.id and m.communique_id is None
    data = (media_settings.media_dir / m.file_name).read_bytes()
    assert m.size == len(data)
    assert b"Exif" not in data and b"PhoneMaker" not in data and b"cam" not in data
    with reopen(media_settings, m) as img:
        assert dict(img.getexif()) == {}
        assert img.size == (20, 40)
    assert [p.name for p in stored_files(media_settings)] == [m.file_name]


@pytest.mark.parametrize("kind", ["PNG", "WEBP"])
async def test_png_and_webp_lose_exif(
    ctx: Context, media_settings: Settings, assembly: Assembly, kind: str
) -> None:
    data = image_bytes(kind, exif=exif_with_gps())
    m = await store(ctx, media_settings, assembly, upload(data, f"x.{kind.lower()}"))
    assert m.media_type == f"image/{kind.lower()}"
    stored = (media_settings.media_dir / m.file_name).read_bytes()
    assert b"PhoneMaker" not in stored
    with reopen(media_settings, m) as img:
        assert "exif" not in img.info and dict(img.getexif()) == {}


async def test_animated_gif_keeps_its_frames_not_its_comment(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green", "blue")]
    out = io.BytesIO()
    frames[0].save(
        out, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0, comment=b"at 5th"
    )
    m = await store(ctx, media_settings, assembly, upload(out.getvalue(), "chant.gif"))
    assert m.media_type == "image/gif"
    assert b"at 5th" not in (media_settings.media_dir / m.file_name).read_bytes()
    with reopen(media_settings, m) as img:
        assert img.n_frames == 3 and img.info.get("loop") == 0


async def test_the_extension_comes_from_the_content(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    m = await store(ctx, media_settings, assembly, upload(image_bytes("PNG"), "a.gif", "image/gif"))
    assert m.media_type == "image/png" and m.file_name.endswith(".png")
    assert media.download_name(m) == "a.png"
    assert media.FILE_NAME_RE.match(m.file_name)
    assert media.media_url(ctx.urls, m) == f"{ctx.urls.base}/media/{m.file_name}"


async def test_pdf_is_an_attachment_only(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    message = await refused(
        ctx, media_settings, assembly, upload(PDF, "a.pdf", "application/pdf"), MediaPurpose.AVATAR
    )
    assert message == "“a.pdf” is not a JPEG, PNG, GIF or WebP image"
    m = await store(ctx, media_settings, assembly, upload(PDF, "minutes.pdf", "application/pdf"))
    assert (m.media_type, m.width, m.height) == ("application/pdf", None, None)
    assert (media_settings.media_dir / m.file_name).read_bytes() == PDF


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (b"just some words\n", "photo.jpg", "image/jpeg"),
        (b"<html><script>alert(1)</script></html>", "x.png", "image/png"),
        (b"", "empty.jpg", "image/jpeg"),
        (b"%PDF-1.4 but never finished", "cut.pdf", "application/pdf"),
        (image_bytes("JPEG")[:200], "truncated.jpg", "image/jpeg"),
        (image_bytes("BMP"), "old.bmp", "image/bmp"),
    ],
    ids=["text", "html", "empty", "pdf-without-eof", "truncated-jpeg", "bmp"],
)
async def test_what_is_not_an_image_or_pdf_is_refused(
    ctx: Context,
    media_settings: Settings,
    assembly: Assembly,
    data: bytes,
    name: str,
    content_type: str,
) -> None:
    message = await refused(ctx, media_settings, assembly, upload(data, name, content_type))
    assert message == f"“{name}” is not a JPEG, PNG, GIF, WebP image or a PDF"


async def test_too_many_bytes(ctx: Context, media_settings: Settings, assembly: Assembly) -> None:
    small = dataclasses.replace(media_settings, max_upload_bytes=1000)
    message = await refused(ctx, small, assembly, upload(b"%PDF-" + b"x" * 2000, "big.pdf"))
    assert message == "“big.pdf” is larger than 0.001 MB"


@pytest.mark.parametrize("size", [(8001, 8), (8, 8001), (7000, 7500)])
async def test_too_many_pixels(
    ctx: Context, media_settings: Settings, assembly: Assembly, size: tuple[int, int]
) -> None:
    out = io.BytesIO()
    Image.new("1", size).save(out, "PNG")
    message = await refused(ctx, media_settings, assembly, upload(out.getvalue(), "wide.png"))
    assert message == "“wide.png” is too large: at most 8000 pixels either way, please"


async def test_decompression_bomb(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    out = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(out, "PNG")  # 144 megapixels in ~20 kB
    assert len(out.getvalue()) < 100_000
    message = await refused(ctx, media_settings, assembly, upload(out.getvalue(), "bomb.png"))
    assert "too large" in message


async def test_long_description(ctx: Context, media_settings: Settings, assembly: Assembly) -> None:
    message = await refused(
        ctx, media_settings, assembly, upload(image_bytes("PNG"), "a.png"), alt_text="x" * 1501
    )
    assert message == "a description is at most 1500 characters"


# -- names, removal, who may see a file ----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ('a"b\r\nc.png', "abc.png"),
        (".hidden.png", "hidden.png"),
        ("x" * 300 + ".jpeg", "x" * 190 + ".jpeg"),
    ],
)
def test_sanitise_name(given: str, kept: str) -> None:
    assert media.sanitise_name(given) == kept


async def test_remove_files_is_best_effort(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    m = await store(ctx, media_settings, assembly, upload(image_bytes("PNG"), "a.png"))
    media.remove_files(media_settings, [m])
    media.remove_files(media_settings, [m])  # already gone: no error
    assert stored_files(media_settings) == []


async def test_a_file_is_public_once_its_assembly_is_approved_and_it_is_published(
    ctx: Context, media_settings: Settings, assembly: Assembly
) -> None:
    avatar = await store(
        ctx, media_settings, assembly, upload(image_bytes("PNG"), "a.png"), MediaPurpose.AVATAR
    )
    loose = await store(ctx, media_settings, assembly, upload(image_bytes("PNG"), "b.png"))
    async with ctx.sessions() as session:
        assert await media.find_servable(session, avatar.file_name, user=None) is None
        assert await media.find_servable(session, "../" + avatar.file_name, user=None) is None
    async with ctx.sessions() as session, session.begin():
        await assemblies.approve(session, "libertyplaza", now=ctx.clock())
    async with ctx.sessions() as session:
        found = await media.find_servable(session, avatar.file_name, user=None)
        assert found is not None and found.public
        # An attachment not (yet) published stays with the assembly's facilitators.
        assert await media.find_servable(session, loose.file_name, user=None) is None
        row = (await session.scalars(select(Media).where(Media.id == loose.id))).one()
        assert row.communique_id is None
