"""An assembly survives losing its server: exported to one encrypted file, imported elsewhere.

Instance A (sol.example) holds an assembly with everything an assembly has: communiqués (the
founding one, one with a photo, a ratified one, a poll, a pinned one, a deleted one), an
icon, a follower, a follow, letters and a co-signature. The real ``interocc`` commands export
it from A's database and import it into B's (refugio.example), each with its own media
folder. On B it is a new actor, pending approval, that names its old id as an alias; its
communiqués keep their dates and say where they were first published; once approved it
follows again what it followed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select
from starlette.datastructures import UploadFile

from server import archive, assemblies, communiques, media, polls, ratification
from server.config import Settings
from server.context import Context, create_context
from server.errors import BadRequest
from server.models import (
    Activity,
    AssemblyStatus,
    Communique,
    Delivery,
    Follower,
    FollowerStatus,
    Following,
    FollowStatus,
    Letter,
    Media,
    MediaPurpose,
    RemoteActor,
    Share,
)
from tests.conftest import SECRET, make_settings
from tests.helpers import approved_assembly
from tests.support.servers import free_port
from tests.test_cli import INTEROCC, SEED
from tests.test_read_cache import running

A_URL = "https://sol.example"
B_URL = "https://refugio.example"
PASSPHRASE = "we are the ninety-nine percent"
FOLLOWER = "https://mastodon.example/users/dana"
FRIENDS_ON_B = f"{B_URL}/actors/friends"
FOUNDED = datetime(2011, 9, 17, 15, 0, 0, 123456, tzinfo=UTC)
PHOTO_DAY = datetime(2011, 10, 1, 18, 30, tzinfo=UTC)
RATIFIED_DAY = datetime(2011, 10, 10, 20, 0, tzinfo=UTC)
POLL_DAY = datetime(2011, 11, 2, 12, 0, tzinfo=UTC)
DELETED_DAY = datetime(2011, 11, 5, 9, 0, tzinfo=UTC)
DECISION = {
    "decided_on": "2011-10-09",
    "decided_at": "Liberty Plaza",
    "process": "modified-consensus",
    "threshold_percent": "90",
    "votes_for": "312",
    "votes_against": "12",
    "abstentions": "20",
    "blocks": "0",
    "minutes": "https://minutes.example/2011-10-09",
}


def instance_settings(database_url: str, base_url: str, media_dir: Path) -> Settings:
    return make_settings(database_url, base_url, media_dir=media_dir)


def image_bytes(colour: tuple[int, int, int], kind: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(out, kind)
    return out.getvalue()


@dataclass(frozen=True)
class Populated:
    """What instance A holds of the assembly, to compare with what B gets."""

    actor_uri: str
    private_key_pem: str
    public_key_pem: str
    founding_url: str
    photo_url: str
    ratified_url: str
    poll_url: str
    deleted_url: str


async def populate(ctx: Context, handle: str = "libertyplaza") -> Populated:
    """An approved assembly with one of everything an assembly has."""
    await approved_assembly(
        ctx,
        handle,
        summary="The people of Liberty Plaza, in General Assembly.",
        place="Liberty Plaza, New York",
        languages=["en", "es"],
    )
    s, urls = ctx.settings, ctx.urls
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        assembly.discoverable = False
        assembly.publish_social_graph = True
        await assemblies.set_image(
            session,
            s,
            urls,
            assembly=assembly,
            upload=UploadFile(file=io.BytesIO(image_bytes((0, 128, 0))), filename="fist.png"),
            purpose=MediaPurpose.AVATAR,
            user=None,
            field="icon",
            now=FOUNDED,
        )
        founding = await communiques.publish(
            session,
            urls,
            handle=handle,
            source=SEED.read_text(encoding="utf-8") + "\n\n#OccupyWallStreet",
            now=FOUNDED,
        )
        founding.communique.pinned_at = PHOTO_DAY
        photo = await media.store_upload(
            session,
            s,
            assembly=assembly,
            upload=UploadFile(file=io.BytesIO(image_bytes((200, 0, 0), "JPEG")), filename="a.jpg"),
            purpose=MediaPurpose.ATTACHMENT,
            alt_text="A red banner over the plaza",
            now=PHOTO_DAY,
        )
        with_photo = await communiques.publish(
            session,
            urls,
            handle=handle,
            source="Our banner, *raised*.",
            language="en",
            now=PHOTO_DAY,
            attachments=[photo],
        )
        ratified = await communiques.publish(
            session,
            urls,
            handle=handle,
            source="Declaración de la ocupación.",
            language="es",
            summary="A long text",
            now=RATIFIED_DAY,
            decision=ratification.validate(DECISION),
        )
        poll = polls.validate("Stay\nMove", "24", now=POLL_DAY)
        assert poll is not None
        poll["counts"] = {"Stay": 40, "Move": 2}
        poll["voters"] = 42
        asked = await communiques.publish(
            session, urls, handle=handle, source="Winter: stay or move?", now=POLL_DAY, poll=poll
        )
        gone = await communiques.publish(
            session, urls, handle=handle, source="A mistake.", now=DELETED_DAY
        )
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, urls, url=gone.url, now=DELETED_DAY)
        assembly = await assemblies.get(session, handle)
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
            Following(
                assembly_id=assembly.id,
                target_uri=FRIENDS_ON_B,
                inbox_uri=f"{FRIENDS_ON_B}/inbox",
                follow_uri=f"{A_URL}/activities/follow-friends",
                status=FollowStatus.ACCEPTED,
            )
        )
        session.add(
            Letter(
                assembly_id=assembly.id,
                uri="https://mastodon.example/users/dana/statuses/7",
                actor_uri=FOLLOWER,
                recipients=[ctx.urls.actor(handle)],
                content_html="<p>Can we bring blankets <em>tonight</em>?</p>",
                thread="https://mastodon.example/users/dana/statuses/7",
                published_at=datetime(2011, 10, 20, 22, 15, tzinfo=UTC),
                document={"id": "https://mastodon.example/users/dana/statuses/7"},
            )
        )
        session.add(
            Share(
                communique_id=founding.communique.id,
                actor_uri="https://tahrir.example/actors/square",
                announce_uri="https://tahrir.example/activities/cosign-1",
                actor_name="Tahrir Square Assembly",
                actor_type="Group",
                created_at=PHOTO_DAY,
            )
        )
        return Populated(
            actor_uri=urls.actor(handle),
            private_key_pem=assembly.private_key_pem,
            public_key_pem=assembly.public_key_pem,
            founding_url=founding.url,
            photo_url=with_photo.url,
            ratified_url=ratified.url,
            poll_url=asked.url,
            deleted_url=gone.url,
        )


def interocc(settings: Settings, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEROCC_")}
    env |= {
        "INTEROCC_DATABASE_URL": settings.database_url,
        "INTEROCC_SECRET_KEY": SECRET,
        "INTEROCC_BASE_URL": settings.base_url,
        "INTEROCC_MEDIA_DIR": str(settings.media_dir),
    }
    return subprocess.run(
        [str(INTEROCC), *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


async def run_ok(settings: Settings, *args: str, stdin: str = "") -> str:
    done = await asyncio.to_thread(interocc, settings, *args, stdin=stdin)
    assert done.returncode == 0, f"interocc {' '.join(args)}: {done.stdout}{done.stderr}"
    assert done.stderr == ""
    return done.stdout


@pytest.fixture
async def ctx_a(database_url: str, tmp_path: Path) -> AsyncIterator[Context]:
    context = await create_context(instance_settings(database_url, A_URL, tmp_path / "a-media"))
    yield context
    await context.aclose()


@pytest.fixture
async def ctx_b(second_database_url: str, tmp_path: Path) -> AsyncIterator[Context]:
    context = await create_context(
        instance_settings(second_database_url, B_URL, tmp_path / "b-media")
    )
    yield context
    await context.aclose()


async def test_an_assembly_exported_from_one_instance_is_imported_on_another_pending(
    ctx_a: Context, ctx_b: Context, tmp_path: Path
) -> None:
    old = await populate(ctx_a)
    file = tmp_path / "libertyplaza.interocc"

    out = await run_ok(
        ctx_a.settings,
        "assembly", "export", "libertyplaza", "--out", str(file), "--passphrase-stdin",
        stdin=PASSPHRASE + "\n",
    )  # fmt: skip
    assert out.startswith(f"exported {old.actor_uri} to {file}")
    assert "4 communiques, 1 attachments, 1 ratification records, 1 polls, 1 pins" in out
    data = file.read_bytes()
    assert data.startswith(archive.MAGIC)
    assert stat.S_IMODE(file.stat().st_mode) == 0o600  # it holds a private key
    assert f"sha256 {archive.digest(data)}" in out
    assert b"Liberty Plaza" not in data and b"PRIVATE KEY" not in data  # encrypted

    # B: its own assembly "friends", which the exported assembly followed.
    await approved_assembly(ctx_b, "friends", name="Friends of the Plaza")
    out = await run_ok(
        ctx_b.settings,
        "assembly", "import", str(file), "--handle", "plaza_libre", "--passphrase-stdin",
        stdin=PASSPHRASE + "\n",
    )  # fmt: skip
    assert out.splitlines()[0] == f"imported {old.actor_uri} as plaza_libre (pending approval)"
    assert "4 communiqués (1 attachments, 1 ratification records, 1 polls, 1 pinned" in out
    assert "1 letters, images: icon" in out
    assert "1 follows to send again once approved" in out and "1 followers kept" in out

    async with ctx_b.sessions() as session:
        new = await assemblies.get(session, "plaza_libre")
        rows = (
            await session.scalars(
                select(Communique)
                .where(Communique.assembly_id == new.id)
                .order_by(Communique.published_at)
            )
        ).all()
        files = await communiques.attachments_of(session, [c.id for c in rows])
        creates = (
            await session.scalars(select(Activity).where(Activity.assembly_id == new.id))
        ).all()
        letters = (await session.scalars(select(Letter))).all()
        shares = (await session.scalars(select(Share))).all()
        icon = (
            await session.scalars(select(Media).where(Media.purpose == MediaPurpose.AVATAR))
        ).one()
        record = await archive.import_record(session, "plaza_libre")
        deliveries = (await session.scalars(select(Delivery))).all()
        followers = (await session.scalars(select(Follower))).all()
        followings = (await session.scalars(select(Following))).all()

    # The profile, pending this instance's approval, as a new actor naming its old id.
    assert new.status is AssemblyStatus.PENDING
    assert new.also_known_as == [old.actor_uri]
    assert (new.name, new.summary, new.place, new.languages) == (
        "Liberty Plaza General Assembly",
        "The people of Liberty Plaza, in General Assembly.",
        "Liberty Plaza, New York",
        ["en", "es"],
    )
    assert (new.discoverable, new.publish_social_graph) == (False, True)
    assert new.public_key_pem != old.public_key_pem
    assert new.icon_url == f"{B_URL}/media/{icon.file_name}"
    assert (ctx_b.settings.media_dir / icon.file_name).is_file()

    # Its communiqués (not the deleted one): new ids, first dates, where first published.
    originals = [old.founding_url, old.photo_url, old.ratified_url, old.poll_url]
    assert [c.published_at for c in rows] == [FOUNDED, PHOTO_DAY, RATIFIED_DAY, POLL_DAY]
    for c, original in zip(rows, originals, strict=True):
        assert c.public_id not in original
        assert c.source.endswith(f"\n\n*First published at <{original}>*")
        assert f'<a href="{original}"' in c.content_html
    seed = SEED.read_text(encoding="utf-8")
    founding, photo, ratified, asked = rows
    assert founding.source.startswith(seed + "\n\n#OccupyWallStreet")
    assert founding.hashtags == ["OccupyWallStreet"]
    assert f'href="{B_URL}/tags/occupywallstreet"' in founding.content_html
    assert founding.pinned_at == PHOTO_DAY and photo.pinned_at is None
    assert "<em>raised</em>" in photo.content_html
    [attachment] = files[photo.id]
    assert (attachment.alt_text, attachment.media_type) == (
        "A red banner over the plaza",
        "image/jpeg",
    )
    assert (ctx_b.settings.media_dir / attachment.file_name).is_file()
    assert (ratified.language, ratified.summary) == ("es", "A long text")
    assert ratified.ratification == ratification.validate(DECISION)
    assert asked.poll is not None and asked.poll["counts"] == {"Stay": 40, "Move": 2}
    assert asked.poll_closed_at is not None  # votes go to the original poll
    assert len(rows) == 4

    # Each has its Create, dated as first published, sent to nobody.
    assert sorted((a.type, a.created_at) for a in creates) == [
        ("Create", FOUNDED),
        ("Create", PHOTO_DAY),
        ("Create", RATIFIED_DAY),
        ("Create", POLL_DAY),
    ]
    assert deliveries == []

    # Letters and co-signatures; followers and follows only in the import record.
    [letter] = letters
    assert letter.assembly_id == new.id and letter.actor_uri == FOLLOWER
    assert letter.content_html == "<p>Can we bring blankets <em>tonight</em>?</p>"
    assert letter.published_at == datetime(2011, 10, 20, 22, 15, tzinfo=UTC)
    [share] = shares
    assert (share.communique_id, share.actor_name) == (founding.id, "Tahrir Square Assembly")
    assert followers == [] and followings == []
    assert record is not None
    assert record["old_actor"] == old.actor_uri
    assert record["old_private_key_pem"] == old.private_key_pem
    assert record["old_public_key_pem"] == old.public_key_pem
    assert record["followers"] == [
        {
            "id": FOLLOWER,
            "inbox": f"{FOLLOWER}/inbox",
            "shared_inbox": "https://mastodon.example/inbox",
            "status": "accepted",
        }
    ]
    assert [f["id"] for f in record["following"]] == [FRIENDS_ON_B]

    # Approved, it follows again what it followed (here an assembly of B itself).
    await run_ok(ctx_b.settings, "assembly", "approve", "plaza_libre")
    out = await run_ok(ctx_b.settings, "assembly", "refollow", "plaza_libre")
    assert out == "follow requests sent: 1; already followed: 0\n"
    async with ctx_b.sessions() as session:
        [follow] = (await session.scalars(select(Following))).all()
    assert (follow.target_uri, follow.status) == (FRIENDS_ON_B, FollowStatus.PENDING)


async def test_the_archive_holds_what_the_assembly_serves_readable_by_a_person(
    ctx_a: Context,
) -> None:
    old = await populate(ctx_a)
    async with ctx_a.sessions() as session, session.begin():
        exported = await archive.export_assembly(
            session, ctx_a.settings, ctx_a.urls, handle="libertyplaza", now=ctx_a.clock()
        )
    files = archive.unpack(
        archive.decrypt(archive.encrypt(exported.zip_data, PASSPHRASE), PASSPHRASE)
    )

    def doc(name: str) -> dict[str, object]:
        value = json.loads(files[name])
        assert isinstance(value, dict)
        return value

    manifest = doc("manifest.json")
    assert {k: manifest[k] for k in ("format", "version", "instance", "actor", "handle")} == {
        "format": "interocc-assembly-archive",
        "version": 1,
        "instance": A_URL,
        "actor": old.actor_uri,
        "handle": "libertyplaza",
    }
    assert manifest["missing_files"] == []
    key = doc("key.json")
    assert (key["private_key_pem"], key["public_key_pem"]) == (
        old.private_key_pem,
        old.public_key_pem,
    )

    # outbox.json is the assembly's outbox, every page of it at once, as the app serves it.
    async with running(ctx_a.settings, ctx_a) as (_app, client):
        served = (await client.get("/actors/libertyplaza/outbox?page=1")).json()
        actor = (await client.get("/actors/libertyplaza")).json()
        featured = (await client.get("/actors/libertyplaza/featured")).json()
    outbox = doc("outbox.json")
    assert outbox["type"] == "OrderedCollection" and outbox["totalItems"] == 4
    assert outbox["orderedItems"] == served["orderedItems"]
    assert [item["object"]["id"] for item in served["orderedItems"]] == [
        old.poll_url,
        old.ratified_url,
        old.photo_url,
        old.founding_url,
    ]
    assert old.deleted_url not in json.dumps(outbox)
    assert doc("actor.json") == actor
    assert doc("featured.json")["orderedItems"] == featured["orderedItems"]

    followers = doc("followers.json")
    [dana] = followers["orderedItems"]  # type: ignore[misc]
    assert (dana["id"], dana["inbox"], dana["endpoints"]) == (
        FOLLOWER,
        f"{FOLLOWER}/inbox",
        {"sharedInbox": "https://mastodon.example/inbox"},
    )
    [friends] = doc("following.json")["orderedItems"]  # type: ignore[misc]
    assert (friends["id"], friends["follow"]["status"]) == (FRIENDS_ON_B, "accepted")
    [letter] = doc("letters.json")["orderedItems"]  # type: ignore[misc]
    assert letter["content_html"] == "<p>Can we bring blankets <em>tonight</em>?</p>"

    # The files, byte for byte: the icon and the photo.
    async with ctx_a.sessions() as session:
        stored = (await session.scalars(select(Media))).all()
    assert {f"media/{m.file_name}" for m in stored} == {n for n in files if n.startswith("media/")}
    for m in stored:
        assert (
            files[f"media/{m.file_name}"] == (ctx_a.settings.media_dir / m.file_name).read_bytes()
        )
    # A person reads it: indented UTF-8 JSON, accents as they are.
    assert "Declaración" in files["communiques.json"].decode("utf-8")


async def test_an_imported_assembly_refollows_only_once_approved_and_reports_who_failed(
    ctx_a: Context, ctx_b: Context
) -> None:
    await populate(ctx_a)
    unreachable = f"http://127.0.0.1:{free_port()}/actors/nobody"
    cached = "https://tahrir.example/actors/square"
    async with ctx_a.sessions() as session, session.begin():
        assembly = await assemblies.get(session, "libertyplaza")
        for n, target in enumerate((unreachable, cached)):
            session.add(
                Following(
                    assembly_id=assembly.id,
                    target_uri=target,
                    inbox_uri=f"{target}/inbox",
                    follow_uri=f"{A_URL}/activities/f{n}",
                    status=FollowStatus.PENDING,
                )
            )
    async with ctx_a.sessions() as session, session.begin():
        exported = await archive.export_assembly(
            session, ctx_a.settings, ctx_a.urls, handle="libertyplaza", now=ctx_a.clock()
        )
    opened = archive.parse(archive.unpack(exported.zip_data))
    await approved_assembly(ctx_b, "friends")
    async with ctx_b.sessions() as session, session.begin():
        # B knows the Tahrir assembly already (a fresh copy: no fetch needed).
        session.add(
            RemoteActor(
                uri=cached,
                domain="tahrir.example",
                type="Group",
                preferred_username="square",
                inbox_uri=f"{cached}/inbox",
                fetched_at=ctx_b.clock(),
            )
        )
        stored: list[Media] = []
        await archive.import_archive(
            session,
            ctx_b.settings,
            ctx_b.urls,
            archive=opened,
            handle="plaza_libre",
            now=ctx_b.clock(),
            stored=stored,
        )
    assert len(stored) == 2  # the icon and the photo

    with pytest.raises(BadRequest, match="plaza_libre is pending: it cannot publish"):
        async with ctx_b.sessions() as session, session.begin():
            await archive.refollow(session, ctx_b, handle="plaza_libre", now=ctx_b.clock())

    async with ctx_b.sessions() as session, session.begin():
        await assemblies.approve(session, "plaza_libre", now=ctx_b.clock())
        done = await archive.refollow(session, ctx_b, handle="plaza_libre", now=ctx_b.clock())
    assert set(done.sent) == {FRIENDS_ON_B, cached}
    [(target, reason)] = done.failed
    assert target == unreachable and reason.startswith("cannot fetch")

    async with ctx_b.sessions() as session, session.begin():
        again = await archive.refollow(session, ctx_b, handle="plaza_libre", now=ctx_b.clock())
        follows = (await session.scalars(select(Following))).all()
        sent = (
            await session.scalars(
                select(Delivery.inbox_uri).join(Activity).where(Activity.type == "Follow")
            )
        ).all()
    assert set(again.already) == {FRIENDS_ON_B, cached} and again.sent == ()
    assert {f.target_uri for f in follows} == {FRIENDS_ON_B, cached}
    assert set(sent) == {f"{FRIENDS_ON_B}/inbox", f"{cached}/inbox"}


async def test_an_assembly_with_nothing_yet_round_trips(ctx_a: Context, ctx_b: Context) -> None:
    await approved_assembly(ctx_a, "newborn", name="A new assembly")
    async with ctx_a.sessions() as session, session.begin():
        exported = await archive.export_assembly(
            session, ctx_a.settings, ctx_a.urls, handle="newborn", now=ctx_a.clock()
        )
    assert set(exported.counts.values()) == {0}
    opened = archive.open_archive(archive.encrypt(exported.zip_data, PASSPHRASE), PASSPHRASE)
    async with ctx_b.sessions() as session, session.begin():
        imported = await archive.import_archive(
            session,
            ctx_b.settings,
            ctx_b.urls,
            archive=opened,
            handle="newborn",
            now=ctx_b.clock(),
            stored=[],
        )
    assert imported.assembly.name == "A new assembly"
    assert imported.assembly.also_known_as == [f"{A_URL}/actors/newborn"]
    assert set(imported.counts.values()) == {0} and imported.images == ()


def test_a_pending_assembly_is_refused_an_export_over_an_existing_file(
    database_url: str, tmp_path: Path
) -> None:
    async def setup() -> None:
        settings = instance_settings(database_url, A_URL, tmp_path / "media")
        ctx = await create_context(settings)
        try:
            async with ctx.sessions() as session, session.begin():
                await assemblies.create(session, handle="quiet", name="Quiet")
        finally:
            await ctx.aclose()

    asyncio.run(setup())
    settings = instance_settings(database_url, A_URL, tmp_path / "media")
    taken = tmp_path / "taken.interocc"
    taken.write_bytes(b"an earlier export")
    refused = interocc(
        settings, "assembly", "export", "quiet", "--out", str(taken), "--passphrase-stdin",
        stdin=PASSPHRASE + "\n",
    )  # fmt: skip
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == f"interocc: {taken} already exists: choose another name\n"
    assert taken.read_bytes() == b"an earlier export"
    short = interocc(
        settings, "assembly", "export", "quiet", "--out", str(tmp_path / "new"),
        "--passphrase-stdin", stdin="short\n",
    )  # fmt: skip
    assert short.stderr == "interocc: choose a passphrase of at least 12 characters\n"
    assert not (tmp_path / "new").exists()
    # Pending assemblies are exported too: an admin may carry one before approving it.
    done = interocc(
        settings, "assembly", "export", "quiet", "--out", str(tmp_path / "new"),
        "--passphrase-stdin", stdin=PASSPHRASE + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    opened = archive.open_archive((tmp_path / "new").read_bytes(), PASSPHRASE)
    assert (opened.handle, opened.name) == ("quiet", "Quiet")
