"""`interocc backup` and `interocc restore`: the whole instance in one file, and back.

An assembly survives losing its server when its admin kept a backup. The file is a
gzip-compressed tar (docs/backup.md describes it for people)::

    db/<table>.jsonl   every table of the schema, in ``metadata.sorted_tables`` order: one
                       JSON object per row, in primary-key order (an empty table, an empty
                       file)
    media/<name>       the media directory's files
    manifest.json      format, version, schema revision, base URL, when, row counts per
                       table, media count; written last, so an archive cut short has none

Values follow the column types, so that a restore gives back exactly what was read:
datetimes as ISO 8601 strings with their offset, enums as their values, bytes in base64,
JSON columns as JSON. A JSON column can hold SQL NULL or JSON ``null``, and queries tell
them apart (``IS NULL``): a row lists its JSON-``null`` columns under ``"$json_null"``, and a
plain ``null`` is SQL NULL.

A backup reads every table in one read-only transaction, so it sees one consistent state
while the instance keeps running: REPEATABLE READ on PostgreSQL; on SQLite a deferred read
transaction, a snapshot in WAL mode that holds no writer back (server.db's BEGIN IMMEDIATE
would make every writer of a live instance wait, then fail, for as long as the backup
lasts). Rows are streamed, a table at a time through a temporary file beside the output.
Media files are read after the rows: a file uploaded meanwhile is kept unused, and a file a
row names that is gone is counted as missing.

The file holds every private key (the instance's, every assembly's) and every password
hash: it is created readable by its owner only. Encrypting it is the operator's job.

A restore goes into a migrated database that is empty (but for the instance key that
``interocc migrate`` makes, which the backup's replaces), at the schema revision the backup
was made at, and refuses a backup of another base URL unless told: actor ids, key ids and
every communiqué's id contain it. Every member's name and kind is checked before anything
is written; rows go in one transaction, media files are written before it commits and
removed if it does not: a bad archive changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import enum
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Enum,
    Integer,
    Table,
    Text,
    cast,
    delete,
    event,
    insert,
    make_url,
    null,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator, TypeEngine

from server import migrate
from server.config import Settings
from server.db import create_engine, is_sqlite
from server.errors import BadRequest, Conflict
from server.models import Base, InstanceKey, Media

__all__ = [
    "FORMAT",
    "VERSION",
    "Summary",
    "add_parsers",
    "backup",
    "cmd_backup",
    "cmd_restore",
    "restore",
]

FORMAT = "interocc-backup"
VERSION = 1
MANIFEST = "manifest.json"
JSON_NULL = "$json_null"
BATCH = 1000  # rows read (yield_per) or inserted at a time
MAX_MANIFEST_BYTES = 1_000_000
CHUNK = 1 << 20


@dataclass(frozen=True)
class Summary:
    """What a backup wrote or a restore read."""

    path: Path
    size: int  # of the archive file, in bytes
    base_url: str
    schema_revision: str
    created: str  # when the backup was made (ISO 8601)
    tables: Mapping[str, int]  # rows per table
    media_files: int
    media_bytes: int
    missing_media: tuple[str, ...] = ()  # named by a media row, absent from the media folder

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


# -- values, by column type ---------------------------------------------------------------


class _Bad(ValueError):
    """A value the column cannot take; the message completes "column X: …"."""


def _underlying(column: Column[Any]) -> TypeEngine[Any]:
    kind = column.type
    return kind.impl_instance if isinstance(kind, TypeDecorator) else kind


def _checked(kind: type[Any], label: str) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        # bool is an int to Python, not to a database.
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise _Bad(f"expected {label}, not {json.dumps(value)[:40]}")
        return value

    return decode


def _iso(parse: Callable[[str], Any], label: str, aware: bool = False) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            raise _Bad(f"expected {label} (an ISO 8601 string)")
        try:
            parsed = parse(value)
        except ValueError:
            raise _Bad(f"expected {label}, not {value[:40]!r}") from None
        if aware and parsed.tzinfo is None:
            raise _Bad(f"expected {label} with its offset, not {value[:40]!r}")
        return parsed

    return decode


def _enum_decoder(enum_class: type[enum.Enum]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        try:
            return enum_class(value)
        except ValueError:
            raise _Bad(f"{json.dumps(value)[:40]} is not one of its values") from None

    return decode


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Bad("expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise _Bad("expected base64 text") from None


def _decimal(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise _Bad("expected a decimal number as text")
    try:
        return Decimal(value)
    except ArithmeticError:
        raise _Bad(f"expected a decimal number, not {value[:40]!r}") from None


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class _Codec:
    name: str
    nullable: bool
    is_json: bool
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _codec(column: Column[Any]) -> _Codec:
    """How a column's values are written to and read from JSON; TypeError for a type this
    module does not know yet (tests/test_backup.py checks every column of the schema)."""
    kind = _underlying(column)

    def make(encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> _Codec:
        return _Codec(column.name, bool(column.nullable), isinstance(kind, JSON), encode, decode)

    if isinstance(kind, JSON):
        return make(_same, _same)  # read as text and parsed: see _dump_table
    if isinstance(kind, Enum) and kind.enum_class is not None:
        return make(lambda v: v.value, _enum_decoder(kind.enum_class))
    try:
        python_type = kind.python_type
    except NotImplementedError:
        python_type = object
    if python_type is datetime:
        aware = isinstance(kind, DateTime) and kind.timezone
        return make(lambda v: v.isoformat(), _iso(datetime.fromisoformat, "a datetime", aware))
    if python_type is date:
        return make(lambda v: v.isoformat(), _iso(date.fromisoformat, "a date"))
    if python_type is time:
        return make(lambda v: v.isoformat(), _iso(time.fromisoformat, "a time"))
    if python_type is bytes:
        return make(lambda v: base64.b64encode(v).decode("ascii"), _base64)
    if python_type is Decimal:
        return make(str, _decimal)
    labels: dict[type[Any], str] = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "text",
    }
    if python_type in labels:
        return make(_same, _checked(python_type, labels[python_type]))
    raise TypeError(f"{column.table.name}.{column.name}: no backup codec for {column.type!r}")


def _codecs(table: Table) -> list[_Codec]:
    return [_codec(column) for column in table.columns]


def _encode_row(codecs: list[_Codec], row: Iterable[Any]) -> str:
    out: dict[str, Any] = {}
    json_null: list[str] = []
    for codec, value in zip(codecs, row, strict=True):
        if value is None:
            out[codec.name] = None
        elif codec.is_json:
            out[codec.name] = parsed = json.loads(value)
            if parsed is None:
                json_null.append(codec.name)
        else:
            out[codec.name] = codec.encode(value)
    if json_null:
        out[JSON_NULL] = json_null
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n"


def _decode_row(codecs: list[_Codec], line: bytes, where: str) -> dict[str, Any]:
    try:
        raw = json.loads(line)
    except ValueError:
        raise _damaged(f"{where} is not a JSON object") from None
    if not isinstance(raw, dict):
        raise _damaged(f"{where} is not a JSON object")
    json_null = raw.pop(JSON_NULL, [])
    json_columns = {c.name for c in codecs if c.is_json}
    if not isinstance(json_null, list) or not set(json_null) <= json_columns:
        raise _damaged(f"{where}: {JSON_NULL} must list JSON columns")
    names = [c.name for c in codecs]
    if set(raw) != set(names):
        missing, unknown = set(names) - set(raw), set(raw) - set(names)
        said = [f"no column {n}" for n in sorted(missing)]
        said += [f"unknown column {n}" for n in sorted(unknown)]
        raise _damaged(f"{where}: {', '.join(said)}")
    row: dict[str, Any] = {}
    for codec in codecs:
        value = raw[codec.name]
        if codec.name in json_null:
            if value is not None:
                raise _damaged(f"{where}: column {codec.name} is in {JSON_NULL} but not null")
            row[codec.name] = JSON.NULL  # JSON null, stored as the text 'null'
        elif value is None:
            if not codec.nullable:
                raise _damaged(f"{where}: column {codec.name} may not be null")
            # For a JSON column a plain None would be stored as JSON null: say SQL NULL.
            row[codec.name] = null() if codec.is_json else None
        else:
            try:
                row[codec.name] = codec.decode(value)
            except _Bad as exc:
                raise _damaged(f"{where}: column {codec.name}: {exc}") from None
    return row


def _damaged(reason: str) -> BadRequest:
    return BadRequest(f"the backup is damaged: {reason}")


# -- the database -------------------------------------------------------------------------


def _require_database(settings: Settings) -> None:
    url = settings.database_url
    if is_sqlite(url) and ":memory:" not in url:
        path = make_url(url).database or ""
        if not Path(path).exists():
            # Opening it would leave an empty file behind.
            raise BadRequest("there is no database yet: run `interocc migrate` first")


async def _reachable(engine: AsyncEngine) -> None:
    try:
        async with engine.connect():
            pass
    except Exception as exc:  # unreachable server, bad credentials…
        # SQLAlchemy's messages end with a "(Background on this error …)" line: one line only.
        reason = (str(exc).splitlines() or [""])[0]
        raise BadRequest(f"cannot open the database: {exc.__class__.__name__}: {reason}") from exc


def _reader_engine(url: str) -> AsyncEngine:
    """An engine whose transactions only read. On SQLite a deferred BEGIN: the first read
    fixes the snapshot (WAL), and no writer waits on us (server.db begins IMMEDIATE)."""
    if not is_sqlite(url):
        return create_engine(url)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver begins nothing: we do, below

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _current_revision(conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


async def _require_head(conn: AsyncConnection) -> str:
    current = await conn.run_sync(_current_revision)
    head = migrate.head_revision()
    if head is None or current != head:
        raise BadRequest("the database is not up to date: run `interocc migrate` first")
    return head


def _select(table: Table) -> Any:
    # JSON columns as their stored text: that is where SQL NULL and JSON null differ.
    columns = [
        cast(c, Text).label(c.name) if isinstance(_underlying(c), JSON) else c
        for c in table.columns
    ]
    return select(*columns).order_by(*table.primary_key.columns)


# -- backup -------------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o600
    tar.addfile(info, data)


async def _dump_table(
    conn: AsyncConnection, table: Table, tar: tarfile.TarFile, spool_dir: Path, now: datetime
) -> tuple[int, set[str]]:
    """Write one table's rows to the archive; its row count, and the files media rows name."""
    codecs = _codecs(table)
    file_names: set[str] = set()
    file_index = list(table.columns.keys()).index("file_name") if table is Media.__table__ else -1
    count = 0
    with tempfile.TemporaryFile(dir=spool_dir, prefix=".backup-") as spool:
        result = await conn.stream(_select(table).execution_options(yield_per=BATCH))
        async for rows in result.partitions():
            spool.write("".join(_encode_row(codecs, row) for row in rows).encode("utf-8"))
            count += len(rows)
            if file_index >= 0:
                file_names.update(row[file_index] for row in rows)
        size = spool.tell()
        spool.seek(0)
        await asyncio.to_thread(_add, tar, f"db/{table.name}.jsonl", spool, size, now.timestamp())
    return count, file_names


def _media_files(media_dir: Path) -> list[tuple[Path, str]]:
    """(path, name in the archive) of the media folder's regular files, in order. Names
    starting with a dot are files being written (server.media writes ``.upload-…`` first);
    links are not followed."""
    found: list[tuple[Path, str]] = []
    if not media_dir.is_dir():
        return found
    for root, dirs, files in os.walk(media_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                if not name.startswith(".") and stat.S_ISREG(os.lstat(path).st_mode):
                    found.append((path, path.relative_to(media_dir).as_posix()))
    return found


def _add_media(tar: tarfile.TarFile, media_dir: Path) -> tuple[list[str], int]:
    added: list[str] = []
    total = 0
    for path, name in _media_files(media_dir):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # removed since it was listed (or replaced by a link)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            _add(tar, f"media/{name}", f, st.st_size, st.st_mtime)
        added.append(name)
        total += st.st_size
    return added, total


async def backup(settings: Settings, out: Path, *, now: datetime | None = None) -> Summary:
    """Write the whole instance to ``out``, a new file readable by its owner only."""
    now = now or datetime.now(UTC)
    _require_database(settings)
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadRequest(f"{out} already exists: choose another name") from None
    except OSError as exc:
        raise BadRequest(f"cannot write {out}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as raw:
            os.fchmod(raw.fileno(), 0o600)  # whatever the umask, or a filesystem's default
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                summary = await _write_backup(settings, out, tar, now)
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        await asyncio.to_thread(out.unlink, missing_ok=True)
        raise
    size = (await asyncio.to_thread(out.stat)).st_size
    return dataclasses.replace(summary, size=size)


async def _write_backup(
    settings: Settings, out: Path, tar: tarfile.TarFile, now: datetime
) -> Summary:
    tables: dict[str, int] = {}
    named: set[str] = set()
    engine = _reader_engine(settings.database_url)
    try:
        await _reachable(engine)
        async with engine.connect() as conn:
            if not is_sqlite(settings.database_url):
                conn = await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            async with conn.begin():
                revision = await _require_head(conn)
                for table in Base.metadata.sorted_tables:
                    tables[table.name], names = await _dump_table(conn, table, tar, out.parent, now)
                    named |= names
    finally:
        await engine.dispose()
    added, media_bytes = await asyncio.to_thread(_add_media, tar, settings.media_dir)
    created = now.isoformat(timespec="seconds")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "schema_revision": revision,
        "base_url": settings.base_url,
        "created": created,
        "tables": tables,
        "media": {"files": len(added), "bytes": media_bytes},
    }
    data = json.dumps(manifest, indent=2).encode("utf-8") + b"\n"
    await asyncio.to_thread(_add, tar, MANIFEST, io.BytesIO(data), len(data), now.timestamp())
    return Summary(
        path=out,
        size=0,
        base_url=settings.base_url,
        schema_revision=revision,
        created=created,
        tables=tables,
        media_files=len(added),
        media_bytes=media_bytes,
        missing_media=tuple(sorted(named - set(added))),
    )


# -- restore: reading the archive ---------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    manifest: dict[str, Any]
    tables: dict[str, tarfile.TarInfo]
    media: list[tuple[tuple[str, ...], tarfile.TarInfo]]


def _media_parts(name: str) -> tuple[str, ...]:
    """The path below media/ of a member named ``media/…``; BadRequest for a name that
    could land anywhere else (absolute, ``..``, empty or ``.`` segments, backslashes)."""
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise BadRequest(f"the backup holds an unsafe path: {name!r}")
    parts = tuple(name.split("/"))
    if parts[0] != "media" or any(p in {"", ".", ".."} for p in parts):
        raise BadRequest(f"the backup holds an unsafe path: {name!r}")
    return parts[1:]


def _plan(tar: tarfile.TarFile) -> _Plan:
    """Every member checked by name and kind, and the manifest read; nothing written."""
    known = {t.name for t in Base.metadata.sorted_tables}
    manifest: tarfile.TarInfo | None = None
    tables: dict[str, tarfile.TarInfo] = {}
    media: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
    seen: set[str] = set()
    for member in tar.getmembers():
        name = member.name
        if name in seen:
            raise _damaged(f"{name!r} is there twice")
        seen.add(name)
        if name.startswith("/") or ".." in name.split("/"):
            raise BadRequest(f"the backup holds an unsafe path: {name!r}")
        if name == "media" or name.startswith("media/"):
            parts = _media_parts(name)
            if member.isdir():
                continue
            if not member.isfile():
                raise BadRequest(f"the backup holds a link or a device: {name!r}")
            if not parts:  # a file where the media folder goes
                raise BadRequest(f"the backup holds an unsafe path: {name!r}")
            media.append((parts, member))
            continue
        table = name.removeprefix("db/").removesuffix(".jsonl")
        if name == MANIFEST and member.isfile():
            manifest = member
        elif name == f"db/{table}.jsonl" and table in known and member.isfile():
            tables[table] = member
        else:
            raise BadRequest(f"the backup holds something unexpected: {name!r}")
    if manifest is None:
        raise BadRequest("this is not a complete backup: it has no manifest.json")
    if manifest.size > MAX_MANIFEST_BYTES:
        raise _damaged("its manifest.json is too large")
    f = tar.extractfile(manifest)
    assert f is not None  # a regular file
    try:
        document = json.loads(f.read())
    except ValueError:
        raise _damaged("its manifest.json is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BadRequest("this is not an InterOcc backup")
    if document.get("version") != VERSION:
        raise BadRequest(
            f"this backup is of format version {document.get('version')!r}; "
            f"this InterOcc reads version {VERSION}"
        )
    counts = document.get("tables")
    if (
        not isinstance(counts, dict)
        or set(counts) != known
        or not all(type(n) is int and n >= 0 for n in counts.values())
        or not all(isinstance(document.get(k), str) for k in ("schema_revision", "base_url"))
    ):
        raise _damaged("its manifest.json does not list every table of its schema revision")
    if set(tables) != known:
        raise _damaged(f"tables missing: {', '.join(sorted(known - set(tables)))}")
    return _Plan(document, tables, media)


def _open(file: Path) -> tuple[tarfile.TarFile, _Plan]:
    try:
        tar = tarfile.open(file, "r:gz")
    except FileNotFoundError:
        raise BadRequest(f"there is no file {file}") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadRequest(f"{file} is not a backup archive ({exc})") from exc
    try:
        plan = _plan(tar)
        # getmembers() stops at the tar's end marker: read on to gzip's own end, where it
        # checks its CRC and length (an archive cut short or changed fails here).
        assert tar.fileobj is not None
        while tar.fileobj.read(CHUNK):
            pass
        return tar, plan
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        tar.close()
        raise BadRequest(f"{file} is not a complete backup archive ({exc})") from exc
    except BaseException:
        tar.close()
        raise


def _read_lines(f: IO[bytes], n: int) -> list[bytes]:
    lines: list[bytes] = []
    while len(lines) < n:
        line = f.readline()
        if not line:
            break
        lines.append(line)
    return lines


# -- restore: writing ---------------------------------------------------------------------


async def _require_empty(conn: AsyncConnection) -> None:
    for table in Base.metadata.sorted_tables:
        if table is InstanceKey.__table__:
            continue  # `interocc migrate` made one; the backup's replaces it
        if (await conn.execute(select(1).select_from(table).limit(1))).first() is not None:
            raise Conflict(
                f"the database is not empty (table {table.name} has rows): restore into a "
                "new database, made with `interocc migrate`"
            )


async def _insert_table(
    conn: AsyncConnection, tar: tarfile.TarFile, table: Table, member: tarfile.TarInfo, rows: int
) -> None:
    codecs = _codecs(table)
    f = tar.extractfile(member)
    assert f is not None
    number = 0
    while batch := await asyncio.to_thread(_read_lines, f, BATCH):
        decoded = []
        for line in batch:
            number += 1
            decoded.append(_decode_row(codecs, line, f"{member.name} line {number}"))
        if number > rows:
            break
        await conn.execute(insert(table), decoded)
    if number != rows:
        raise _damaged(f"{member.name} has {number} rows, its manifest says {rows}")


async def _reset_sequences(conn: AsyncConnection) -> None:
    """PostgreSQL hands out ids from sequences that explicit ids do not move: start each
    after the largest id restored (SQLite takes max(rowid) + 1 by itself)."""
    quote = conn.dialect.identifier_preparer
    for table in Base.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(_underlying(keys[0]), Integer):
            continue
        column = keys[0].name
        name = quote.format_table(table)
        await conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                f"COALESCE(MAX({quote.quote(column)}), 0) + 1, false) FROM {name}"
            ),
            {"table": name, "column": column},
        )


def _make_folders(media_dir: Path, parts: tuple[str, ...], name: str) -> Path:
    """Where a media member goes, its folders made; a folder that is a link (it could lead
    anywhere) or a file is refused. The names were checked already (_media_parts)."""
    media_dir.mkdir(parents=True, exist_ok=True)
    folder = media_dir
    for part in parts[:-1]:
        folder = folder / part
        if os.path.islink(folder) or (os.path.lexists(folder) and not folder.is_dir()):
            raise Conflict(f"{folder} is not a folder: {name!r} cannot be restored")
        folder.mkdir(exist_ok=True)
    return folder / parts[-1]


def _same_content(path: Path, f: IO[bytes]) -> bool:
    ours, theirs = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as existing:
        while chunk := existing.read(CHUNK):
            ours.update(chunk)
    while chunk := f.read(CHUNK):
        theirs.update(chunk)
    return ours.digest() == theirs.digest()


def _write_media(
    tar: tarfile.TarFile,
    media: list[tuple[tuple[str, ...], tarfile.TarInfo]],
    media_dir: Path,
    written: list[Path],
) -> int:
    """Write the media files (appending each new one to ``written``); their bytes."""
    total = 0
    for parts, member in media:
        dest = _make_folders(media_dir, parts, member.name)
        f = tar.extractfile(member)
        assert f is not None
        total += member.size
        if os.path.lexists(dest):
            if not (stat.S_ISREG(os.lstat(dest).st_mode) and _same_content(dest, f)):
                raise Conflict(f"{dest} already exists with other content: nothing was restored")
            continue
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".restore-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(f, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, dest)  # never over a file that appeared meanwhile
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        written.append(dest)
    return total


async def restore(settings: Settings, file: Path, *, force_base_url: bool = False) -> Summary:
    """Restore a backup into an empty database at the same schema revision; all or nothing."""
    tar, plan = await asyncio.to_thread(_open, file)
    written: list[Path] = []
    try:
        manifest = plan.manifest
        head = migrate.head_revision()
        if manifest["schema_revision"] != head:
            raise BadRequest(
                f"this backup is of schema revision {manifest['schema_revision']}, this "
                f"InterOcc's is {head}: restore it with the InterOcc version that made it, "
                "then upgrade"
            )
        if manifest["base_url"] != settings.base_url and not force_base_url:
            raise BadRequest(
                f"this backup is of {manifest['base_url']}, not {settings.base_url}: every "
                "actor id, key id and communiqué id contains the base URL, so other servers "
                "would not know the restored assemblies; set INTEROCC_BASE_URL to "
                f"{manifest['base_url']}, or add --force-base-url to restore anyway"
            )
        _require_database(settings)
        engine = create_engine(settings.database_url)
        try:
            await _reachable(engine)
            async with engine.begin() as conn:
                await _require_head(conn)
                await _require_empty(conn)
                await conn.execute(delete(InstanceKey))
                for table in Base.metadata.sorted_tables:
                    rows = manifest["tables"][table.name]
                    await _insert_table(conn, tar, table, plan.tables[table.name], rows)
                if not is_sqlite(settings.database_url):
                    await _reset_sequences(conn)
                media_bytes = await asyncio.to_thread(
                    _write_media, tar, plan.media, settings.media_dir, written
                )
        finally:
            await engine.dispose()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        _remove(written)
        raise BadRequest(f"{file} is not a complete backup archive ({exc})") from exc
    except BaseException:
        _remove(written)
        raise
    finally:
        tar.close()
    return Summary(
        path=file,
        size=(await asyncio.to_thread(file.stat)).st_size,
        base_url=manifest["base_url"],
        schema_revision=manifest["schema_revision"],
        created=str(manifest.get("created", "")),
        tables=dict(manifest["tables"]),
        media_files=len(plan.media),
        media_bytes=media_bytes,
    )


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


# -- the commands -------------------------------------------------------------------------


async def cmd_backup(settings: Settings, args: argparse.Namespace) -> None:
    done = await backup(settings, Path(args.out))
    print(
        f"wrote {done.path} ({done.size} bytes, readable by its owner only: it holds every "
        f"private key): {done.rows} rows in {len(done.tables)} tables, "
        f"{done.media_files} media files"
    )
    if done.missing_media:
        print(
            f"warning: {len(done.missing_media)} files named in the database were missing "
            f"from {settings.media_dir}"
        )


async def cmd_restore(settings: Settings, args: argparse.Namespace) -> None:
    done = await restore(settings, Path(args.file), force_base_url=args.force_base_url)
    print(
        f"restored the backup of {done.base_url} made {done.created}: {done.rows} rows in "
        f"{len(done.tables)} tables, {done.media_files} media files"
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    made = sub.add_parser(
        "backup",
        help="write the whole instance (database and media) to one file",
        description="Write the whole instance (every table, read as one consistent state "
        "while it runs, and the media folder) to one new file. It holds every private key "
        "and is made readable by its owner only: keep it safe. See docs/backup.md.",
    )
    made.add_argument("--out", required=True, metavar="FILE", help="a new file")
    back = sub.add_parser(
        "restore",
        help="restore a backup into a new, migrated, empty database",
        description="Restore a backup made by `interocc backup` into an empty database made "
        "by `interocc migrate` at the same schema revision, and its media files into the "
        "media folder; all or nothing. See docs/backup.md.",
    )
    back.add_argument("file")
    back.add_argument(
        "--force-base-url",
        action="store_true",
        help="restore a backup made under another INTEROCC_BASE_URL (its ids will not match)",
    )
