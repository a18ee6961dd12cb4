"""Scheduled exports: the instance keeps an assembly's latest encrypted archives.

An assembly's admin turns them on with a passphrase and how many archives to keep (1 to 10).
The passphrase is not stored: the key scrypt derived from it is, with the salt and the
parameters (server/archive.py :func:`~server.archive.derive_key`). Every archive names that
salt and those parameters in its header, so each one opens with the passphrase, with the
ordinary ``interocc assembly import`` or :func:`server.archive.open_archive`.

The worker (server/worker.py) calls :func:`run_due`: each schedule whose time has come is
claimed (a lease, as deliveries are claimed: a conditional UPDATE that only one worker can
win, and that a killed worker's successor takes over once the lease runs out), exported,
written as ``<exports folder>/<handle>/<UTC time>.interocc`` (mode 0600, in a folder of
mode 0700) and the oldest archives beyond the number to keep are deleted. Archives are
listed by reading that folder: only names this module writes are listed, and a download is
looked up by name in that listing, never joined to a path from a request.

What storing the key means if the server is seized: whoever holds the database can open
the archives kept on that server (docs/archive.md says so); the database holds the same
data anyway. The copies that matter are the ones downloaded and kept elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server import archive
from server.assemblies import HANDLE_RE
from server.config import Settings
from server.context import Context
from server.errors import BadRequest, InterOccError, NotFound
from server.models import Assembly, ExportSchedule

log = logging.getLogger(__name__)

MIN_KEEP, MAX_KEEP = 1, 10
# How long a worker's claim on a schedule lasts: longer than the slowest export (an
# archive is at most 512 MiB). A worker killed mid-way leaves the claim to run out.
LEASE = timedelta(hours=1)
# After a failed export, the next try (or the next interval, if sooner).
RETRY = timedelta(hours=1)
SUFFIX = ".interocc"
# The only names listed and served: what :func:`_file_name` writes.
FILE_RE = re.compile(r"^(\d{8}T\d{6}Z)\.interocc$")
STAMP = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Kept:
    """An archive kept for an assembly: its file name (an id, not a path), size and time."""

    name: str
    size: int
    made_at: datetime


@dataclass(frozen=True)
class Schedule:
    """What a page shows of a schedule: never its key."""

    keep: int
    created_at: datetime
    next_export_at: datetime
    last_export_at: datetime | None
    last_error: str | None
    running: bool


def check_keep(raw: str) -> int:
    """How many archives to keep, from a form field."""
    try:
        keep = int(raw.strip())
    except ValueError:
        keep = 0
    if not MIN_KEEP <= keep <= MAX_KEEP:
        raise BadRequest(f"keep from {MIN_KEEP} to {MAX_KEEP} archives", field="keep")
    return keep


async def _row(session: AsyncSession, assembly_id: int) -> ExportSchedule | None:
    query = select(ExportSchedule).where(ExportSchedule.assembly_id == assembly_id)
    return (await session.scalars(query)).first()


async def schedule(
    session: AsyncSession,
    *,
    assembly: Assembly,
    keep: int,
    key: archive.DerivedKey,
    user_id: int | None,
    now: datetime,
) -> ExportSchedule:
    """Turn on (or change) an assembly's scheduled exports; the first is due at once.

    A new passphrase applies to the archives made from now on: those already kept open
    with the passphrase they were made with.
    """
    if not MIN_KEEP <= keep <= MAX_KEEP:
        raise BadRequest(f"keep from {MIN_KEEP} to {MAX_KEEP} archives", field="keep")
    row = await _row(session, assembly.id)
    if row is None:
        row = ExportSchedule(assembly_id=assembly.id, created_at=now)
        session.add(row)
    row.keep = keep
    row.key, row.salt = key.key, key.salt
    row.scrypt_log2_n, row.scrypt_r, row.scrypt_p = key.params.log2_n, key.params.r, key.params.p
    row.created_by_id = user_id
    row.next_export_at = now
    row.last_error = None
    await session.flush()
    return row


async def unschedule(session: AsyncSession, *, assembly: Assembly) -> bool:
    """Turn an assembly's scheduled exports off; False if they were not on. The caller
    removes the kept archives (:func:`remove_kept`) once this is committed."""
    result = await session.execute(
        delete(ExportSchedule).where(ExportSchedule.assembly_id == assembly.id)
    )
    return bool(getattr(result, "rowcount", 0))


async def info(session: AsyncSession, *, assembly: Assembly, now: datetime) -> Schedule | None:
    row = await _row(session, assembly.id)
    if row is None:
        return None
    return Schedule(
        keep=row.keep,
        created_at=row.created_at,
        next_export_at=row.next_export_at,
        last_export_at=row.last_export_at,
        last_error=row.last_error,
        running=row.claimed_until is not None and row.claimed_until > now,
    )


# -- the kept archives (files) -------------------------------------------------------------


def folder(settings: Settings, handle: str) -> Path:
    """Where an assembly's archives are kept."""
    if not HANDLE_RE.match(handle):  # a handle is a folder name: never anything else
        raise NotFound("no such assembly")
    return settings.exports_root / handle


def kept(settings: Settings, handle: str) -> list[Kept]:
    """The archives kept for an assembly, newest first: the regular files of its folder
    named as this module names them (a symbolic link or any other name is left out)."""
    found: list[Kept] = []
    try:
        entries = list(os.scandir(folder(settings, handle)))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        match = FILE_RE.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            made = datetime.strptime(match.group(1), STAMP).replace(tzinfo=UTC)
        except (OSError, ValueError):
            continue
        found.append(Kept(entry.name, size, made))
    return sorted(found, key=lambda k: k.name, reverse=True)


def kept_file(settings: Settings, handle: str, name: str) -> Path:
    """The path of the kept archive called ``name``: looked up in :func:`kept`'s listing,
    so no other file can be named (``..``, a path, a link). NotFound otherwise."""
    for entry in kept(settings, handle):
        if entry.name == name:
            return folder(settings, handle) / entry.name
    raise NotFound("no such archive: it may have been replaced by a newer one")


def prune(settings: Settings, handle: str, keep: int) -> list[str]:
    """Delete the oldest archives beyond the newest ``keep``; the names deleted."""
    removed = []
    for entry in kept(settings, handle)[keep:]:
        (folder(settings, handle) / entry.name).unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def remove_kept(settings: Settings, handle: str) -> int:
    """Delete every archive kept for an assembly; how many there were."""
    return len(prune(settings, handle, 0))


def _file_name(now: datetime) -> str:
    return now.astimezone(UTC).strftime(STAMP) + SUFFIX


def _write(settings: Settings, handle: str, name: str, data: bytes) -> Path:
    where = folder(settings, handle)
    for path in (settings.exports_root, where):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o700)  # made by someone else, or before: readable by the owner only
    target = where / name
    archive.write_file(target, data)  # mode 0600, never over an existing file
    return target


# -- the worker's side ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    schedule_id: int
    token: str
    handle: str
    key: archive.DerivedKey


async def _claim(ctx: Context, schedule_id: int, *, now: datetime) -> _Claim | None:
    """Lease one due schedule to this worker: a conditional UPDATE that only one worker can
    win (PostgreSQL re-checks the condition once the row lock is free; SQLite writes one
    transaction at a time)."""
    token = secrets.token_hex(8)
    async with ctx.sessions() as session, session.begin():
        result = await session.execute(
            update(ExportSchedule)
            .where(
                ExportSchedule.id == schedule_id,
                ExportSchedule.next_export_at <= now,
                or_(ExportSchedule.claimed_until.is_(None), ExportSchedule.claimed_until < now),
            )
            .values(claimed_until=now + LEASE, claim_token=token)
        )
        if not getattr(result, "rowcount", 0):
            return None
        row = (
            await session.execute(
                select(ExportSchedule, Assembly.handle)
                .join(Assembly, Assembly.id == ExportSchedule.assembly_id)
                .where(ExportSchedule.id == schedule_id)
            )
        ).one()
        s: ExportSchedule = row[0]
        params = archive.ScryptParams(s.scrypt_log2_n, s.scrypt_r, s.scrypt_p)
        return _Claim(s.id, token, row[1], archive.DerivedKey(s.key, s.salt, params))


async def _finish(
    ctx: Context, claim: _Claim, *, now: datetime, error: str | None
) -> ExportSchedule | None:
    """Record the export and hand the claim back; None if the schedule was turned off, taken
    over or given a new passphrase meanwhile (then the archive is not to be kept)."""
    interval = ctx.settings.export_interval
    async with ctx.sessions() as session, session.begin():
        row = await session.get(ExportSchedule, claim.schedule_id)
        if row is None or row.claim_token != claim.token:
            return None
        row.claimed_until = row.claim_token = None
        if (row.key, row.salt) != (claim.key.key, claim.key.salt):
            # A new passphrase was set while it ran: this archive would not open with it.
            # Dropped; the schedule stays due, so the next one is made with the new key.
            return None
        row.last_error = error
        if error is None:
            row.last_export_at = now
            row.next_export_at = now + interval
        else:
            row.next_export_at = now + min(interval, RETRY)
        await session.flush()
        return row


async def export_one(ctx: Context, claim: _Claim, *, now: datetime) -> Path | None:
    """Export the claimed assembly, keep the file, prune the oldest; the file's path, or
    None if it was not kept (the export failed, or the schedule was turned off)."""
    settings = ctx.settings
    try:
        async with ctx.sessions() as session, session.begin():
            exported = await archive.export_assembly(
                session, settings, ctx.urls, handle=claim.handle, now=now
            )
        k = claim.key
        data = await asyncio.to_thread(
            archive.encrypt_with_key, exported.zip_data, k.key, k.salt, k.params
        )
        del exported  # one copy of the archive in memory at a time
        path = await asyncio.to_thread(_write, settings, claim.handle, _file_name(now), data)
    except InterOccError as exc:
        log.warning("scheduled export of %s failed: %s", claim.handle, exc)
        await _finish(ctx, claim, now=now, error=exc.message)
        return None
    except Exception:
        log.exception("scheduled export of %s failed", claim.handle)
        await _finish(ctx, claim, now=now, error="internal error (the worker's log says more)")
        return None
    row = await _finish(ctx, claim, now=now, error=None)
    if row is None:  # turned off or given a new passphrase while it ran: not kept
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return None
    removed = await asyncio.to_thread(prune, settings, claim.handle, row.keep)
    log.info(
        "exported %s to %s (%d bytes); %d older removed",
        claim.handle,
        path,
        len(data),
        len(removed),
    )
    return path


async def run_due(
    ctx: Context, *, now: datetime | None = None, stop: asyncio.Event | None = None
) -> list[Path]:
    """Export every assembly whose scheduled export is due, one at a time (an export holds
    its archive in memory); the files written. The worker calls it periodically (with the
    clock read afresh for each export); tests inject ``now``."""
    moment = now or ctx.clock()
    async with ctx.sessions() as session:
        due = (
            await session.scalars(
                select(ExportSchedule.id)
                .where(
                    ExportSchedule.next_export_at <= moment,
                    or_(
                        ExportSchedule.claimed_until.is_(None),
                        ExportSchedule.claimed_until < moment,
                    ),
                )
                .order_by(ExportSchedule.next_export_at, ExportSchedule.id)
            )
        ).all()
    written: list[Path] = []
    for schedule_id in due:
        if stop is not None and stop.is_set():
            break
        moment = now or ctx.clock()
        claim = await _claim(ctx, schedule_id, now=moment)
        if claim is None:  # another worker has it, or it changed meanwhile
            continue
        path = await export_one(ctx, claim, now=moment)
        if path is not None:
            written.append(path)
    return written
