"""`interocc backup` / `interocc restore`: an instance restored from its backup into a new
database answers exactly as before — actors, keys, communiqués, WebFinger, outbox, media.

Both instances are served by the real app (in process, lifespan run) under the same base
URL, and their answers compared byte for byte; the restored database is backed up again
and its rows compared with the first backup's, which covers every column of every table.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import io
import json
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Enum,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Table,
    func,
    select,
    text,
)
from starlette.datastructures import Headers, UploadFile

from server import accounts, assemblies, backup, cli, communiques, media, memberships, polls
from server.app import create_app
from server.config import Settings
from server.context import Context, create_context
from server.db import create_engine
from server.errors import BadRequest, Conflict
from server.models import (
    Assembly,
    Base,
    Follower,
    FollowerStatus,
    InstanceKey,
    Letter,
    MediaPurpose,
    MemberRole,
    RemoteActor,
)
from tests.conftest import BACKENDS, fresh_database, make_settings
from tests.helpers import approved_assembly, post

BASE = "http://127.0.0.1:8000"
AP_JSON = "application/activity+json"
HANDLE = "libertyplaza"
FOLLOWER = "https://mastodon.example/users/dana"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, BASE, media_dir=tmp_path / "media-a")


@pytest.fixture
def settings_b(second_database_url: str, tmp_path: Path) -> Settings:
    """Where the backup is restored: a new, migrated database and an empty media folder."""
    return make_settings(second_database_url, BASE, media_dir=tmp_path / "media-b")


def png(colour: tuple[int, int, int]) -> UploadFile:
    out = io.BytesIO()
    Image.new("RGB", (30, 20), colour).save(out, "PNG")
    out.seek(0)
    return UploadFile(
        file=out, filename="tents.png", headers=Headers({"content-type": "image/png"})
    )


async def populate(ctx: Context) -> dict[str, str]:
    """An instance with two assemblies, an admin who facilitates one, a follower, a letter,
    communiqués (with an image, with a poll, a deleted one) and their deliveries; the URLs
    to compare."""
    await approved_assembly(ctx, HANDLE, summary="We meet daily at 7pm.")
    await approved_assembly(ctx, "oakland", name="Occupy Oakland")
    async with ctx.sessions() as session, session.begin():
        user = await accounts.create_user(
            session, email="ana@example.org", password="a long enough password", is_admin=True
        )
        assembly = await assemblies.get(session, HANDLE)
        await memberships.add(
            session,
            assembly_id=assembly.id,
            user_id=user.id,
            role=MemberRole.ADMIN,
            now=ctx.clock(),
        )
        dana = RemoteActor(
            uri=FOLLOWER,
            domain="mastodon.example",
            type="Person",
            preferred_username="dana",
            name="Dana",
            inbox_uri=f"{FOLLOWER}/inbox",
            shared_inbox_uri="https://mastodon.example/inbox",
            url="https://mastodon.example/@dana",
        )
        session.add(dana)
        await session.flush()
        session.add(
            Follower(
                assembly_id=assembly.id,
                actor_id=dana.id,
                follow_uri="https://mastodon.example/follows/1",
                status=FollowerStatus.ACCEPTED,
            )
        )
        session.add(
            Letter(
                assembly_id=assembly.id,
                uri=f"{FOLLOWER}/statuses/7",
                actor_uri=FOLLOWER,
                recipients=[ctx.urls.actor(HANDLE)],
                content_html="<p>Can we bring blankets <em>tonight</em>?</p>",
                thread=f"{FOLLOWER}/statuses/7",
                published_at=datetime(2011, 10, 20, 22, 15, tzinfo=UTC),
                document={"id": f"{FOLLOWER}/statuses/7", "n": 1.5},
            )
        )
        image = await media.store_upload(
            session,
            ctx.settings,
            assembly=assembly,
            upload=png((1, 2, 3)),
            purpose=MediaPurpose.ATTACHMENT,
            alt_text="Tents at dawn",
            user=user,
            now=ctx.clock(),
        )
        with_image = await communiques.publish(
            session,
            ctx.urls,
            handle=HANDLE,
            source="The camp, this morning. #occupy",
            now=ctx.clock(),
            attachments=[image],
        )
        poll = polls.validate("Stay\nMove", "24", now=ctx.clock())
        await communiques.publish(
            session, ctx.urls, handle=HANDLE, source="Stay or move?", now=ctx.clock(), poll=poll
        )
    await post(ctx, "oakland", "Solidarity from Oakland.", language="es")
    gone = await post(ctx, HANDLE, "A mistake.")
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=gone.url, now=ctx.clock())
    return {"communique": with_image.url, "deleted": gone.url, "image": image.file_name}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on ``settings``, in process, with its own context (lifespan run)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
            yield client


async def answers(settings: Settings, urls: dict[str, str]) -> dict[str, tuple[int, str, bytes]]:
    """(status, content type, body) of every federation GET compared."""
    actor = f"{BASE}/actors/{HANDLE}"
    gets = {
        "actor": (actor, AP_JSON),
        "oakland": (f"{BASE}/actors/oakland", AP_JSON),
        "communiqué": (urls["communique"], AP_JSON),
        "deleted communiqué": (urls["deleted"], AP_JSON),
        "webfinger": (f"{BASE}/.well-known/webfinger?resource=acct:{HANDLE}@127.0.0.1:8000", ""),
        "outbox": (f"{actor}/outbox", AP_JSON),
        "followers": (f"{actor}/followers", AP_JSON),
        "featured": (f"{actor}/featured", AP_JSON),
        "instance actor": (f"{BASE}/actor", AP_JSON),
        "image": (f"{BASE}/media/{urls['image']}", "*/*"),
    }
    got: dict[str, tuple[int, str, bytes]] = {}
    async with serving(settings) as client:
        for name, (url, accept) in gets.items():
            response = await client.get(url, headers={"Accept": accept} if accept else {})
            got[name] = (response.status_code, response.headers["content-type"], response.content)
        outbox = json.loads(got["outbox"][2])
        page = await client.get(outbox["first"], headers={"Accept": AP_JSON})
        got["outbox page"] = (page.status_code, page.headers["content-type"], page.content)
    return got


def rows_of(archive: Path) -> dict[str, bytes]:
    """Every member of a backup but its manifest's time."""
    with tarfile.open(archive, "r:gz") as tar:
        found = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(found.pop("manifest.json"))
    del manifest["created"]
    found["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return found


async def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t.name: int(await conn.scalar(select(func.count()).select_from(t)) or 0)
                for t in Base.metadata.sorted_tables
            }
    finally:
        await engine.dispose()


async def scalar(url: str, query: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(query)
    finally:
        await engine.dispose()


def parse(*argv: str) -> argparse.Namespace:
    """The arguments as `interocc` itself parses them, and the command it would run."""
    args = cli._parser().parse_args(argv)
    assert cli.COMMANDS[(args.command, getattr(args, "action", None))] in (
        backup.cmd_backup,
        backup.cmd_restore,
    )
    return args


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- the round trip -----------------------------------------------------------------------


async def test_restored_instance_answers_exactly_as_before(
    ctx: Context,
    settings: Settings,
    settings_b: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    urls = await populate(ctx)
    before = await answers(settings, urls)
    assert before["actor"][0] == before["communiqué"][0] == 200
    assert before["deleted communiqué"][0] == 410
    assert json.loads(before["followers"][2])["totalItems"] == 1
    assert json.loads(before["outbox page"][2])["orderedItems"]
    archive = tmp_path / "instance.tar.gz"

    await backup.cmd_backup(settings, parse("backup", "--out", str(archive)))
    written = capsys.readouterr().out
    assert written.startswith(f"wrote {archive} (")
    assert "readable by its owner only" in written and "1 media files" in written

    await backup.cmd_restore(settings_b, parse("restore", str(archive)))
    restored = capsys.readouterr().out
    assert restored.startswith(f"restored the backup of {BASE} made ")
    assert restored.strip().endswith("1 media files")

    assert await answers(settings_b, urls) == before
    assert files_under(settings_b.media_dir) == files_under(settings.media_dir)
    # A poll-less communiqué holds JSON null in `poll`: restored as such, not as SQL NULL
    # (and the reverse), since queries tell them apart.
    nulls = text("SELECT count(*) FROM communiques WHERE poll IS NULL OR ratification IS NULL")
    assert [await scalar(s.database_url, nulls) for s in (settings, settings_b)] == [0, 0]
    again = tmp_path / "again.tar.gz"
    await backup.backup(settings_b, again)
    assert rows_of(again) == rows_of(archive)


async def test_restored_keys_sign_as_before(
    ctx: Context, settings: Settings, settings_b: Settings, tmp_path: Path
) -> None:
    await approved_assembly(ctx, HANDLE)
    await backup.backup(settings, tmp_path / "b.tar.gz")
    await backup.restore(settings_b, tmp_path / "b.tar.gz")
    keys = select(Assembly.handle, Assembly.private_key_pem, Assembly.public_key_pem)
    instance = select(InstanceKey.private_key_pem).order_by(InstanceKey.id)
    restored = await create_context(settings_b)
    try:
        for query in (keys, instance):
            async with ctx.sessions() as a, restored.sessions() as b:
                assert (await a.execute(query)).all() == (await b.execute(query)).all()
        # What the restored instance signs with is the instance's key, not the one
        # `interocc migrate` made for the new database.
        assert restored.instance_public_key_pem == ctx.instance_public_key_pem
    finally:
        await restored.aclose()


async def test_new_rows_after_a_restore_take_new_ids(
    ctx: Context, settings: Settings, settings_b: Settings, tmp_path: Path
) -> None:
    """PostgreSQL's sequences start after the restored ids (SQLite's rowids do anyway)."""
    await approved_assembly(ctx, HANDLE)
    await post(ctx, HANDLE, "Before.")
    await backup.backup(settings, tmp_path / "b.tar.gz")
    await backup.restore(settings_b, tmp_path / "b.tar.gz")
    restored = await create_context(settings_b)
    try:
        await approved_assembly(restored, "oakland")
        published = await post(restored, HANDLE, "After.")
        async with restored.sessions() as session:
            ids = (await session.scalars(select(Assembly.id).order_by(Assembly.id))).all()
        assert len(set(ids)) == 2
        assert published.url != ""
    finally:
        await restored.aclose()


async def test_a_backup_sees_one_moment_and_holds_no_writer_back(
    ctx: Context, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A communiqué published while the backup runs (after it read the first tables) is not
    in it, and its writer did not wait for the backup to end."""
    await approved_assembly(ctx, HANDLE)
    dump_table = backup._dump_table
    published: list[str] = []

    async def dump_and_write(conn: Any, table: Table, *args: Any) -> tuple[int, set[str]]:
        if table.name == "assemblies":
            await approved_assembly(ctx, "latecomer")  # raises if the backup locked it out
            published.append((await post(ctx, HANDLE, "Meanwhile.")).url)
        return await dump_table(conn, table, *args)

    monkeypatch.setattr(backup, "_dump_table", dump_and_write)
    done = await asyncio.wait_for(backup.backup(settings, tmp_path / "b.tar.gz"), 60)
    assert published
    assert (done.tables["assemblies"], done.tables["communiques"]) == (1, 0)
    now = await counts(settings.database_url)
    assert (now["assemblies"], now["communiques"]) == (2, 1)


@pytest.mark.skipif(not {"sqlite", "postgresql"} <= set(BACKENDS), reason="needs both engines")
async def test_a_sqlite_instance_moves_to_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path, postgres_pool: Any
) -> None:
    """The format is the engine's own business: a SQLite backup restores into PostgreSQL.
    (The template fixtures are named so that they are made before the test's event loop.)"""
    sqlite = fresh_database("sqlite", request, tmp_path / "small.sqlite3")
    postgresql = fresh_database("postgresql", request, tmp_path / "unused")
    try:
        small = make_settings(next(sqlite), BASE, media_dir=tmp_path / "media-a")
        large = make_settings(next(postgresql), BASE, media_dir=tmp_path / "media-b")
        ctx = await create_context(small)
        try:
            urls = await populate(ctx)
        finally:
            await ctx.aclose()
        await backup.backup(small, tmp_path / "small.tar.gz")
        await backup.restore(large, tmp_path / "small.tar.gz")
        assert await answers(large, urls) == await answers(small, urls)
        await backup.backup(large, tmp_path / "large.tar.gz")
        assert rows_of(tmp_path / "large.tar.gz") == rows_of(tmp_path / "small.tar.gz")
    finally:
        for generator in (sqlite, postgresql):
            next(generator, None)  # drops the PostgreSQL database


# -- what a restore refuses ---------------------------------------------------------------


async def test_restoring_into_a_database_with_rows_is_refused_and_changes_nothing(
    ctx: Context, settings: Settings, settings_b: Settings, tmp_path: Path
) -> None:
    await populate(ctx)
    archive = tmp_path / "b.tar.gz"
    await backup.backup(settings, archive)
    await backup.restore(settings_b, archive)
    for target in (settings, settings_b):  # the instance itself; one restored already
        rows, files = await counts(target.database_url), files_under(target.media_dir)
        with pytest.raises(Conflict, match="not empty \\(table remote_actors has rows\\)"):
            await backup.restore(target, archive)
        assert await counts(target.database_url) == rows
        assert files_under(target.media_dir) == files


async def test_a_damaged_archive_changes_nothing(
    ctx: Context, settings: Settings, settings_b: Settings, tmp_path: Path
) -> None:
    """The last table's last row is bad: every row before it was inserted, then undone."""
    await populate(ctx)
    archive = tmp_path / "b.tar.gz"
    await backup.backup(settings, archive)
    last = Base.metadata.sorted_tables[-1].name
    members = rows_of(archive)
    members[f"db/{last}.jsonl"] += b'{"id": "not a row"}\n'
    manifest = json.loads(members["manifest.json"])
    manifest["tables"][last] += 1
    members["manifest.json"] = json.dumps(manifest).encode()
    damaged = tmp_path / "damaged.tar.gz"
    write_tar(damaged, members)
    before = await counts(settings_b.database_url)

    with pytest.raises(BadRequest, match=f"db/{last}.jsonl line"):
        await backup.restore(settings_b, damaged)
    assert await counts(settings_b.database_url) == before
    assert files_under(settings_b.media_dir) == {}


async def test_a_media_file_that_cannot_be_written_undoes_the_restore(
    ctx: Context, settings: Settings, settings_b: Settings, tmp_path: Path
) -> None:
    """Media files are written last, before the rows commit: one that clashes with a file
    already there undoes the rows and removes the files written before it."""
    await populate(ctx)
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "oakland")
        await media.store_upload(
            session,
            settings,
            assembly=assembly,
            upload=png((9, 9, 9)),
            purpose=MediaPurpose.AVATAR,
            now=ctx.clock(),
        )
    archive = tmp_path / "b.tar.gz"
    await backup.backup(settings, archive)
    names = sorted(files_under(settings.media_dir))
    assert len(names) == 2
    settings_b.media_dir.mkdir()
    (settings_b.media_dir / names[-1]).write_bytes(b"something else")
    before = await counts(settings_b.database_url)

    with pytest.raises(Conflict, match="already exists with other content"):
        await backup.restore(settings_b, archive)
    assert await counts(settings_b.database_url) == before
    assert files_under(settings_b.media_dir) == {names[-1]: b"something else"}


async def test_a_backup_of_another_base_url_needs_force(
    ctx: Context, settings: Settings, second_database_url: str, tmp_path: Path
) -> None:
    await approved_assembly(ctx, HANDLE)
    archive = tmp_path / "b.tar.gz"
    await backup.backup(settings, archive)
    elsewhere = make_settings(second_database_url, "https://new.example", media_dir=tmp_path / "m")
    with pytest.raises(BadRequest) as refused:
        await backup.restore(elsewhere, archive)
    assert refused.value.message.startswith(f"this backup is of {BASE}, not https://new.example")
    assert "--force-base-url" in refused.value.message
    assert (await counts(second_database_url))["assemblies"] == 0

    done = await backup.restore(elsewhere, archive, force_base_url=True)
    assert done.tables["assemblies"] == 1
    assert (await counts(second_database_url))["assemblies"] == 1


async def test_an_outdated_database_is_refused(
    ctx: Context, settings: Settings, settings_b: Settings, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.gz"
    await backup.backup(settings, archive)
    engine = create_engine(settings_b.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    finally:
        await engine.dispose()
    with pytest.raises(BadRequest, match="not up to date: run `interocc migrate` first"):
        await backup.restore(settings_b, archive)
    with pytest.raises(BadRequest, match="not up to date"):
        await backup.backup(settings_b, tmp_path / "c.tar.gz")
    assert not (tmp_path / "c.tar.gz").exists()


async def test_backup_never_writes_over_a_file(settings: Settings, tmp_path: Path) -> None:
    existing = tmp_path / "b.tar.gz"
    existing.write_bytes(b"keep me")
    with pytest.raises(BadRequest, match="already exists"):
        await backup.backup(settings, existing)
    assert existing.read_bytes() == b"keep me"


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# -- values (pure) ------------------------------------------------------------------------


class Colour(enum.StrEnum):
    RED = "red"


SAMPLES = Table(
    "samples",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=True),
    Column("naive", DateTime(), nullable=True),
    Column("blob", LargeBinary, nullable=True),
    Column("amount", Numeric(10, 2), nullable=True),
    Column("colour", Enum(Colour, native_enum=False), nullable=True),
    Column("doc", JSON, nullable=True),
)


def test_every_column_of_the_schema_has_a_codec() -> None:
    for table in Base.metadata.sorted_tables:
        assert len(backup._codecs(table)) == len(table.columns)


def test_values_round_trip_by_type() -> None:
    codecs = backup._codecs(SAMPLES)

    row = (
        7,
        datetime(2011, 9, 17, 15, 0, 0, 123456, tzinfo=UTC),
        datetime(2011, 9, 17, 15, 0),
        b"\x00\xffbytes",
        Decimal("12.30"),
        Colour.RED,
        '{"a": [1, 2.5, null]}',  # JSON columns are read as their stored text
    )
    line = backup._encode_row(codecs, row)
    assert json.loads(line) == {
        "id": 7,
        "at": "2011-09-17T15:00:00.123456+00:00",
        "naive": "2011-09-17T15:00:00",
        "blob": "AP9ieXRlcw==",
        "amount": "12.30",
        "colour": "red",
        "doc": {"a": [1, 2.5, None]},
    }
    decoded = backup._decode_row(codecs, line.encode(), "here")
    assert [decoded[c.name] for c in codecs[:-1]] == list(row[:-1])
    assert decoded["doc"] == {"a": [1, 2.5, None]}


def test_sql_null_and_json_null_stay_apart() -> None:
    codecs = backup._codecs(SAMPLES)
    empty = (1, None, None, None, None, None, None)
    json_null = (*empty[:-1], "null")
    as_sql_null = backup._encode_row(codecs, empty)
    as_json_null = backup._encode_row(codecs, json_null)
    assert json.loads(as_json_null)["$json_null"] == ["doc"]
    assert "$json_null" not in json.loads(as_sql_null)
    assert backup._decode_row(codecs, as_json_null.encode(), "here")["doc"] is JSON.NULL
    sql_null = backup._decode_row(codecs, as_sql_null.encode(), "here")["doc"]
    assert sql_null is not None and sql_null is not JSON.NULL  # null(): SQL NULL


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": True}, "column id: expected a whole number"),
        ({"id": "7"}, "column id: expected a whole number"),
        ({"id": None}, "column id may not be null"),
        ({"at": "2011-09-17T15:00:00"}, "column at: expected a datetime with its offset"),
        ({"at": "yesterday"}, "column at: expected a datetime"),
        ({"blob": "not base64!"}, "column blob: expected base64"),
        ({"colour": "blue"}, 'column colour: "blue" is not one of its values'),
        ({"extra": 1}, "unknown column extra"),
        ({"$json_null": ["id"]}, "\\$json_null must list JSON columns"),
    ],
)
def test_bad_values_are_refused_with_their_place(change: dict[str, Any], reason: str) -> None:
    codecs = backup._codecs(SAMPLES)
    row = json.loads(backup._encode_row(codecs, (1, None, None, None, None, None, None)))
    with pytest.raises(BadRequest, match=f"damaged: db/samples.jsonl line 3: {reason}"):
        backup._decode_row(
            codecs, json.dumps({**row, **change}).encode(), "db/samples.jsonl line 3"
        )
