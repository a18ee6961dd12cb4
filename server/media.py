"""Uploaded files: checked by their content, cleaned, stored under the media directory.

What a browser says about a file (its name, its content type) is never trusted: an image
must decode with Pillow as JPEG, PNG, GIF or WebP, a PDF must look like one. Images are
re-encoded from their pixels, which drops EXIF (GPS positions, camera serial numbers), XMP
and comments — protesters' photos must not tell where they were taken. Only the colour
profile is kept. Animated GIFs stay animated (Pillow's GIF writer emits no metadata but
frame timing); other animations keep their first frame. PDFs are stored as sent.

Files are written before the database transaction commits. A caller whose transaction
fails after :func:`store_upload` succeeded must call :func:`remove_files` with the rows it
got, so no file outlives a rolled-back row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import secrets
import tempfile
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from server.config import Settings
from server.errors import BadRequest
from server.models import (
    Assembly,
    AssemblyStatus,
    Communique,
    Media,
    MediaPurpose,
    Membership,
    User,
)
from server.urls import Urls

__all__ = [
    "FILE_NAME_RE",
    "IMAGE_TYPES",
    "MAX_ALT_TEXT",
    "media_url",
    "remove_files",
    "store_upload",
]

MAX_ALT_TEXT = 1500
MAX_SIDE = 8000  # pixels, either way
MAX_PIXELS = 50_000_000  # a 48-megapixel phone photo fits
MAX_FRAME_PIXELS = 100_000_000  # all frames of an animated GIF together
MAX_FRAMES = 500

# Pillow format name -> (media type, file extension)
IMAGE_TYPES: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "GIF": ("image/gif", "gif"),
    "WEBP": ("image/webp", "webp"),
}
PDF_TYPE = ("application/pdf", "pdf")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{16,32}\.(jpg|png|gif|webp|pdf)$")

# What survives re-encoding from the decoder's info: rendering, never provenance.
_KEEP_INFO = ("transparency", "icc_profile", "duration", "loop", "background")


@dataclass(frozen=True)
class _Checked:
    data: bytes
    media_type: str
    extension: str
    width: int | None = None
    height: int | None = None


def media_url(urls: Urls, media: Media) -> str:
    """The absolute URL a stored file is served at."""
    return f"{urls.base}/media/{media.file_name}"


def remove_files(settings: Settings, media: Iterable[Media]) -> None:
    """Delete the files of ``media`` from disk, ignoring those already gone."""
    for item in media:
        if FILE_NAME_RE.match(item.file_name):
            with contextlib.suppress(OSError):
                (settings.media_dir / item.file_name).unlink()


def file_path(settings: Settings, media: Media) -> Path:
    return settings.media_dir / media.file_name


def download_name(media: Media) -> str:
    """The name a browser saves the file as: the uploader's, with our extension."""
    extension = media.file_name.rsplit(".", 1)[-1]
    stem = media.original_name.rsplit(".", 1)[0] if "." in media.original_name else ""
    return f"{stem or media.public_id}.{extension}"


async def find_attachable(
    session: AsyncSession,
    *,
    assembly_id: int,
    public_id: str,
    communique_id: int | None = None,
) -> Media | None:
    """An attachment of this assembly that is free (stored for a preview), or already
    attached to ``communique_id``: what a composer form may carry over by public id."""
    query = select(Media).where(
        Media.public_id == public_id,
        Media.assembly_id == assembly_id,
        Media.purpose == MediaPurpose.ATTACHMENT,
    )
    media = (await session.scalars(query)).first()
    if media is None or media.communique_id not in {None, communique_id}:
        return None
    return media


async def sweep_unattached(
    session: AsyncSession, *, assembly_id: int, before: datetime, keep: Collection[int] = ()
) -> list[Media]:
    """Delete the rows of attachments stored for a preview but never published, older than
    ``before`` (except those in ``keep``); the caller removes their files once the
    transaction has committed."""
    query = select(Media).where(
        Media.assembly_id == assembly_id,
        Media.purpose == MediaPurpose.ATTACHMENT,
        Media.communique_id.is_(None),
        Media.created_at < before,
    )
    if keep:
        query = query.where(Media.id.not_in(keep))
    stale = list((await session.scalars(query)).all())
    for media in stale:
        await session.delete(media)
    return stale


@dataclass(frozen=True)
class Servable:
    media: Media
    public: bool  # False: shown to the assembly's facilitators only


async def find_servable(
    session: AsyncSession, file_name: str, *, user: User | None
) -> Servable | None:
    """The Media row behind ``/media/<file_name>`` if this visitor may see it.

    Anyone sees the files of an approved assembly that are published: its avatar and
    header, and the attachments of communiqués not deleted. Facilitators of the assembly
    also see the rest (files of a pending assembly, attachments kept for a preview).
    """
    if not FILE_NAME_RE.match(file_name):
        return None
    row = (
        await session.execute(
            select(Media, Assembly, Communique)
            .join(Assembly, Assembly.id == Media.assembly_id)
            .outerjoin(Communique, Communique.id == Media.communique_id)
            .where(Media.file_name == file_name)
        )
    ).first()
    if row is None:
        return None
    media, assembly, communique = row
    public = assembly.status == AssemblyStatus.APPROVED and (
        media.purpose != MediaPurpose.ATTACHMENT
        or (communique is not None and communique.deleted_at is None)
    )
    if public:
        return Servable(media, public=True)
    if user is None:
        return None
    member = await session.scalar(
        select(Membership.id).where(
            Membership.assembly_id == assembly.id, Membership.user_id == user.id
        )
    )
    return Servable(media, public=False) if member is not None else None


async def store_upload(
    session: AsyncSession,
    settings: Settings,
    *,
    assembly: Assembly,
    upload: UploadFile,
    purpose: MediaPurpose,
    alt_text: str = "",
    user: User | None = None,
    field: str = "attachment",
    now: datetime,
) -> Media:
    """Check ``upload`` by its content, store it cleaned and add its Media row (flushed).

    Raises BadRequest (with ``field``) for a file too large, of another kind, or an image
    that does not decode or is too large in pixels. See the module docstring on cleanup.
    """
    alt_text = alt_text.strip()
    if len(alt_text) > MAX_ALT_TEXT:
        raise BadRequest(f"a description is at most {MAX_ALT_TEXT} characters", field=field)
    original = sanitise_name(upload.filename or "")
    label = f"“{original}”" if original else "the file"
    limit = settings.max_upload_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(f"{label} is larger than {_megabytes(limit)}", field=field)
    checked = await asyncio.to_thread(_check, data, pdf_allowed=purpose == MediaPurpose.ATTACHMENT)
    if checked is None:
        kinds = (
            "a JPEG, PNG, GIF, WebP image or a PDF"
            if purpose == MediaPurpose.ATTACHMENT
            else "a JPEG, PNG, GIF or WebP image"
        )
        raise BadRequest(f"{label} is not {kinds}", field=field)
    if isinstance(checked, str):
        raise BadRequest(f"{label} {checked}", field=field)
    public_id = secrets.token_urlsafe(16)
    file_name = f"{public_id}.{checked.extension}"
    await asyncio.to_thread(_write, settings.media_dir, file_name, checked.data)
    media = Media(
        public_id=public_id,
        assembly_id=assembly.id,
        purpose=purpose,
        media_type=checked.media_type,
        file_name=file_name,
        original_name=original,
        size=len(checked.data),
        width=checked.width,
        height=checked.height,
        alt_text=alt_text,
        sha256=hashlib.sha256(checked.data).hexdigest(),
        uploaded_by_id=user.id if user is not None else None,
        created_at=now,
    )
    session.add(media)
    try:
        await session.flush()
    except BaseException:
        remove_files(settings, [media])
        raise
    return media


def sanitise_name(name: str) -> str:
    """The last path segment of a browser-given file name, printable and bounded."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] not in {"C"} and c != '"')
    name = name.strip().lstrip(".")
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = stem[:190] + dot + ext[:9] if dot and len(ext) <= 9 else name[:200]
    return name


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:g} MB"


def _write(directory: Path, file_name: str, data: bytes) -> None:
    """Write atomically: a temporary file in the same directory, then a rename."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / file_name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check(data: bytes, *, pdf_allowed: bool) -> _Checked | str | None:
    """The cleaned file; a reason (completing "“name” …") ; or None: not a kind we take."""
    image = _check_image(data)
    if image is not None:
        return image
    if pdf_allowed and _looks_like_pdf(data):
        return _Checked(data=data, media_type=PDF_TYPE[0], extension=PDF_TYPE[1])
    return None


def _looks_like_pdf(data: bytes) -> bool:
    # Readers accept junk after %%EOF, so allow some trailing bytes (newlines, padding).
    return data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]


def _check_image(data: bytes) -> _Checked | str | None:
    formats = tuple(IMAGE_TYPES)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as probe:
            kind = probe.format
            probe.verify()
        with Image.open(io.BytesIO(data), formats=formats) as img:
            width, height = img.size
            if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
                return f"is too large: at most {MAX_SIDE} pixels either way, please"
            frames = getattr(img, "n_frames", 1)
            if kind == "GIF" and frames > 1:
                return _animated_gif(img, frames)
            img.load()
            return _still(img, kind or "")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"is too large: at most {MAX_SIDE} pixels either way, please"
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on hostile input
        return None


def _animated_gif(img: Image.Image, frames: int) -> _Checked | str:
    width, height = img.size
    if frames > MAX_FRAMES or frames * width * height > MAX_FRAME_PIXELS:
        return "has too many frames"
    out = io.BytesIO()
    # Pillow's GIF writer copies the first frame's comment unless told otherwise, and writes
    # no XMP: re-encoding all frames keeps the animation and drops the metadata.
    params: dict[str, object] = {"save_all": True, "comment": b""}
    if "loop" in img.info:
        params["loop"] = img.info["loop"]
    img.save(out, "GIF", **params)
    return _Checked(out.getvalue(), "image/gif", "gif", width, height)


def _still(img: Image.Image, kind: str) -> _Checked:
    # Turn the pixels upright first: the orientation tag goes with the rest of the EXIF.
    upright = ImageOps.exif_transpose(img)
    clean = upright.copy()
    clean.info = {k: v for k, v in img.info.items() if k in _KEEP_INFO}
    params: dict[str, object] = {}
    icc = clean.info.get("icc_profile")
    if icc:
        params["icc_profile"] = icc
    if kind == "JPEG":
        if clean.mode not in {"L", "RGB", "CMYK"}:
            clean = clean.convert("RGB")
        params.update(quality=90, optimize=True)
    elif kind == "WEBP":
        params.update(quality=90)
    elif kind == "GIF" and "transparency" in clean.info:
        params["transparency"] = clean.info["transparency"]
    out = io.BytesIO()
    clean.save(out, kind, **params)
    media_type, extension = IMAGE_TYPES[kind]
    return _Checked(out.getvalue(), media_type, extension, clean.width, clean.height)
