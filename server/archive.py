"""Assembly archives: an assembly carries itself to another instance.

Servers get seized. ``interocc assembly export`` writes one file holding everything that is
an assembly's: its profile and images, its key pair, its communiqués with their files,
ratification records and polls, its followers, what it follows, its correspondence, the
co-signatures of its communiqués and those it made, its pins. ``interocc assembly import``
recreates it on another instance, pending that instance's approval, under a new actor id that
names the old one in ``alsoKnownAs``. docs/archive.md describes the format for people.

The file is a ZIP of JSON documents (ActivityStreams where it fits) and media files,
encrypted as a whole: it holds the assembly's private key and private letters. A passphrase
gives the key through scrypt; AES-256-GCM encrypts and authenticates the ZIP, with the
header (magic, versions, scrypt parameters, salt, nonce) as associated data, so that any
changed byte is refused. Scrypt rather than Argon2id: ``cryptography`` has Argon2id only
from version 44 and with OpenSSL 3.2, and an archive must open on any instance we support.

Nothing here trusts an archive: the header's parameters are bounded before any key is
derived, ZIP members are read by their exact names with size limits (a name that could be a
path elsewhere is refused), every JSON field is checked, communiqués are rendered again from
their Markdown, letters are sanitised like remote posts, and files go through the same
checks as uploads (server.media).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from server import assemblies, communiques, following, media, ratification
from server.activitypub import outbox
from server.activitypub.mentions import Mention
from server.activitypub.signatures import load_private_key, load_public_key
from server.activitypub.vocab import CONTEXT, PUBLIC, build_assembly_actor
from server.config import Settings
from server.content import render_markdown, safe_link, sanitise_html
from server.context import Context
from server.errors import BadRequest, Conflict
from server.models import (
    Activity,
    Assembly,
    Communique,
    Follower,
    Following,
    FollowStatus,
    InstanceSetting,
    Letter,
    Media,
    MediaPurpose,
    PollVote,
    RemoteActor,
    Reply,
    Share,
)
from server.urls import Urls, new_public_id

FORMAT = "interocc-assembly-archive"
VERSION = 1  # of the archive's contents (manifest.json)

# -- the encrypted file --------------------------------------------------------------------

MAGIC = b"InterOccArchive\n"
# magic, header version, KDF, scrypt log2(N), r, p, AEAD, salt, nonce: all big-endian.
HEADER = struct.Struct(">16sBBBIIB16s12s")
HEADER_VERSION = 1
KDF_SCRYPT = 1
AEAD_AES_256_GCM = 1
SALT_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
# The whole ZIP is encrypted in one piece, so it is held in memory: an archive (and what it
# unpacks to) is bounded. A few hundred MB is what a large assembly's export weighs.
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 50_000
MAX_JSON_BYTES = 256 * 1024 * 1024
MAX_MEDIA_BYTES = 64 * 1024 * 1024
MIN_PASSPHRASE = 12

WRONG_PASSPHRASE = "wrong passphrase or damaged archive"


class ArchiveError(BadRequest):
    """An archive refused: not one, damaged, tampered with, of an unknown version, or the
    wrong passphrase. Nothing is written when one is raised."""

    public = WRONG_PASSPHRASE


def _damaged(what: str) -> ArchiveError:
    return ArchiveError(f"damaged archive: {what}")


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost: N = 2**log2_n, block size r, parallelism p; memory is 128·N·r bytes."""

    log2_n: int = 17  # 128 MiB and about half a second: an archive is opened rarely
    r: int = 8
    p: int = 1

    def check(self) -> None:
        """Refuse parameters out of bounds before deriving anything: a tampered header must
        not make the importer spend gigabytes or minutes."""
        memory = 128 * self.r * (1 << min(self.log2_n, 40))
        if not (14 <= self.log2_n <= 20 and 1 <= self.r <= 32 and 1 <= self.p <= 4):
            raise _damaged("its key derivation parameters are out of range")
        if memory > 512 * 1024 * 1024:
            raise _damaged("its key derivation parameters are out of range")


DEFAULT_SCRYPT = ScryptParams()


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    # NFC: the same passphrase typed on another system (composed or decomposed accents)
    # gives the same key.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    kdf = Scrypt(salt=salt, length=32, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(secret)


def check_passphrase(passphrase: str) -> str:
    """A passphrase fit to protect an archive (it guards a private key offline)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BadRequest(f"choose a passphrase of at least {MIN_PASSPHRASE} characters")
    return passphrase


def _check_size(plaintext: bytes) -> None:
    if HEADER.size + len(plaintext) + TAG_BYTES > MAX_ARCHIVE_BYTES:
        raise BadRequest(
            f"the archive would be larger than {MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB, "
            "which no instance would import"
        )


def encrypt(plaintext: bytes, passphrase: str, *, params: ScryptParams = DEFAULT_SCRYPT) -> bytes:
    """The archive file for ``plaintext``: header, then AES-256-GCM ciphertext and tag."""
    params.check()
    _check_size(plaintext)  # before the costly key derivation
    derived = derive_key(passphrase, params=params)
    return encrypt_with_key(plaintext, derived.key, derived.salt, derived.params)


@dataclass(frozen=True)
class DerivedKey:
    """An archive key derived from a passphrase, with the salt and parameters that derived
    it (which every archive's header carries). Scheduled exports (server/exports.py) keep
    one, so that the instance encrypts archives that open with the passphrase it never
    stores. As secret as what it protects."""

    key: bytes
    salt: bytes
    params: ScryptParams

    def __repr__(self) -> str:  # never in a log or a traceback's locals
        return f"DerivedKey(params={self.params!r})"


def derive_key(passphrase: str, *, params: ScryptParams = DEFAULT_SCRYPT) -> DerivedKey:
    """The key for ``passphrase`` with a fresh random salt (CPU-bound and 128 MiB with the
    default parameters: run it in a thread)."""
    params.check()
    salt = os.urandom(SALT_BYTES)
    return DerivedKey(_derive(passphrase, salt, params), salt, params)


def encrypt_with_key(plaintext: bytes, key: bytes, salt: bytes, params: ScryptParams) -> bytes:
    """The archive file for ``plaintext`` with a key already derived (:func:`derive_key`):
    the same header as :func:`encrypt`, naming ``salt`` and ``params``, so that
    :func:`decrypt` opens it with the passphrase.

    Several archives then share one key, so each gets a fresh random 96-bit nonce: AES-GCM
    stays safe with random nonces for up to 2**32 messages under one key, and a schedule
    makes a few hundred a year.
    """
    params.check()
    if len(key) != 32 or len(salt) != SALT_BYTES:
        raise ValueError("an archive key is 32 bytes and its salt 16")
    _check_size(plaintext)
    nonce = os.urandom(NONCE_BYTES)
    header = HEADER.pack(
        MAGIC,
        HEADER_VERSION,
        KDF_SCRYPT,
        params.log2_n,
        params.r,
        params.p,
        AEAD_AES_256_GCM,
        salt,
        nonce,
    )
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def decrypt(data: bytes, passphrase: str) -> bytes:
    """The ZIP inside an archive file; ArchiveError for anything but an intact archive
    opened with its passphrase."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"an archive is at most {MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB")
    if len(data) < HEADER.size + TAG_BYTES or not data.startswith(MAGIC):
        raise ArchiveError("not an InterOcc assembly archive, or a damaged or truncated one")
    _magic, version, kdf, log2_n, r, p, aead, salt, nonce = HEADER.unpack_from(data)
    if (version, kdf, aead) != (HEADER_VERSION, KDF_SCRYPT, AEAD_AES_256_GCM):
        raise ArchiveError(
            "damaged archive, or one encrypted by a newer InterOcc (unknown header version "
            "or algorithm)"
        )
    params = ScryptParams(log2_n, r, p)
    params.check()
    key = _derive(passphrase, salt, params)
    try:
        return AESGCM(key).decrypt(nonce, data[HEADER.size :], data[: HEADER.size])
    except InvalidTag:
        raise ArchiveError(WRONG_PASSPHRASE) from None


def read_file(path: Path) -> bytes:
    """An archive file's bytes, refused unread when it is larger than any archive."""
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_ARCHIVE_BYTES:
                raise ArchiveError(
                    f"{path.name} is larger than {MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB: "
                    "not an archive this instance imports"
                )
            data = f.read(MAX_ARCHIVE_BYTES + 1)
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"an archive is at most {MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB")
    return data


def write_file(path: Path, data: bytes) -> None:
    """Write a new archive file, readable by its owner only; never over an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadRequest(f"{path} already exists: choose another name") from None
    except OSError as exc:
        raise BadRequest(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# -- the ZIP inside ------------------------------------------------------------------------

# Every member an archive may hold: known JSON documents, and media files named as
# server.media names them. Anything else (a path, "../x", "/etc/x", a directory) is refused.
JSON_MEMBERS = (
    "manifest.json",
    "actor.json",
    "profile.json",
    "key.json",
    "outbox.json",
    "communiques.json",
    "featured.json",
    "followers.json",
    "following.json",
    "letters.json",
    "cosigned.json",
)
MEDIA_MEMBER_RE = re.compile(r"^media/[A-Za-z0-9_-]{16,32}\.(jpg|png|gif|webp|pdf)$")


def pack(files: dict[str, bytes], *, now: datetime) -> bytes:
    """A ZIP of ``files`` (JSON compressed, media stored as they are)."""
    out = io.BytesIO()
    stamp = now.astimezone(UTC).timetuple()[:6]
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".json") else 0
            info.external_attr = 0o600 << 16
            zf.writestr(info, data)
    return out.getvalue()


def unpack(data: bytes) -> dict[str, bytes]:
    """The members of an archive's ZIP, by name, each checked and bounded."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise _damaged("too many files")
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise _damaged("a file appears twice")
            for info in infos:
                if info.filename not in JSON_MEMBERS and not MEDIA_MEMBER_RE.match(info.filename):
                    raise _damaged(f"unexpected file {info.filename[:100]!r}")
                if info.compress_type not in {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}:
                    raise _damaged("unsupported compression")
                if info.flag_bits & 0x1:
                    raise _damaged("an encrypted member")
            if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
                raise _damaged("it unpacks to too much")
            files: dict[str, bytes] = {}
            for info in infos:
                limit = MAX_JSON_BYTES if info.filename.endswith(".json") else MAX_MEDIA_BYTES
                # The sizes a ZIP declares are not trusted: read at most one byte too many.
                with zf.open(info) as member:
                    content = member.read(limit + 1)
                if len(content) > limit:
                    raise _damaged(f"{info.filename} is too large")
                files[info.filename] = content
            return files
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, NotImplementedError, EOFError, OSError):
        raise _damaged("its contents are not a readable ZIP") from None


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False).encode("utf-8")


def _time(moment: datetime | None) -> str | None:
    """Exact times (microseconds kept) in the data files; AS documents use vocab.iso."""
    return moment.astimezone(UTC).isoformat() if moment is not None else None


# -- export --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """What an export holds: the ZIP (not yet encrypted) and what was counted into it."""

    zip_data: bytes
    actor_uri: str
    counts: dict[str, int]
    missing_files: tuple[str, ...]


def _media_entry(m: Media) -> dict[str, Any]:
    return {
        "file": f"media/{m.file_name}",
        "media_type": m.media_type,
        "alt_text": m.alt_text,
        "original_name": m.original_name,
        "width": m.width,
        "height": m.height,
        "size": m.size,
        "sha256": m.sha256,
    }


def _read_media(settings: Settings, rows: Sequence[Media]) -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    missing: list[str] = []
    for m in rows:
        if not media.FILE_NAME_RE.match(m.file_name):
            missing.append(m.file_name)
            continue
        try:
            files[f"media/{m.file_name}"] = media.file_path(settings, m).read_bytes()
        except OSError:
            missing.append(m.file_name)
    return files, missing


def _collection(collection_id: str | None, items: list[Any]) -> dict[str, Any]:
    """A whole OrderedCollection in one document (an archive has no pages)."""
    doc: dict[str, Any] = {"@context": list(CONTEXT)}
    if collection_id is not None:
        doc["id"] = collection_id
    doc |= {"type": "OrderedCollection", "totalItems": len(items), "orderedItems": items}
    return doc


async def _communique_documents(
    session: AsyncSession, urls: Urls, assembly: Assembly, items: Sequence[Communique]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[Media]]:
    """communiques.json, outbox.json and featured.json, and the attachments' rows."""
    h = assembly.handle
    ids = [c.id for c in items]
    files_of = await communiques.attachments_of(session, ids)
    query = select(Activity).where(Activity.communique_id.in_(ids), Activity.type == "Create")
    creates = {a.communique_id: a for a in (await session.scalars(query)).all()}
    shares = await _grouped(session, Share, ids)
    votes = await _grouped(session, PollVote, ids)
    replies = await _grouped(session, Reply, ids)
    # As the communiqué's URL serves it, with its proof: an archived copy can be checked
    # against the assembly's published key once its server is gone.
    notes = {
        c.id: communiques.proven_note(urls, assembly, c, files_of.get(c.id, [])) for c in items
    }
    records = [
        {
            "id": urls.communique(h, c.public_id),
            "source": c.source,
            "content_html": c.content_html,
            "language": c.language,
            "summary": c.summary,
            "hashtags": c.hashtags,
            "mentions": c.mentions,
            "published": _time(c.published_at),
            "updated": _time(c.updated_at),
            "pinned": _time(c.pinned_at),
            "ratification": c.ratification,
            "poll": c.poll,
            "poll_closed": _time(c.poll_closed_at),
            "attachments": [_media_entry(m) for m in files_of.get(c.id, [])],
            "shares": [
                {
                    "actor": s.actor_uri,
                    "announce": s.announce_uri,
                    "actor_name": s.actor_name,
                    "actor_type": s.actor_type,
                    "published": _time(s.created_at),
                }
                for s in shares.get(c.id, [])
            ],
            "votes": [
                {
                    "actor": v.actor_uri,
                    "choice": v.choice,
                    "id": v.vote_uri,
                    "published": _time(v.created_at),
                }
                for v in votes.get(c.id, [])
            ],
            "replies": [
                {
                    "id": r.uri,
                    "actor": r.actor_uri,
                    "content_html": r.content_html,
                    "url": r.url,
                    "published": _time(r.published_at),
                }
                for r in replies.get(c.id, [])
            ],
        }
        for c in items
    ]
    # The outbox as the assembly serves it: each Create as recorded, carrying the Note as
    # built now, newest first (server/federation/routes.py's outbox does the same).
    activities: list[dict[str, Any]] = []
    for c in sorted(items, key=lambda c: (c.published_at, c.id), reverse=True):
        create = creates.get(c.id)
        activities.append(
            communiques.outbox_item(
                urls, assembly, create.document if create else {}, c, files_of.get(c.id, [])
            )
        )
    outbox_doc = _collection(urls.outbox(h), activities)
    # With the interocc context when a Note carries a ratification record, as served.
    ratified = {"ratification": True} if any(c.ratification for c in items) else {}
    outbox_doc["@context"] = communiques.context_of(urls, ratified)
    pinned = sorted((c for c in items if c.pinned_at is not None), key=lambda c: c.pinned_at or 0)
    featured = _collection(urls.featured(h), [notes[c.id] for c in reversed(pinned)])
    attached = [m for c in items for m in files_of.get(c.id, [])]
    return {"items": records}, outbox_doc, featured, attached


async def _follower_documents(
    session: AsyncSession, urls: Urls, assembly: Assembly
) -> tuple[dict[str, Any], dict[str, Any]]:
    """followers.json and following.json: every row, pending ones too, with the inboxes a
    recovery needs."""
    rows = (
        await session.execute(
            select(Follower, RemoteActor)
            .join(RemoteActor, RemoteActor.id == Follower.actor_id)
            .where(Follower.assembly_id == assembly.id)
            .order_by(Follower.id)
        )
    ).all()
    followers = [
        {
            "id": actor.uri,
            "type": actor.type,
            "preferredUsername": actor.preferred_username,
            "name": actor.name,
            "url": actor.url,
            "inbox": actor.inbox_uri,
            "endpoints": {"sharedInbox": actor.shared_inbox_uri},
            "follow": {
                "id": f.follow_uri,
                "status": f.status.value,
                "held_for_admin": f.held_for_admin,
                "published": _time(f.created_at),
            },
        }
        for f, actor in rows
    ]
    query = select(Following).where(Following.assembly_id == assembly.id).order_by(Following.id)
    follows = [
        {
            "id": f.target_uri,
            "inbox": f.inbox_uri,
            "follow": {
                "id": f.follow_uri,
                "status": f.status.value,
                "published": _time(f.created_at),
                "accepted": _time(f.accepted_at),
            },
        }
        for f in (await session.scalars(query)).all()
    ]
    h = assembly.handle
    return _collection(urls.followers(h), followers), _collection(urls.following(h), follows)


async def _letters_document(session: AsyncSession, assembly: Assembly) -> dict[str, Any]:
    query = (
        select(Letter)
        .where(Letter.assembly_id == assembly.id)
        .order_by(Letter.published_at, Letter.id)
    )
    letters = [
        {
            "id": x.uri,
            "outgoing": x.outgoing,
            "actor": x.actor_uri,
            "recipients": x.recipients,
            "content_html": x.content_html,
            "source": x.source,
            "in_reply_to": x.in_reply_to,
            "thread": x.thread,
            "published": _time(x.published_at),
            "read": _time(x.read_at),
            "document": x.document,
        }
        for x in (await session.scalars(query)).all()
    ]
    return _collection(None, letters)


async def _cosigned_document(session: AsyncSession, assembly: Assembly) -> dict[str, Any]:
    """The Announces the assembly sent (its co-signatures), as recorded."""
    query = (
        select(Activity)
        .where(Activity.assembly_id == assembly.id, Activity.type == "Announce")
        .order_by(Activity.id)
    )
    announces = (await session.scalars(query)).all()
    return _collection(
        None, [{k: v for k, v in a.document.items() if k != "@context"} for a in announces]
    )


async def _profile_images(
    session: AsyncSession, urls: Urls, assembly: Assembly
) -> tuple[Media | None, Media | None]:
    """The rows of the assembly's icon and header (those its actor shows)."""
    query = select(Media).where(
        Media.assembly_id == assembly.id,
        Media.purpose.in_([MediaPurpose.AVATAR, MediaPurpose.HEADER]),
    )
    images = (await session.scalars(query)).all()
    icon = next((m for m in images if media.media_url(urls, m) == assembly.icon_url), None)
    header = next((m for m in images if media.media_url(urls, m) == assembly.header_url), None)
    return icon, header


async def export_assembly(
    session: AsyncSession, settings: Settings, urls: Urls, *, handle: str, now: datetime
) -> Exported:
    """Everything that is the assembly's, as the ZIP of an archive (see docs/archive.md).

    Call it first thing in a transaction: on PostgreSQL it asks for a repeatable read, so
    every table is read as of one moment. Deleted communiqués are left out (the assembly
    deleted them); so are its facilitators' accounts (they belong to this instance).
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    assembly = await assemblies.get(session, handle)
    h = assembly.handle
    items = (
        await session.scalars(
            select(Communique)
            .where(Communique.assembly_id == assembly.id, Communique.deleted_at.is_(None))
            .order_by(Communique.published_at, Communique.id)
        )
    ).all()
    records, outbox_doc, featured, attached = await _communique_documents(
        session, urls, assembly, items
    )
    followers, follows = await _follower_documents(session, urls, assembly)
    letters = await _letters_document(session, assembly)
    cosigned = await _cosigned_document(session, assembly)
    icon, header = await _profile_images(session, urls, assembly)
    profile = {
        "handle": h,
        "name": assembly.name,
        "summary": assembly.summary,
        "place": assembly.place,
        "languages": assembly.languages,
        "manually_approves_followers": assembly.manually_approves_followers,
        "discoverable": assembly.discoverable,
        "publish_social_graph": assembly.publish_social_graph,
        "also_known_as": assembly.also_known_as,
        "moved_to": assembly.moved_to,
        "status": assembly.status.value,
        "created": _time(assembly.created_at),
        "approved": _time(assembly.approved_at),
        "icon": _media_entry(icon) if icon else None,
        "header": _media_entry(header) if header else None,
    }
    key = {
        "id": urls.key_id(h),
        "owner": urls.actor(h),
        "private_key_pem": assembly.private_key_pem,
        "public_key_pem": assembly.public_key_pem,
    }
    counts = {
        "communiques": len(items),
        "attachments": len(attached),
        "ratification_records": sum(1 for c in items if c.ratification),
        "polls": sum(1 for c in items if c.poll),
        "pins": featured["totalItems"],
        "followers": followers["totalItems"],
        "following": follows["totalItems"],
        "letters": letters["totalItems"],
        "shares": sum(len(r["shares"]) for r in records["items"]),
        "cosigned": cosigned["totalItems"],
    }
    images = [m for m in (icon, header) if m is not None]
    media_files, missing = await asyncio.to_thread(_read_media, settings, [*attached, *images])
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "instance": urls.base,
        "actor": urls.actor(h),
        "handle": h,
        "exported_at": _time(now),
        "contents": counts,
        "missing_files": missing,
    }
    documents: dict[str, Any] = {
        "manifest.json": manifest,
        "actor.json": build_assembly_actor(urls, assembly),
        "profile.json": profile,
        "key.json": key,
        "outbox.json": outbox_doc,
        "featured.json": featured,
        "communiques.json": records,
        "followers.json": followers,
        "following.json": follows,
        "letters.json": letters,
        "cosigned.json": cosigned,
    }
    files = {name: _json(doc) for name, doc in documents.items()} | media_files
    return Exported(
        zip_data=await asyncio.to_thread(pack, files, now=now),
        actor_uri=urls.actor(h),
        counts=counts,
        missing_files=tuple(missing),
    )


async def _grouped(session: AsyncSession, model: Any, ids: list[int]) -> dict[int, list[Any]]:
    """Rows of ``model`` (Share, PollVote, Reply: each has communique_id) by communiqué."""
    if not ids:
        return {}
    query = select(model).where(model.communique_id.in_(ids)).order_by(model.id)
    rows = (await session.scalars(query)).all()
    out: dict[int, list[Any]] = {}
    for row in rows:
        out.setdefault(row.communique_id, []).append(row)
    return out


# -- reading an archive --------------------------------------------------------------------

MAX_TEXT = 1_000_000
MENTION_NAME_RE = re.compile(r"^@[^@\s]+@[^@\s]+$")


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _damaged(f"{where} is not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _damaged(f"{where} is not a list")
    return value


def _str(d: dict[str, Any], key: str, where: str, *, limit: int = MAX_TEXT) -> str:
    value = d.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise _damaged(f"{where}.{key} is missing or not a text")
    return value


def _opt_str(d: dict[str, Any], key: str, where: str, *, limit: int = MAX_TEXT) -> str | None:
    return None if d.get(key) is None else _str(d, key, where, limit=limit)


def _link(d: dict[str, Any], key: str, where: str) -> str:
    url = safe_link(d.get(key))
    if url is None:
        raise _damaged(f"{where}.{key} is not an http(s) URL")
    return url


def _opt_link(d: dict[str, Any], key: str, where: str) -> str | None:
    return None if d.get(key) is None else _link(d, key, where)


def _opt_when(d: dict[str, Any], key: str, where: str) -> datetime | None:
    value = d.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _damaged(f"{where}.{key} is not a time with its time zone")
    return moment.astimezone(UTC)


def _when(d: dict[str, Any], key: str, where: str) -> datetime:
    moment = _opt_when(d, key, where)
    if moment is None:
        raise _damaged(f"{where}.{key} is missing")
    return moment


def _flag(d: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise _damaged(f"{where}.{key} is not true or false")
    return value


def _opt_int(d: dict[str, Any], key: str, where: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise _damaged(f"{where}.{key} is not a whole number")
    return value


@dataclass(frozen=True)
class MediaFile:
    name: str  # its member name, media/…
    data: bytes
    alt_text: str
    original_name: str


@dataclass(frozen=True)
class ShareRecord:
    actor_uri: str
    announce_uri: str
    actor_name: str | None
    actor_type: str | None
    created_at: datetime


@dataclass(frozen=True)
class CommuniqueRecord:
    url: str  # its id where it was first published
    source: str
    language: str
    summary: str | None
    mentions: tuple[Mention, ...]
    published_at: datetime
    updated_at: datetime | None
    pinned_at: datetime | None
    ratification: dict[str, Any] | None
    poll: dict[str, Any] | None
    poll_closed_at: datetime | None
    attachments: tuple[MediaFile, ...]
    shares: tuple[ShareRecord, ...]


@dataclass(frozen=True)
class LetterRecord:
    uri: str
    outgoing: bool
    actor_uri: str
    recipients: tuple[str, ...]
    content_html: str
    source: str | None
    in_reply_to: str | None
    thread: str
    published_at: datetime
    read_at: datetime | None
    document: dict[str, Any]


@dataclass(frozen=True)
class Archive:
    """An archive opened and checked: what import needs of it."""

    instance: str
    actor_uri: str
    handle: str
    exported_at: datetime
    name: str
    summary: str
    place: str
    languages: tuple[str, ...]
    manually_approves_followers: bool
    discoverable: bool
    publish_social_graph: bool
    icon: MediaFile | None
    header: MediaFile | None
    key_id: str
    private_key_pem: str
    public_key_pem: str
    communiques: tuple[CommuniqueRecord, ...]
    letters: tuple[LetterRecord, ...]
    # As the archive lists them (followers.json / following.json items), checked.
    followers: tuple[dict[str, Any], ...]
    following: tuple[dict[str, Any], ...]


def _document(files: dict[str, bytes], name: str, *, required: bool = True) -> dict[str, Any]:
    data = files.get(name)
    if data is None:
        if required:
            raise _damaged(f"{name} is missing")
        return {}
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _damaged(f"{name} is not JSON") from None
    return _obj(value, name)


def _media_file(files: dict[str, bytes], entry: object, where: str) -> MediaFile:
    d = _obj(entry, where)
    name = _str(d, "file", where, limit=100)
    if not MEDIA_MEMBER_RE.match(name) or name not in files:
        raise _damaged(f"{where} names a file the archive does not hold")
    return MediaFile(
        name=name,
        data=files[name],
        alt_text=_opt_str(d, "alt_text", where, limit=media.MAX_ALT_TEXT) or "",
        original_name=_opt_str(d, "original_name", where, limit=255) or "",
    )


def _mention(entry: object, where: str) -> Mention:
    d = _obj(entry, where)
    name = _str(d, "name", where, limit=300)
    if not MENTION_NAME_RE.match(name):
        raise _damaged(f"{where}.name is not @name@host")
    return Mention(
        name=name,
        href=_link(d, "href", where),
        inbox=_link(d, "inbox", where),
        url=_opt_str(d, "url", where, limit=2048) or "",
    )


def _poll(value: object, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    d = _obj(value, where)
    choices = _list(d.get("choices"), f"{where}.choices")
    if not 2 <= len(choices) <= 20 or not all(isinstance(c, str) and c for c in choices):
        raise _damaged(f"{where}.choices are not a poll's choices")
    if len(set(choices)) != len(choices) or any(len(c) > 500 for c in choices):
        raise _damaged(f"{where}.choices are not a poll's choices")
    closes = _when(d, "closes_at", where)
    counts = _obj(d.get("counts") or {}, f"{where}.counts")
    tally = {c: _opt_int(counts, c, f"{where}.counts") or 0 for c in choices}
    return {
        "choices": choices,
        "closes_at": closes.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "counts": tally,
        "voters": _opt_int(d, "voters", where) or 0,
    }


def _communique(files: dict[str, bytes], entry: object, i: int) -> CommuniqueRecord:
    where = f"communiques.json items[{i}]"
    d = _obj(entry, where)
    attachments = _list(d.get("attachments"), f"{where}.attachments")
    if len(attachments) > communiques.MAX_ATTACHMENTS:
        raise _damaged(f"{where} has too many attachments")
    shares: list[ShareRecord] = []
    for j, raw in enumerate(_list(d.get("shares"), f"{where}.shares")):
        s = _obj(raw, f"{where}.shares[{j}]")
        shares.append(
            ShareRecord(
                actor_uri=_link(s, "actor", f"{where}.shares[{j}]"),
                announce_uri=_link(s, "announce", f"{where}.shares[{j}]"),
                actor_name=_opt_str(s, "actor_name", f"{where}.shares[{j}]", limit=500),
                actor_type=_opt_str(s, "actor_type", f"{where}.shares[{j}]", limit=40),
                created_at=_when(s, "published", f"{where}.shares[{j}]"),
            )
        )
    ratified = d.get("ratification")
    return CommuniqueRecord(
        url=_link(d, "id", where),
        source=_str(d, "source", where),
        language=_str(d, "language", where, limit=35),
        summary=_opt_str(d, "summary", where, limit=10_000),
        mentions=tuple(
            _mention(m, f"{where}.mentions[{j}]")
            for j, m in enumerate(_list(d.get("mentions"), f"{where}.mentions"))
        ),
        published_at=_when(d, "published", where),
        updated_at=_opt_when(d, "updated", where),
        pinned_at=_opt_when(d, "pinned", where),
        ratification=None if ratified is None else _obj(ratified, f"{where}.ratification"),
        poll=_poll(d.get("poll"), f"{where}.poll"),
        poll_closed_at=_opt_when(d, "poll_closed", where),
        attachments=tuple(
            _media_file(files, a, f"{where}.attachments[{j}]") for j, a in enumerate(attachments)
        ),
        shares=tuple(shares),
    )


def _letter(entry: object, i: int) -> LetterRecord:
    where = f"letters.json orderedItems[{i}]"
    d = _obj(entry, where)
    recipients = _list(d.get("recipients"), f"{where}.recipients")
    if len(recipients) > 100 or not all(isinstance(r, str) and len(r) <= 2048 for r in recipients):
        raise _damaged(f"{where}.recipients are not actor ids")
    return LetterRecord(
        uri=_link(d, "id", where),
        outgoing=_flag(d, "outgoing", where, False),
        actor_uri=_link(d, "actor", where),
        recipients=tuple(recipients),
        content_html=_str(d, "content_html", where),
        source=_opt_str(d, "source", where),
        in_reply_to=_opt_str(d, "in_reply_to", where, limit=2048),
        thread=_str(d, "thread", where, limit=2048),
        published_at=_when(d, "published", where),
        read_at=_opt_when(d, "read", where),
        document=_obj(d.get("document") or {}, f"{where}.document"),
    )


def _check_key_pair(private_pem: str, public_pem: str) -> None:
    try:
        private = load_private_key(private_pem)
    except ValueError:
        raise _damaged("key.json holds no usable private key") from None
    public = load_public_key(public_pem)
    if (
        not isinstance(private, rsa.RSAPrivateKey)
        or not isinstance(public, rsa.RSAPublicKey)
        or private.public_key().public_numbers() != public.public_numbers()
    ):
        raise _damaged("key.json's public key is not its private key's")


def parse(files: dict[str, bytes]) -> Archive:
    """The archive's contents, every field checked; ArchiveError for anything amiss."""
    manifest = _document(files, "manifest.json")
    if manifest.get("format") != FORMAT:
        raise ArchiveError("not an InterOcc assembly archive (its manifest names no such format)")
    version = manifest.get("version")
    if version != VERSION:
        raise ArchiveError(
            f"this archive's format version is {str(version)[:20]}: this instance reads "
            f"version {VERSION} (import it with the InterOcc that made it, or a newer one)"
        )
    profile = _document(files, "profile.json")
    key = _document(files, "key.json")
    actor_uri = _link(manifest, "actor", "manifest.json")
    if key.get("owner") != actor_uri:
        raise _damaged("key.json belongs to another actor")
    private_pem = _str(key, "private_key_pem", "key.json", limit=20_000)
    public_pem = _str(key, "public_key_pem", "key.json", limit=20_000)
    _check_key_pair(private_pem, public_pem)
    languages = _list(profile.get("languages"), "profile.json languages")
    if not all(isinstance(code, str) for code in languages):
        raise _damaged("profile.json languages are not language codes")
    items = _list(_document(files, "communiques.json").get("items"), "communiques.json items")
    letters = _document(files, "letters.json", required=False).get("orderedItems")
    followers = _document(files, "followers.json", required=False).get("orderedItems")
    follows = _document(files, "following.json", required=False).get("orderedItems")
    records = [_communique(files, entry, i) for i, entry in enumerate(items)]
    return Archive(
        instance=_link(manifest, "instance", "manifest.json"),
        actor_uri=actor_uri,
        handle=_str(manifest, "handle", "manifest.json", limit=64),
        exported_at=_when(manifest, "exported_at", "manifest.json"),
        name=_str(profile, "name", "profile.json", limit=1000),
        summary=_opt_str(profile, "summary", "profile.json", limit=50_000) or "",
        place=_opt_str(profile, "place", "profile.json", limit=1000) or "",
        languages=tuple(languages),
        manually_approves_followers=_flag(
            profile, "manually_approves_followers", "profile.json", False
        ),
        discoverable=_flag(profile, "discoverable", "profile.json", True),
        publish_social_graph=_flag(profile, "publish_social_graph", "profile.json", False),
        icon=None
        if profile.get("icon") is None
        else _media_file(files, profile["icon"], "profile.json icon"),
        header=None
        if profile.get("header") is None
        else _media_file(files, profile["header"], "profile.json header"),
        key_id=_link(key, "id", "key.json"),
        private_key_pem=private_pem,
        public_key_pem=public_pem,
        communiques=tuple(sorted(records, key=lambda c: c.published_at)),
        letters=tuple(_letter(x, i) for i, x in enumerate(_list(letters, "letters.json"))),
        followers=tuple(_follower(x, i) for i, x in enumerate(_list(followers, "followers.json"))),
        following=tuple(_follow(x, i) for i, x in enumerate(_list(follows, "following.json"))),
    )


def _follower(entry: object, i: int) -> dict[str, Any]:
    where = f"followers.json orderedItems[{i}]"
    d = _obj(entry, where)
    endpoints = d.get("endpoints")
    shared = _opt_link(endpoints, "sharedInbox", where) if isinstance(endpoints, dict) else None
    follow = d.get("follow")
    status = follow.get("status") if isinstance(follow, dict) else None
    return {
        "id": _link(d, "id", where),
        "inbox": _link(d, "inbox", where),
        "shared_inbox": shared,
        "status": status if status in {"pending", "accepted"} else "accepted",
    }


def _follow(entry: object, i: int) -> dict[str, Any]:
    where = f"following.json orderedItems[{i}]"
    d = _obj(entry, where)
    follow = d.get("follow")
    status = follow.get("status") if isinstance(follow, dict) else None
    return {
        "id": _link(d, "id", where),
        "inbox": _link(d, "inbox", where),
        "status": status if status in {s.value for s in FollowStatus} else "pending",
    }


def open_archive(data: bytes, passphrase: str) -> Archive:
    """Decrypt, unpack and check an archive file's bytes (CPU-bound: run it in a thread)."""
    return parse(unpack(decrypt(data, passphrase)))


# -- import --------------------------------------------------------------------------------

RECORD_KEY = "archive-import:{handle}"
PROVENANCE = "\n\n*First published at <{url}>*"


@dataclass(frozen=True)
class Imported:
    assembly: Assembly
    old_actor_uri: str
    counts: dict[str, int]
    images: tuple[str, ...]
    media: tuple[Media, ...] = field(default=())


def _upload(file: MediaFile) -> UploadFile:
    return UploadFile(file=io.BytesIO(file.data), filename=file.original_name or file.name)


def _ratification(record: dict[str, Any], where: str) -> dict[str, Any]:
    values = {
        "decided_on": record.get("decided_on"),
        "decided_at": record.get("place") or "",
        "process": record.get("process"),
        "threshold_percent": record.get("threshold_percent"),
        "minutes": record.get("minutes"),
        **{name: record.get(name) for name in ratification.COUNTS},
    }
    try:
        checked = ratification.validate(values)
    except BadRequest as exc:
        raise _damaged(f"{where}: {exc.message}") from None
    if checked is None:
        raise _damaged(f"{where} is empty")
    return checked


async def import_archive(
    session: AsyncSession,
    settings: Settings,
    urls: Urls,
    *,
    archive: Archive,
    handle: str,
    now: datetime,
    stored: list[Media],
) -> Imported:
    """Recreate an archived assembly here as ``handle``, pending approval.

    It gets a key pair of its own (a new actor) and ``alsoKnownAs`` = [its old actor id];
    its communiqués get new ids, keep their dates and say where they were first published;
    its letters, co-signatures received and images come along. Its followers are not made
    followers here (they follow again, or a Move brings them); they, what it followed and
    its old key pair are kept in the import record (:func:`import_record`): :func:`refollow`
    follows again once the assembly is approved.

    Every Media row stored (its file written at once) is appended to ``stored``: if the
    caller's transaction does not commit, it removes their files (server.media).
    """
    assembly = await assemblies.create(
        session,
        handle=handle,
        name=archive.name,
        summary=archive.summary,
        manually_approves_followers=archive.manually_approves_followers,
        place=archive.place,
        languages=archive.languages,
    )
    assembly.discoverable = archive.discoverable
    assembly.publish_social_graph = archive.publish_social_graph
    assembly.also_known_as = [archive.actor_uri]
    images: list[str] = []
    for purpose, image in (
        (MediaPurpose.AVATAR, archive.icon),
        (MediaPurpose.HEADER, archive.header),
    ):
        if image is None:
            continue
        change = await assemblies.set_image(
            session,
            settings,
            urls,
            assembly=assembly,
            upload=_upload(image),
            purpose=purpose,
            user=None,
            field="archive",
            now=now,
        )
        stored.append(change.media)
        images.append("icon" if purpose == MediaPurpose.AVATAR else "header")

    counts = dict.fromkeys(
        ("communiques", "attachments", "ratification_records", "polls", "pins", "shares"), 0
    )
    moved: dict[str, str] = {}
    for i, record in enumerate(archive.communiques):
        communique = await _import_communique(
            session, settings, urls, assembly, record, f"communiqué {i + 1}", now, stored
        )
        moved[record.url] = urls.communique(assembly.handle, communique.public_id)
        counts["communiques"] += 1
        counts["attachments"] += len(record.attachments)
        counts["ratification_records"] += communique.ratification is not None
        counts["polls"] += communique.poll is not None
        counts["pins"] += communique.pinned_at is not None
        for share in record.shares:
            taken = await session.scalar(
                select(Share.id).where(Share.announce_uri == share.announce_uri)
            )
            if taken is not None:
                continue  # the original's share, on the instance it was exported from
            session.add(
                Share(
                    communique_id=communique.id,
                    actor_uri=share.actor_uri,
                    announce_uri=share.announce_uri,
                    actor_name=share.actor_name,
                    actor_type=share.actor_type,
                    created_at=share.created_at,
                )
            )
            counts["shares"] += 1
    await session.flush()

    for letter in archive.letters:
        session.add(
            Letter(
                assembly_id=assembly.id,
                uri=letter.uri,
                outgoing=letter.outgoing,
                actor_uri=letter.actor_uri,
                recipients=list(letter.recipients),
                # As anything remote is: the archive is not trusted more than a server.
                content_html=sanitise_html(letter.content_html),
                source=letter.source,
                in_reply_to=letter.in_reply_to,
                thread=letter.thread,
                published_at=letter.published_at,
                read_at=letter.read_at,
                document=letter.document,
            )
        )
    await session.flush()
    counts["letters"] = len(archive.letters)

    follows = [f for f in archive.following if f["status"] != FollowStatus.REJECTED.value]
    counts["following"] = len(follows)
    counts["followers"] = len(archive.followers)
    record_value = {
        "version": VERSION,
        "old_actor": archive.actor_uri,
        "old_instance": archive.instance,
        "old_handle": archive.handle,
        "exported_at": _time(archive.exported_at),
        "imported_at": _time(now),
        # The old identity's key pair: what can still sign as it (a Move out of it, once
        # its server is gone, needs it). As secret as the assemblies' own keys in this table.
        "old_key_id": archive.key_id,
        "old_private_key_pem": archive.private_key_pem,
        "old_public_key_pem": archive.public_key_pem,
        "followers": list(archive.followers),
        "following": follows,
        "communiques": moved,
    }
    key = RECORD_KEY.format(handle=assembly.handle)
    row = await session.get(InstanceSetting, key)
    if row is None:
        session.add(InstanceSetting(key=key, value=record_value))
    else:
        row.value = record_value  # left by an assembly of this handle that is gone
    await session.flush()
    return Imported(
        assembly=assembly,
        old_actor_uri=archive.actor_uri,
        counts=counts,
        images=tuple(images),
        media=tuple(stored),
    )


async def _import_communique(
    session: AsyncSession,
    settings: Settings,
    urls: Urls,
    assembly: Assembly,
    record: CommuniqueRecord,
    where: str,
    now: datetime,
    stored: list[Media],
) -> Communique:
    try:
        communiques.check_draft(record.source, record.language, record.summary)
    except BadRequest as exc:
        raise _damaged(f"{where}: {exc.message}") from None
    decision = (
        _ratification(record.ratification, where) if record.ratification is not None else None
    )
    # Rendered again here, never taken as HTML from the archive; the line naming where it
    # was first published is part of its text, so it stays through later edits.
    source = record.source + PROVENANCE.format(url=record.url)
    rendered = render_markdown(source, tag_url=urls.tag)
    summary = " ".join((record.summary or "").split()) or None
    communique = Communique(
        public_id=new_public_id(),
        assembly_id=assembly.id,
        source=source,
        content_html=communiques._link_mentions(rendered.html, record.mentions),
        language=record.language,
        summary=summary,
        hashtags=rendered.hashtags,
        mentions=[
            {"name": m.name, "href": m.href, "inbox": m.inbox, "url": m.url}
            for m in record.mentions
        ],
        ratification=decision,
        poll=record.poll,
        # Votes go to the poll where it was published: here it is closed, with its tally.
        poll_closed_at=(record.poll_closed_at or now) if record.poll else None,
        published_at=record.published_at,
        updated_at=record.updated_at,
        pinned_at=record.pinned_at,
    )
    session.add(communique)
    await session.flush()
    files: list[Media] = []
    for position, file in enumerate(record.attachments):
        m = await media.store_upload(
            session,
            settings,
            assembly=assembly,
            upload=_upload(file),
            purpose=MediaPurpose.ATTACHMENT,
            alt_text=file.alt_text,
            field="archive",
            now=now,
        )
        stored.append(m)
        m.communique_id = communique.id
        m.position = position
        files.append(m)
    await session.flush()
    # Its Create, as publishing records it (the outbox lists communiqués by their Create),
    # dated as first published and sent to nobody: the assembly has no followers here yet.
    note = communiques.note_document(urls, assembly, communique, files)
    await outbox.send(
        session,
        urls,
        None,
        assembly=assembly,
        activity_type="Create",
        obj=note,
        to=[PUBLIC],
        cc=[urls.followers(assembly.handle)],
        inboxes=(),
        public=True,
        now=record.published_at,
        communique_id=communique.id,
        context=communiques.context_of(urls, note),
    )
    return communique


async def import_record(session: AsyncSession, handle: str) -> dict[str, Any] | None:
    """What an import kept of an assembly's old identity (see :func:`import_archive`)."""
    row = await session.get(InstanceSetting, RECORD_KEY.format(handle=handle))
    return row.value if row is not None and isinstance(row.value, dict) else None


async def follow_targets(session: AsyncSession, *, handle: str) -> list[str]:
    """The actors an imported assembly followed where it came from."""
    assembly = await assemblies.get(session, handle)
    record = await import_record(session, assembly.handle)
    if record is None:
        raise BadRequest(f"{assembly.handle} was not imported from an archive")
    return [str(f["id"]) for f in record.get("following", []) if isinstance(f, dict)]


@dataclass(frozen=True)
class Refollowed:
    sent: tuple[str, ...]
    already: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (actor id, why)


async def refollow(
    session: AsyncSession, ctx: Context, *, handle: str, now: datetime
) -> Refollowed:
    """Follow again, from the approved imported assembly, every actor it followed before
    (server.following.follow: a Follow each). Those it follows already are left as they
    are, so running it again only retries the ones that failed. Remote actors are resolved
    from the cache: call following.prefetch for each target first, outside the transaction.
    """
    await assemblies.require_active(session, handle)  # pending: nothing can be sent yet
    sent: list[str] = []
    already: list[str] = []
    failed: list[tuple[str, str]] = []
    for target in await follow_targets(session, handle=handle):
        try:
            row = await following.follow(session, ctx, handle=handle, target=target, now=now)
        except Conflict:
            already.append(target)
        except BadRequest as exc:  # gone, blocked, unreachable: the others are still followed
            failed.append((target, exc.message))
        else:
            sent.append(row.target_uri)
    return Refollowed(tuple(sent), tuple(already), tuple(failed))


def digest(data: bytes) -> str:
    """SHA-256 of an archive file, printed so it can be checked where it is kept."""
    return hashlib.sha256(data).hexdigest()


async def imported_handles(session: AsyncSession) -> set[str]:
    """The handles of the assemblies imported from an archive (those with an import record)."""
    prefix = RECORD_KEY.format(handle="")
    query = select(InstanceSetting.key).where(
        InstanceSetting.key.startswith(prefix, autoescape=True)
    )
    return {key.removeprefix(prefix) for key in (await session.scalars(query)).all()}
