"""Assemblies: the local Group actors, from request to approval or suspension."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.activitypub.signatures import generate_private_key_pem
from server.errors import BadRequest, Conflict, Gone, NotFound
from server.models import Assembly, AssemblyStatus, Communique, Follower, FollowerStatus

HANDLE_RE = re.compile(r"^[a-z0-9_]{1,30}$")
# Paths and names a handle must not shadow or impersonate.
RESERVED = {"actor", "admin", "administrator", "inbox", "instance", "root", "system", "www"}


def normalise_handle(raw: str) -> str:
    handle = raw.strip().lstrip("@").lower()
    if not HANDLE_RE.match(handle):
        raise BadRequest(
            f"invalid handle {raw[:40]!r}: use 1 to 30 letters a-z, digits or underscores"
        )
    return handle


async def create(
    session: AsyncSession,
    *,
    handle: str,
    name: str,
    summary: str = "",
    manually_approves_followers: bool = False,
) -> Assembly:
    handle = normalise_handle(handle)
    if handle in RESERVED:
        raise BadRequest(f"the handle {handle!r} is reserved")
    name = name.strip()
    if not name or len(name) > 200:
        raise BadRequest("an assembly needs a name of 1 to 200 characters")
    if len(summary) > 5000:
        raise BadRequest("the summary is longer than 5000 characters")
    if await find(session, handle) is not None:
        raise Conflict(f"an assembly with the handle {handle!r} already exists")
    private_pem, public_pem = generate_private_key_pem()
    assembly = Assembly(
        handle=handle,
        name=name,
        summary=summary.strip(),
        status=AssemblyStatus.PENDING,
        manually_approves_followers=manually_approves_followers,
        private_key_pem=private_pem,
        public_key_pem=public_pem,
    )
    session.add(assembly)
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
    if assembly.status == AssemblyStatus.PENDING:
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
