"""Hostile backup archives: a restore writes nothing outside the media folder, ever.

A backup may have been kept where others could change it. Whatever it holds, `interocc
restore` refuses a member that could land outside ``media/`` (an absolute path, ``..``), a
link or a device, a manifest of another schema revision, an archive cut short — before it
writes anything: no row, no file. And the backup itself, holding every private key, is
readable by its owner only.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from server import assemblies, backup, media
from server.config import Settings
from server.context import Context
from server.db import create_engine
from server.errors import BadRequest
from server.models import InstanceKey, MediaPurpose
from tests.conftest import make_settings
from tests.helpers import approved_assembly
from tests.test_backup import BASE, counts, files_under, png

OUTSIDE = "outside"  # a folder beside the target's media folder, which nothing may reach


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, BASE, media_dir=tmp_path / "source" / "media")


@pytest.fixture
def target(second_database_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "target" / OUTSIDE).mkdir(parents=True)
    return make_settings(second_database_url, BASE, media_dir=tmp_path / "target" / "media")


@pytest.fixture
async def archive(ctx: Context, settings: Settings, tmp_path: Path) -> Path:
    """A good backup: an assembly with an avatar."""
    await approved_assembly(ctx, "libertyplaza")
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        await media.store_upload(
            session,
            settings,
            assembly=assembly,
            upload=png((1, 2, 3)),
            purpose=MediaPurpose.AVATAR,
            now=ctx.clock(),
        )
    path = tmp_path / "good.tar.gz"
    await backup.backup(settings, path)
    return path


def repack(good: Path, bad: Path, extra: list[tarfile.TarInfo]) -> None:
    """``good``'s members, then ``extra`` (regular files among them hold b"pwned")."""
    with tarfile.open(good, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        for info in extra:
            data = b"pwned" if info.isreg() else None
            info.size = len(data or b"")
            dst.addfile(info, io.BytesIO(data) if data is not None else None)


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def everything_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


async def instance_keys(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(InstanceKey.__table__.select().order_by(InstanceKey.id))
            return [row.private_key_pem for row in rows]
    finally:
        await engine.dispose()


# {outside}: the absolute path of the folder beside the media folder.
HOSTILE = {
    "dot-dot inside media/": [member("media/../outside/escaped.txt")],
    "a link out of media/": [member("media/link", tarfile.SYMTYPE, "{outside}/linked.txt")],
    "an absolute path": [member("{outside}/absolute.txt")],
    "dot-dot at the top": [member("../outside/escaped.txt")],
    "an absolute link target": [member("media/passwd", tarfile.SYMTYPE, "/etc/passwd")],
    "a hard link": [member("media/hard", tarfile.LNKTYPE, "manifest.json")],
    "a device": [member("media/zero", tarfile.CHRTYPE)],
    "a fifo": [member("media/pipe", tarfile.FIFOTYPE)],
    "a folder that is a link, then a file in it": [
        member("media/sub", tarfile.SYMTYPE, "{outside}"),
        member("media/sub/escaped.txt"),
    ],
    "a backslash path": [member("media/..\\..\\outside\\escaped.txt")],
    "an empty segment": [member("media//escaped.txt")],
    "a file named media": [member("media")],
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
async def test_a_member_that_could_escape_is_refused_and_nothing_is_written(
    case: str, archive: Path, target: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "target" / OUTSIDE
    extra = []
    for info in HOSTILE[case]:
        made = member(
            info.name.replace("{outside}", str(outside)),
            info.type,
            info.linkname.replace("{outside}", str(outside)),
        )
        extra.append(made)
    hostile = tmp_path / "hostile.tar.gz"
    repack(archive, hostile, extra)
    rows, keys = await counts(target.database_url), await instance_keys(target.database_url)
    files = everything_under(tmp_path)

    with pytest.raises(BadRequest) as refused:
        await backup.restore(target, hostile)
    assert refused.value.message.startswith(
        ("the backup holds an unsafe path", "the backup holds a link or a device")
    ), refused.value.message
    assert await counts(target.database_url) == rows
    assert await instance_keys(target.database_url) == keys
    assert everything_under(tmp_path) == files  # no media folder made, nothing beside it
    assert not (tmp_path / "target" / "media").exists()


async def test_the_good_archive_restores(archive: Path, target: Settings) -> None:
    """The control for the cases above: only the added member made them fail."""
    done = await backup.restore(target, archive)
    assert (done.tables["assemblies"], done.media_files) == (1, 1)
    assert len(files_under(target.media_dir)) == 1


def rewrite_manifest(good: Path, bad: Path, **changes: object) -> None:
    with tarfile.open(good, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == "manifest.json":
                data = json.dumps({**json.loads(data), **changes}).encode()
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        (
            {"schema_revision": "0001"},
            "this backup is of schema revision 0001, this InterOcc's is ",
        ),
        ({"version": 2}, "this backup is of format version 2; this InterOcc reads version 1"),
        ({"format": "tar"}, "this is not an InterOcc backup"),
        ({"tables": {"users": 0}}, "the backup is damaged: its manifest.json does not list"),
    ],
)
async def test_a_manifest_of_another_schema_or_format_is_refused(
    changes: dict[str, object], refusal: str, archive: Path, target: Settings, tmp_path: Path
) -> None:
    other = tmp_path / "other.tar.gz"
    rewrite_manifest(archive, other, **changes)
    rows = await counts(target.database_url)
    with pytest.raises(BadRequest) as refused:
        await backup.restore(target, other)
    assert refused.value.message.startswith(refusal), refused.value.message
    assert await counts(target.database_url) == rows
    assert not target.media_dir.exists()


async def test_an_archive_cut_short_is_refused(
    archive: Path, target: Settings, tmp_path: Path
) -> None:
    data = await asyncio.to_thread(archive.read_bytes)
    rows = await counts(target.database_url)
    for size in (len(data) // 2, len(data) - 10, 0):
        cut = tmp_path / f"cut-{size}.tar.gz"
        await asyncio.to_thread(cut.write_bytes, data[:size])
        with pytest.raises(BadRequest, match="backup archive|complete backup"):
            await backup.restore(target, cut)
    assert await counts(target.database_url) == rows
    assert not target.media_dir.exists()


async def test_the_backup_is_readable_by_its_owner_only(
    archive: Path, settings: Settings, tmp_path: Path
) -> None:
    assert mode(archive) == 0o600
    previous = os.umask(0)  # even where every new file would be anyone's
    try:
        loose = tmp_path / "loose.tar.gz"
        await backup.backup(settings, loose)
    finally:
        os.umask(previous)
    assert mode(loose) == 0o600
    with tarfile.open(loose, "r:gz") as tar:
        rows = tar.extractfile("db/assemblies.jsonl").read()  # type: ignore[union-attr]
    assert b"BEGIN PRIVATE KEY" in rows  # which is why
