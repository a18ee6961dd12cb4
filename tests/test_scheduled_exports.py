"""Scheduled exports: the instance keeps an assembly's latest N encrypted archives.

The worker's periodic function (``exports.run_due``) is driven with an injected ``now``:
an archive is made when the schedule is due, every INTEROCC_EXPORT_INTERVAL_HOURS, the
newest N are kept and the older deleted, and each opens with the passphrase through the
ordinary ``archive.open_archive``, though only the key derived from it is stored. Two
workers (two contexts on one database) never export one assembly twice. The settings page
turns the schedule on, lists the archives and serves them.
"""

from __future__ import annotations

import asyncio
import base64
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from server import archive, assemblies, exports, worker
from server.config import ConfigError, Settings, load_settings
from server.context import Context, create_context
from server.models import ExportSchedule, MemberRole
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly, count, post
from tests.helpers_web import add_member, create_user, csrf_token, field_error, log_in
from tests.support.servers import ServerThread
from tests.test_archive import PASSPHRASE, populate

CHEAP = archive.ScryptParams(log2_n=14, r=8, p=1)  # the format's floor: fast tests
T0 = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
ADMIN = "admin@example.org"


@pytest.fixture
def settings(database_url: str, port: int, tmp_path: Path) -> Settings:
    return make_settings(database_url, f"http://127.0.0.1:{port}", media_dir=tmp_path / "media")


async def turn_on(
    ctx: Context, handle: str, keep: int, passphrase: str = PASSPHRASE, *, now: datetime = T0
) -> archive.DerivedKey:
    key = archive.derive_key(passphrase, params=CHEAP)
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        await exports.schedule(
            session, assembly=assembly, keep=keep, key=key, user_id=None, now=now
        )
    return key


def names(settings: Settings, handle: str) -> list[str]:
    return [k.name for k in exports.kept(settings, handle)]


def test_the_settings_and_their_defaults(tmp_path: Path) -> None:
    base = {"INTEROCC_SECRET_KEY": SECRET, "INTEROCC_MEDIA_DIR": str(tmp_path / "m")}
    settings = load_settings(base)
    assert settings.export_interval == timedelta(hours=24)
    assert settings.exports_root == tmp_path / "exports"  # beside the media folder
    assert load_settings({"INTEROCC_SECRET_KEY": SECRET}).exports_root == Path("data/exports")
    settings = load_settings(
        base | {"INTEROCC_EXPORT_INTERVAL_HOURS": "6", "INTEROCC_EXPORTS_DIR": "/srv/kept"}
    )
    assert (settings.export_interval, settings.exports_root) == (
        timedelta(hours=6),
        Path("/srv/kept"),
    )
    for bad in ("0", "-1", "745", "daily", "1.5"):
        with pytest.raises(ConfigError, match="INTEROCC_EXPORT_INTERVAL_HOURS"):
            load_settings(base | {"INTEROCC_EXPORT_INTERVAL_HOURS": bad})


def test_an_archive_encrypted_with_a_derived_key_opens_with_the_passphrase() -> None:
    key = archive.derive_key(PASSPHRASE, params=CHEAP)
    first = archive.encrypt_with_key(b"PK plain zip", key.key, key.salt, key.params)
    second = archive.encrypt_with_key(b"PK plain zip", key.key, key.salt, key.params)
    assert (
        archive.decrypt(first, PASSPHRASE) == archive.decrypt(second, PASSPHRASE) == b"PK plain zip"
    )
    # The same header as encrypt() writes: the salt and parameters, and a fresh nonce each.
    for data in (first, second):
        _m, version, kdf, log2_n, r, p, aead, salt, _nonce = archive.HEADER.unpack_from(data)
        assert (version, kdf, log2_n, r, p, aead, salt) == (1, 1, 14, 8, 1, 1, key.salt)
    assert first[44:56] != second[44:56]
    with pytest.raises(archive.ArchiveError, match="wrong passphrase"):
        archive.decrypt(first, PASSPHRASE + ".")
    tampered = bytearray(first)
    tampered[30] ^= 1  # the salt: another key
    with pytest.raises(archive.ArchiveError):
        archive.decrypt(bytes(tampered), PASSPHRASE)
    with pytest.raises(ValueError):
        archive.encrypt_with_key(b"x", key.key[:16], key.salt, key.params)
    assert key.key.hex() not in repr(key)


async def test_the_latest_n_archives_are_kept_and_open_with_the_passphrase(
    ctx: Context, tmp_path: Path
) -> None:
    old = await populate(ctx)
    await approved_assembly(ctx, "quiet")  # no schedule: never exported
    key = await turn_on(ctx, "libertyplaza", keep=2)
    async with ctx.sessions() as session:
        [row] = (await session.scalars(select(ExportSchedule))).all()
    # Stored: the derived key with its salt and parameters, never the passphrase.
    assert (row.key, row.salt, row.scrypt_log2_n, row.scrypt_r, row.scrypt_p) == (
        key.key,
        key.salt,
        14,
        8,
        1,
    )
    assert PASSPHRASE.encode() not in row.key + row.salt

    made: list[Path] = []
    for hours in (0, 1, 23, 24, 30, 48, 72):
        made += await exports.run_due(ctx, now=T0 + timedelta(hours=hours))
    # Due at once, then every 24 hours (not at 1, 23 or 30).
    assert [p.name for p in made] == [
        "20260301T040000Z.interocc",
        "20260302T040000Z.interocc",
        "20260303T040000Z.interocc",
        "20260304T040000Z.interocc",
    ]
    folder = ctx.settings.exports_root / "libertyplaza"
    assert folder == tmp_path / "exports" / "libertyplaza"
    assert names(ctx.settings, "libertyplaza") == [
        "20260304T040000Z.interocc",
        "20260303T040000Z.interocc",
    ]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names(ctx.settings, "libertyplaza"))
    assert not (ctx.settings.exports_root / "quiet").exists()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        opened = archive.open_archive(path.read_bytes(), PASSPHRASE)
        assert (opened.actor_uri, len(opened.communiques)) == (old.actor_uri, 4)
    async with ctx.sessions() as session:
        row = (await session.scalars(select(ExportSchedule))).one()
    assert (row.last_export_at, row.next_export_at) == (T0 + 3 * DAY, T0 + 4 * DAY)
    assert (row.claimed_until, row.claim_token, row.last_error) == (None, None, None)

    # Fewer to keep: the next export prunes down to it.
    await turn_on(ctx, "libertyplaza", keep=1, now=T0 + 4 * DAY)
    await exports.run_due(ctx, now=T0 + 4 * DAY)
    assert names(ctx.settings, "libertyplaza") == ["20260305T040000Z.interocc"]


async def test_two_workers_export_a_due_assembly_once(
    ctx: Context, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await post(ctx, "libertyplaza", "Mic check!")
    await turn_on(ctx, "libertyplaza", keep=3)
    started: list[str] = []
    real = archive.export_assembly

    async def slow_export(*args: Any, **kw: Any) -> archive.Exported:
        started.append(kw["handle"])
        await asyncio.sleep(0.3)  # both workers are surely looking while this one exports
        return await real(*args, **kw)

    monkeypatch.setattr(archive, "export_assembly", slow_export)
    # Both workers find it due before either claims it: the claim alone decides.
    together = asyncio.Barrier(2)
    claim = exports._claim

    async def claim_together(*args: Any, **kw: Any) -> Any:
        await together.wait()
        return await claim(*args, **kw)

    monkeypatch.setattr(exports, "_claim", claim_together)
    other = await create_context(settings)  # a second worker process, on the same database
    try:
        runs = await asyncio.gather(exports.run_due(ctx, now=T0), exports.run_due(other, now=T0))
    finally:
        await other.aclose()
    assert started == ["libertyplaza"]
    assert sorted(len(written) for written in runs) == [0, 1]
    assert names(settings, "libertyplaza") == ["20260301T040000Z.interocc"]
    async with ctx.sessions() as session:
        row = (await session.scalars(select(ExportSchedule))).one()
    assert (row.last_export_at, row.last_error, row.claim_token) == (T0, None, None)


async def test_a_claimed_schedule_waits_for_its_lease(ctx: Context) -> None:
    """A worker killed mid-export leaves its claim: another takes over once it runs out."""
    await approved_assembly(ctx, "libertyplaza")
    await turn_on(ctx, "libertyplaza", keep=3)
    async with ctx.sessions() as session, session.begin():
        row = (await session.scalars(select(ExportSchedule))).one()
        row.claimed_until, row.claim_token = T0 + exports.LEASE, "dead-worker"
    assert await exports.run_due(ctx, now=T0 + timedelta(minutes=30)) == []
    [path] = await exports.run_due(ctx, now=T0 + exports.LEASE + timedelta(seconds=1))
    assert path.name == "20260301T050001Z.interocc"


async def test_a_failed_export_is_recorded_and_tried_again(ctx: Context) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await turn_on(ctx, "libertyplaza", keep=3)
    ctx.settings.exports_root.parent.mkdir(parents=True, exist_ok=True)
    ctx.settings.exports_root.write_text("a file where the folder should be")
    assert await exports.run_due(ctx, now=T0) == []
    async with ctx.sessions() as session:
        row = (await session.scalars(select(ExportSchedule))).one()
    assert row.last_error == "internal error (the worker's log says more)"
    assert (row.next_export_at, row.claimed_until, row.last_export_at) == (
        T0 + exports.RETRY,
        None,
        None,
    )
    ctx.settings.exports_root.unlink()
    [path] = await exports.run_due(ctx, now=T0 + exports.RETRY)
    assert path.is_file()


async def test_the_worker_makes_the_due_exports(ctx: Context) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await turn_on(ctx, "libertyplaza", keep=3, now=ctx.clock())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(ctx, stop, idle=0.05))
    try:
        for _ in range(200):
            if exports.kept(ctx.settings, "libertyplaza"):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
    [kept] = exports.kept(ctx.settings, "libertyplaza")
    path = exports.kept_file(ctx.settings, "libertyplaza", kept.name)
    assert archive.open_archive(path.read_bytes(), PASSPHRASE).handle == "libertyplaza"


# -- the settings page ------------------------------------------------------------------------


@pytest.fixture
async def admin(ctx: Context, server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    await approved_assembly(ctx, "libertyplaza")
    await add_member(ctx, await create_user(ctx, ADMIN), "libertyplaza", MemberRole.ADMIN)
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=60) as client:
        await log_in(client, ADMIN)
        yield client


async def test_an_admin_schedules_exports_and_downloads_the_kept_archives(
    ctx: Context, admin: httpx.AsyncClient
) -> None:
    settings_page = "/manage/libertyplaza/settings"
    page = await admin.get(settings_page)
    assert "Scheduled exports" in page.text and "No archive is kept here." in page.text
    token = csrf_token(page.text)
    form = {"csrf_token": token, "keep": "2", "schedule_passphrase": PASSPHRASE}

    refused = await admin.post(
        "/manage/libertyplaza/export-schedule",
        data=form | {"schedule_passphrase_again": PASSPHRASE.upper()},
    )
    assert refused.status_code == 400
    assert "differ" in (field_error(refused.text, "schedule_passphrase_again") or "")
    for keep in ("0", "11", "two"):
        refused = await admin.post(
            "/manage/libertyplaza/export-schedule",
            data=form | {"keep": keep, "schedule_passphrase_again": PASSPHRASE},
        )
        assert refused.status_code == 400
        assert field_error(refused.text, "keep") == "keep from 1 to 10 archives"
    assert await count(ctx, ExportSchedule) == 0

    done = await admin.post(
        "/manage/libertyplaza/export-schedule",
        data=form | {"schedule_passphrase_again": PASSPHRASE},
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/manage/libertyplaza/settings#archives"
    page = await admin.get(settings_page)
    assert "keeps the latest 2 archives, made every 24 hours" in page.text
    assert "No archive is kept here yet." in page.text

    for day in range(3):
        await exports.run_due(ctx, now=ctx.clock() + day * DAY)
    kept = exports.kept(ctx.settings, "libertyplaza")
    assert len(kept) == 2
    page = await admin.get(settings_page)
    assert page.headers["cache-control"] == "no-store"
    for k in kept:
        link = f'href="/manage/libertyplaza/archives/{k.name}"'
        assert link in page.text
        got = await admin.get(f"/manage/libertyplaza/archives/{k.name}")
        assert got.status_code == 200
        assert got.headers["cache-control"] == "no-store"
        assert got.headers["content-disposition"] == (
            f'attachment; filename="libertyplaza-{k.name}"'
        )
        assert archive.open_archive(got.content, PASSPHRASE).handle == "libertyplaza"
    # The derived key is nowhere on the page, in any spelling.
    async with ctx.sessions() as session:
        row = (await session.scalars(select(ExportSchedule))).one()
    for spelling in (
        row.key.hex(),
        row.key.hex().upper(),
        base64.b64encode(row.key).decode(),
        base64.urlsafe_b64encode(row.key).decode(),
    ):
        assert spelling not in page.text

    stop = await admin.post("/manage/libertyplaza/export-schedule/stop", data={"csrf_token": token})
    assert stop.status_code == 303
    page = await admin.get(settings_page)
    assert "Scheduled exports are off; 2 archive(s) kept here deleted." in page.text
    assert await count(ctx, ExportSchedule) == 0
    assert exports.kept(ctx.settings, "libertyplaza") == []
    assert await exports.run_due(ctx, now=ctx.clock() + 9 * DAY) == []
