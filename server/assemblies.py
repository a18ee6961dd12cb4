"""Assemblies: the local Group actors, from request to approval or suspension."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from server import mail, media
from server.activitypub import delivery, outbox
from server.activitypub.proofs import new_ed25519_private_key_pem
from server.activitypub.signatures import generate_private_key_pem
from server.activitypub.vocab import PUBLIC
from server.config import Settings
from server.content import LANGUAGE_RE
from server.errors import BadRequest, Conflict, Gone, NotFound
from server.models import (
    Activity,
    Assembly,
    AssemblyStatus,
    Communique,
    Follower,
    FollowerStatus,
    Media,
    MediaPurpose,
    MemberRole,
    Membership,
    User,
)
from server.urls import Urls

HANDLE_RE = re.compile(r"^[a-z0-9_]{1,30}$")
# Paths and names a handle must not shadow or impersonate.
RESERVED = {"actor", "admin", "administrator", "inbox", "instance", "root", "system", "www"}
MAX_NAME = 200
MAX_SUMMARY = 5000
MAX_PLACE = 200
MAX_LANGUAGES = 10

KeyFactory = Callable[[], tuple[str, str]]
"""Makes a new assembly's key pair: (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""

_key_factory: KeyFactory = generate_private_key_pem


def use_key_factory(factory: KeyFactory | None) -> KeyFactory:
    """Make create() take key pairs from ``factory`` (None: a fresh RSA-2048 key each time,
    the default); returns the factory it replaces, so a caller can put it back.

    Production never calls this. It is the test suite's one injection point
    (tests/support/rig.py hands out fixed test keys): generating an RSA-2048 key costs about
    0.1 s, and the suite creates assemblies by the hundred. It is process-wide, not on the
    Context, because create() only gets a session (from the web forms, the CLI and tests)
    and the app under test builds a Context of its own.
    """
    global _key_factory
    previous = _key_factory
    _key_factory = factory or generate_private_key_pem
    return previous


def normalise_handle(raw: str) -> str:
    handle = raw.strip().lstrip("@").lower()
    if not HANDLE_RE.match(handle):
        raise BadRequest(
            f"invalid handle {raw[:40]!r}: use 1 to 30 letters a-z, digits or underscores",
            field="handle",
        )
    return handle


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise BadRequest(f"an assembly needs a name of 1 to {MAX_NAME} characters", field="name")
    return name


def _check_summary(summary: str) -> str:
    if len(summary) > MAX_SUMMARY:
        raise BadRequest(f"the summary is longer than {MAX_SUMMARY} characters", field="summary")
    return summary.strip()


def _check_place(place: str) -> str:
    place = " ".join(place.split())
    if len(place) > MAX_PLACE:
        raise BadRequest(f"the place is at most {MAX_PLACE} characters", field="place")
    return place


def parse_languages(raw: str | Iterable[str]) -> list[str]:
    """Language codes from "en, es pt-BR" (or a list): checked, de-duplicated, in order.

    Each code follows the rule communiqués' languages follow (``content.LANGUAGE_RE``);
    the primary subtag is lower-cased first, so "EN" is "en".
    """
    parts = re.split(r"[\s,;]+", raw) if isinstance(raw, str) else list(raw)
    codes: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        primary, sep, rest = part.partition("-")
        code = primary.lower() + sep + rest
        if len(code) > 35 or not LANGUAGE_RE.match(code):
            raise BadRequest(
                f"{part[:20]!r} is not a language code: use codes such as en, es, pt-BR",
                field="languages",
            )
        if code not in codes:
            codes.append(code)
    if len(codes) > MAX_LANGUAGES:
        raise BadRequest(f"list at most {MAX_LANGUAGES} languages", field="languages")
    return codes


async def create(
    session: AsyncSession,
    *,
    handle: str,
    name: str,
    summary: str = "",
    manually_approves_followers: bool = False,
    place: str = "",
    languages: Iterable[str] = (),
    requested_by_id: int | None = None,
) -> Assembly:
    """A new, pending assembly with its own key pair.

    With ``requested_by_id`` the requester becomes the assembly's first admin (a
    membership in the same transaction).
    """
    handle = normalise_handle(handle)
    if handle in RESERVED:
        raise BadRequest(f"the handle {handle!r} is reserved", field="handle")
    name = _check_name(name)
    summary = _check_summary(summary)
    place = _check_place(place)
    codes = parse_languages(languages)
    if await find(session, handle) is not None:
        raise Conflict(f"an assembly with the handle {handle!r} already exists", field="handle")
    private_pem, public_pem = _key_factory()
    assembly = Assembly(
        handle=handle,
        name=name,
        summary=summary,
        status=AssemblyStatus.PENDING,
        manually_approves_followers=manually_approves_followers,
        place=place,
        languages=codes,
        requested_by_id=requested_by_id,
        private_key_pem=private_pem,
        public_key_pem=public_pem,
        ed25519_private_key_pem=new_ed25519_private_key_pem(),
    )
    session.add(assembly)
    await session.flush()
    if requested_by_id is not None:
        session.add(
            Membership(assembly_id=assembly.id, user_id=requested_by_id, role=MemberRole.ADMIN)
        )
        await session.flush()
    return assembly


async def find(session: AsyncSession, handle: str) -> Assembly | None:
    return (await session.scalars(select(Assembly).where(Assembly.handle == handle))).first()


async def get(session: AsyncSession, handle: str) -> Assembly:
    """Any assembly by handle, whatever its status; NotFound if none."""
    assembly = await find(session, normalise_handle(handle))
    if assembly is None:
        raise NotFound(f"no assembly with the handle {handle!r}")
    return assembly


async def get_public(session: AsyncSession, handle: str) -> Assembly:
    """An assembly the world may see: pending ones do not exist yet, suspended ones are gone."""
    try:
        assembly = await get(session, handle)
    except BadRequest:
        raise NotFound() from None
    if assembly.status in {AssemblyStatus.PENDING, AssemblyStatus.REJECTED}:
        raise NotFound()
    if assembly.status == AssemblyStatus.SUSPENDED:
        raise Gone("this assembly is suspended")
    return assembly


async def approve(session: AsyncSession, handle: str, *, now: datetime) -> Assembly:
    assembly = await get(session, handle)
    if assembly.status == AssemblyStatus.APPROVED:
        raise Conflict(f"{assembly.handle} is already approved")
    assembly.status = AssemblyStatus.APPROVED
    assembly.approved_at = assembly.approved_at or now
    assembly.suspended_at = None
    assembly.rejection_reason = None
    assembly.rejected_at = None
    await session.flush()
    await mail.assembly_decided(session, assembly, now=now)
    return assembly


async def reject(session: AsyncSession, handle: str, *, reason: str, now: datetime) -> Assembly:
    """Turn down a pending request; the requester sees ``reason``."""
    assembly = await get(session, handle)
    if assembly.status != AssemblyStatus.PENDING:
        raise Conflict(f"{assembly.handle} is {assembly.status.value}, not pending")
    reason = reason.strip()
    if not reason:
        raise BadRequest("say why, so the requester can do better", field="reason")
    if len(reason) > 2000:
        raise BadRequest("the reason is at most 2000 characters", field="reason")
    assembly.status = AssemblyStatus.REJECTED
    assembly.rejection_reason = reason
    assembly.rejected_at = now
    await session.flush()
    await mail.assembly_decided(session, assembly, now=now)
    return assembly


async def unsuspend(session: AsyncSession, handle: str, *, now: datetime) -> Assembly:
    assembly = await get(session, handle)
    if assembly.status != AssemblyStatus.SUSPENDED:
        raise Conflict(f"{assembly.handle} is not suspended")
    assembly.status = AssemblyStatus.APPROVED
    assembly.suspended_at = None
    await session.flush()
    return assembly


async def suspend(session: AsyncSession, handle: str, *, now: datetime) -> Assembly:
    assembly = await get(session, handle)
    if assembly.status == AssemblyStatus.SUSPENDED:
        raise Conflict(f"{assembly.handle} is already suspended")
    assembly.status = AssemblyStatus.SUSPENDED
    assembly.suspended_at = now
    await session.flush()
    return assembly


async def list_all(session: AsyncSession) -> Sequence[Assembly]:
    return (await session.scalars(select(Assembly).order_by(Assembly.handle))).all()


async def require_active(session: AsyncSession, handle: str) -> Assembly:
    """The assembly, if it may publish; otherwise a clear error."""
    assembly = await get(session, handle)
    if assembly.status != AssemblyStatus.APPROVED:
        raise BadRequest(f"{assembly.handle} is {assembly.status.value}: it cannot publish")
    if assembly.moved_to:
        raise Conflict(f"{assembly.handle} has moved to {assembly.moved_to}: it cannot publish")
    return assembly


async def follower_count(session: AsyncSession, assembly_id: int) -> int:
    query = select(func.count(Follower.id)).where(
        Follower.assembly_id == assembly_id, Follower.status == FollowerStatus.ACCEPTED
    )
    return int((await session.scalar(query)) or 0)


async def communique_count(session: AsyncSession, assembly_id: int) -> int:
    query = select(func.count(Communique.id)).where(
        Communique.assembly_id == assembly_id, Communique.deleted_at.is_(None)
    )
    return int((await session.scalar(query)) or 0)


async def update_profile(
    session: AsyncSession,
    *,
    handle: str,
    name: str,
    summary: str,
    place: str,
    languages: Iterable[str],
    manually_approves_followers: bool,
) -> tuple[Assembly, bool]:
    """New profile values; returns the assembly and whether anything changed."""
    assembly = await get(session, handle)
    values: dict[str, Any] = {
        "name": _check_name(name),
        "summary": _check_summary(summary),
        "place": _check_place(place),
        "languages": parse_languages(languages),
        "manually_approves_followers": manually_approves_followers,
    }
    changed = False
    for key, value in values.items():
        if getattr(assembly, key) != value:
            setattr(assembly, key, value)
            changed = True
    await session.flush()
    return assembly, changed


async def set_publish_social_graph(session: AsyncSession, *, handle: str, publish: bool) -> bool:
    """Whether the assembly's followers and following collections list their members
    (``publish``) or give only their totals; returns whether that changed. Not part of the
    actor document, so nothing is sent to followers' servers."""
    assembly = await get(session, handle)
    if assembly.publish_social_graph == publish:
        return False
    assembly.publish_social_graph = publish
    await session.flush()
    return True


@dataclass(frozen=True)
class ImageChange:
    """A new avatar or header, and the rows of the ones it replaces (their files are
    removed by the caller once the transaction has committed)."""

    media: Media
    replaced: list[Media]


async def set_image(
    session: AsyncSession,
    settings: Settings,
    urls: Urls,
    *,
    assembly: Assembly,
    upload: UploadFile,
    purpose: MediaPurpose,
    user: User | None,
    field: str,
    now: datetime,
) -> ImageChange:
    """Store ``upload`` as the assembly's avatar or header (``purpose``).

    The file is written at once (see server.media): if this raises, nothing is left on
    disk; if the caller's transaction fails later, it removes ``ImageChange.media``'s file.
    """
    if purpose not in {MediaPurpose.AVATAR, MediaPurpose.HEADER}:
        raise ValueError(f"not a profile image: {purpose}")
    stored = await media.store_upload(
        session,
        settings,
        assembly=assembly,
        upload=upload,
        purpose=purpose,
        user=user,
        field=field,
        now=now,
    )
    try:
        old = (
            await session.scalars(
                select(Media).where(
                    Media.assembly_id == assembly.id,
                    Media.purpose == purpose,
                    Media.id != stored.id,
                )
            )
        ).all()
        for row in old:
            await session.delete(row)
        url = media.media_url(urls, stored)
        if purpose == MediaPurpose.AVATAR:
            assembly.icon_url = url
        else:
            assembly.header_url = url
        await session.flush()
    except BaseException:
        media.remove_files(settings, [stored])
        raise
    return ImageChange(media=stored, replaced=list(old))


async def announce_profile(
    session: AsyncSession,
    urls: Urls,
    *,
    assembly: Assembly,
    actor_document: dict[str, Any],
    now: datetime,
    wake: asyncio.Event | None,
) -> Activity | None:
    """Send followers an Update{actor} with the assembly's new actor document.

    Only an approved assembly federates; for any other nothing is sent (None).
    ``actor_document`` is what the actor URL serves (vocab.build_assembly_actor builds it).
    ``wake`` (the in-process worker's ``ctx.wake``) is set once the caller commits.
    """
    if assembly.status != AssemblyStatus.APPROVED:
        return None
    # The activity carries the context; the embedded actor needs no second copy.
    obj = {k: v for k, v in actor_document.items() if k != "@context"}
    sent = await outbox.send(
        session,
        urls,
        wake,
        assembly=assembly,
        activity_type="Update",
        obj=obj,
        to=[PUBLIC],
        cc=[urls.followers(assembly.handle)],
        inboxes=await delivery.follower_inboxes(session, assembly.id),
        public=True,
        now=now,
    )
    return sent.activity
