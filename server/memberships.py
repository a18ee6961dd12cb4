"""Who facilitates an assembly: memberships, invitations by e-mail, removal.

An invitation is addressed to an e-mail address and carries a random token; only the
token's SHA-256 is stored, so the link exists once, in the inviter's hands (the instance
sends no e-mail). Whoever signs in with that address and opens the link becomes a member.
An assembly always keeps at least one admin.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.accounts import normalise_email
from server.errors import BadRequest, Conflict, Forbidden, NotFound
from server.models import Assembly, Invitation, MemberRole, Membership, User

MAX_TOKEN = 100


@dataclass(frozen=True)
class Member:
    """One row of an assembly's facilitator list."""

    membership_id: int
    user_id: int
    email: str
    role: MemberRole
    since: datetime


@dataclass(frozen=True)
class Facilitating:
    """An assembly someone facilitates, and in which role."""

    assembly: Assembly
    role: MemberRole


@dataclass(frozen=True)
class Invited:
    """A new invitation and the token its link carries (shown once, never stored)."""

    invitation: Invitation
    token: str


@dataclass(frozen=True)
class PendingInvitation:
    invitation: Invitation
    assembly: Assembly


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(raw: str) -> MemberRole:
    try:
        return MemberRole(raw.strip().lower())
    except ValueError:
        raise BadRequest("choose the role facilitator or admin", field="role") from None


async def members(session: AsyncSession, assembly_id: int) -> list[Member]:
    """The assembly's facilitators, admins first, then by e-mail."""
    rows = await session.execute(
        select(Membership, User.email)
        .join(User, User.id == Membership.user_id)
        .where(Membership.assembly_id == assembly_id)
        .order_by(User.email)
    )
    found = [
        Member(
            membership_id=m.id,
            user_id=m.user_id,
            email=email,
            role=m.role,
            since=m.created_at,
        )
        for m, email in rows
    ]
    return sorted(found, key=lambda m: (m.role != MemberRole.ADMIN, m.email))


async def facilitating(session: AsyncSession, user_id: int) -> list[Facilitating]:
    """The assemblies ``user_id`` is a member of, by name."""
    rows = await session.execute(
        select(Assembly, Membership.role)
        .join(Membership, Membership.assembly_id == Assembly.id)
        .where(Membership.user_id == user_id)
        .order_by(Assembly.name, Assembly.id)
    )
    return [Facilitating(assembly=a, role=role) for a, role in rows]


async def add(
    session: AsyncSession, *, assembly_id: int, user_id: int, role: MemberRole, now: datetime
) -> Membership:
    """Make ``user_id`` a member; a member already is one (an admin role is never lowered)."""
    membership = (
        await session.scalars(
            select(Membership).where(
                Membership.assembly_id == assembly_id, Membership.user_id == user_id
            )
        )
    ).first()
    if membership is None:
        membership = Membership(assembly_id=assembly_id, user_id=user_id, role=role, created_at=now)
        session.add(membership)
    elif role == MemberRole.ADMIN:
        membership.role = MemberRole.ADMIN
    await session.flush()
    return membership


async def invite(
    session: AsyncSession,
    *,
    assembly: Assembly,
    email: str,
    role: str,
    invited_by: User,
    now: datetime,
) -> Invited:
    """An invitation to ``email``; one made before for the same address is replaced."""
    email = normalise_email(email)
    member_role = parse_role(role)
    already = await session.scalar(
        select(Membership.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.assembly_id == assembly.id, User.email == email)
    )
    if already is not None:
        raise Conflict("this person already facilitates the assembly", field="email")
    # The earlier link may have been lost: only the newest one works.
    await session.execute(
        delete(Invitation).where(
            Invitation.assembly_id == assembly.id,
            Invitation.email == email,
            Invitation.accepted_at.is_(None),
        )
    )
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        assembly_id=assembly.id,
        email=email,
        role=member_role,
        token_hash=token_hash(token),
        invited_by_id=invited_by.id,
        created_at=now,
    )
    session.add(invitation)
    await session.flush()
    return Invited(invitation=invitation, token=token)


async def pending_invitations(session: AsyncSession, assembly_id: int) -> list[Invitation]:
    """Invitations of one assembly not accepted yet, newest first."""
    query = (
        select(Invitation)
        .where(Invitation.assembly_id == assembly_id, Invitation.accepted_at.is_(None))
        .order_by(Invitation.created_at.desc(), Invitation.id.desc())
    )
    return list((await session.scalars(query)).all())


async def withdraw(session: AsyncSession, *, assembly_id: int, invitation_id: int) -> Invitation:
    """Cancel an invitation not accepted yet: its link stops working."""
    invitation = await session.get(Invitation, invitation_id)
    if (
        invitation is None
        or invitation.assembly_id != assembly_id
        or invitation.accepted_at is not None
    ):
        raise NotFound("no such invitation")
    await session.delete(invitation)
    await session.flush()
    return invitation


async def invitations_for(session: AsyncSession, user: User) -> list[PendingInvitation]:
    """Invitations addressed to ``user``'s e-mail address, for their dashboard.

    Only those made after the account existed: nobody verifies that a sign-up owns its
    address, so someone who registers an invited address afterwards must have the link.
    """
    rows = await session.execute(
        select(Invitation, Assembly)
        .join(Assembly, Assembly.id == Invitation.assembly_id)
        .where(
            Invitation.email == user.email,
            Invitation.accepted_at.is_(None),
            Invitation.created_at >= user.created_at,
        )
        .order_by(Invitation.created_at, Invitation.id)
    )
    return [PendingInvitation(invitation=i, assembly=a) for i, a in rows]


async def find_invitation(session: AsyncSession, token: str) -> PendingInvitation:
    """The open invitation a link's token names; NotFound if unknown or already used."""
    if not token or len(token) > MAX_TOKEN:
        raise NotFound("this invitation does not exist or was already used")
    row = (
        await session.execute(
            select(Invitation, Assembly)
            .join(Assembly, Assembly.id == Invitation.assembly_id)
            .where(Invitation.token_hash == token_hash(token), Invitation.accepted_at.is_(None))
        )
    ).first()
    if row is None:
        raise NotFound("this invitation does not exist or was already used")
    return PendingInvitation(invitation=row[0], assembly=row[1])


def check_addressee(invitation: Invitation, user: User) -> None:
    if invitation.email != user.email:
        raise Forbidden(
            f"this invitation is for {invitation.email}, and you are logged in as "
            f"{user.email}: log out, then log in (or sign up) with {invitation.email}"
        )


async def _accept(
    session: AsyncSession, pending: PendingInvitation, user: User, now: datetime
) -> Facilitating:
    check_addressee(pending.invitation, user)
    pending.invitation.accepted_at = now
    membership = await add(
        session,
        assembly_id=pending.assembly.id,
        user_id=user.id,
        role=pending.invitation.role,
        now=now,
    )
    return Facilitating(assembly=pending.assembly, role=membership.role)


async def accept(session: AsyncSession, *, token: str, user: User, now: datetime) -> Facilitating:
    """Accept the invitation a link carries, as ``user`` (whose address it must be)."""
    return await _accept(session, await find_invitation(session, token), user, now)


async def accept_by_id(
    session: AsyncSession, *, invitation_id: int, user: User, now: datetime
) -> Facilitating:
    """Accept from the dashboard, where the invitation is listed for its addressee."""
    for pending in await invitations_for(session, user):
        if pending.invitation.id == invitation_id:
            return await _accept(session, pending, user, now)
    raise NotFound("this invitation does not exist or was already used")


async def _lock_admins(session: AsyncSession, assembly_id: int) -> list[int]:
    # Lock the assembly's admin rows (PostgreSQL) so that two admins removing each other
    # at the same moment cannot both succeed; SQLite transactions are serialised anyway.
    query = (
        select(Membership.id)
        .where(Membership.assembly_id == assembly_id, Membership.role == MemberRole.ADMIN)
        .with_for_update()
    )
    return list((await session.scalars(query)).all())


async def _member(session: AsyncSession, assembly_id: int, membership_id: int) -> Member:
    row = (
        await session.execute(
            select(Membership, User.email)
            .join(User, User.id == Membership.user_id)
            .where(Membership.id == membership_id, Membership.assembly_id == assembly_id)
        )
    ).first()
    if row is None:
        raise NotFound("this person is not a facilitator of the assembly")
    m, email = row
    return Member(
        membership_id=m.id, user_id=m.user_id, email=email, role=m.role, since=m.created_at
    )


LAST_ADMIN = "an assembly needs at least one admin: make another facilitator admin first"


async def remove(session: AsyncSession, *, assembly_id: int, membership_id: int) -> Member:
    """Remove a facilitator; the assembly's last admin cannot be removed."""
    admins = await _lock_admins(session, assembly_id)
    member = await _member(session, assembly_id, membership_id)
    if admins == [member.membership_id]:
        raise Conflict(LAST_ADMIN)
    await session.execute(delete(Membership).where(Membership.id == member.membership_id))
    return member


async def set_role(
    session: AsyncSession, *, assembly_id: int, membership_id: int, role: str
) -> Member:
    """Make a facilitator admin, or an admin facilitator (never the last admin)."""
    new_role = parse_role(role)
    admins = await _lock_admins(session, assembly_id)
    member = await _member(session, assembly_id, membership_id)
    if new_role != MemberRole.ADMIN and admins == [member.membership_id]:
        raise Conflict(LAST_ADMIN)
    membership = await session.get(Membership, member.membership_id)
    assert membership is not None
    membership.role = new_role
    await session.flush()
    return await _member(session, assembly_id, membership_id)
