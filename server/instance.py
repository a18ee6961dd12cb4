"""Instance settings an admin edits in the browser; defaults come from the environment.

(The instance's address is recorded in the same table, under ``base_url``, by
server/address.py: it is not edited here.)"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.config import Settings
from server.errors import BadRequest
from server.models import InstanceSetting, User, UserStatus


class RegistrationMode(enum.StrEnum):
    OPEN = "open"  # anyone may sign up
    APPROVAL = "approval"  # sign-ups wait for an admin
    CLOSED = "closed"  # no sign-ups; admins create accounts from the CLI


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    description: str = ""
    rules: str = ""
    registration_mode: RegistrationMode = RegistrationMode.OPEN
    # Remote follow requests wait for an admin before reaching the assembly.
    follow_approval: bool = False

    @property
    def rules_list(self) -> list[str]:
        return [line.strip() for line in self.rules.splitlines() if line.strip()]


MAX_NAME = 100
MAX_DESCRIPTION = 5000
MAX_RULES = 5000


async def load(session: AsyncSession, settings: Settings) -> InstanceInfo:
    rows = (await session.scalars(select(InstanceSetting))).all()
    stored: dict[str, Any] = {row.key: row.value for row in rows}
    info = InstanceInfo(name=settings.instance_name)
    if isinstance(stored.get("name"), str) and stored["name"].strip():
        info = replace(info, name=stored["name"])
    if isinstance(stored.get("description"), str):
        info = replace(info, description=stored["description"])
    if isinstance(stored.get("rules"), str):
        info = replace(info, rules=stored["rules"])
    if stored.get("registration_mode") in {m.value for m in RegistrationMode}:
        info = replace(info, registration_mode=RegistrationMode(stored["registration_mode"]))
    if isinstance(stored.get("follow_approval"), bool):
        info = replace(info, follow_approval=stored["follow_approval"])
    return info


async def save(
    session: AsyncSession,
    *,
    name: str,
    description: str,
    rules: str,
    registration_mode: str,
    follow_approval: bool,
) -> None:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise BadRequest(f"the name is 1 to {MAX_NAME} characters", field="name")
    if len(description) > MAX_DESCRIPTION:
        raise BadRequest(
            f"the description is at most {MAX_DESCRIPTION} characters", field="description"
        )
    if len(rules) > MAX_RULES:
        raise BadRequest(f"the rules are at most {MAX_RULES} characters", field="rules")
    if registration_mode not in {m.value for m in RegistrationMode}:
        raise BadRequest("choose open, approval or closed", field="registration_mode")
    values: dict[str, Any] = {
        "name": name,
        "description": description.strip(),
        "rules": rules.strip(),
        "registration_mode": registration_mode,
        "follow_approval": follow_approval,
    }
    for key, value in values.items():
        row = await session.get(InstanceSetting, key)
        if row is None:
            session.add(InstanceSetting(key=key, value=value))
        else:
            row.value = value
    await session.flush()


async def has_admin(session: AsyncSession) -> bool:
    """Whether anyone can administer the instance yet (an active admin account)."""
    query = select(User.id).where(User.is_admin.is_(True), User.status == UserStatus.ACTIVE)
    return (await session.scalars(query.limit(1))).first() is not None
