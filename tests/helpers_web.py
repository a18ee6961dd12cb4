"""Driving InterOcc's HTML forms with httpx, as a browser does.

A form is sent the way a browser sends it: GET the page (the first visit sets the ``csrf``
cookie), take the form's hidden ``csrf_token``, then POST with the same cookie jar. Tests
use these against the loopback ``server`` fixture or an app behind ``httpx.ASGITransport``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import httpx

from server import accounts, assemblies
from server.context import Context
from server.models import MemberRole, Membership, UserStatus

PASSWORD = "correct horse battery staple"

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: str) -> str:
    """The CSRF token of the (first) form on an HTML page."""
    found = _CSRF_RE.search(page)
    assert found, "no csrf_token on the page"
    return html.unescape(found.group(1))


def field_error(page: str, name: str) -> str | None:
    """The error message shown beside the field ``name`` (None if there is none)."""
    found = re.search(rf'<p class="error" id="e-{re.escape(name)}"[^>]*>(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)).strip() if found else None


def form_error(page: str) -> str | None:
    """The error shown above a form, not tied to one field."""
    found = re.search(r'<p class="form-error"[^>]*>(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)).strip() if found else None


def input_value(page: str, name: str) -> str | None:
    """The value an ``<input name=…>`` (or the text a ``<textarea name=…>``) holds."""
    tag = re.search(rf'<input[^>]*\bname="{re.escape(name)}"[^>]*>', page)
    if tag:
        value = re.search(r'\bvalue="([^"]*)"', tag.group(0))
        return html.unescape(value.group(1)) if value else None
    area = re.search(rf'<textarea[^>]*\bname="{re.escape(name)}"[^>]*>(.*?)</textarea>', page, re.S)
    return html.unescape(area.group(1)) if area else None


async def submit(
    client: httpx.AsyncClient,
    page: str,
    data: dict[str, Any] | None = None,
    *,
    action: str | None = None,
    files: Any = None,
) -> httpx.Response:
    """GET ``page``, then POST ``data`` with its CSRF token to ``action`` (default ``page``)."""
    got = await client.get(page)
    assert got.status_code == 200, f"GET {page} → {got.status_code}"
    body = {"csrf_token": csrf_token(got.text), **(data or {})}
    return await client.post(action or page, data=body, files=files)


async def create_user(
    ctx: Context,
    email: str,
    password: str = PASSWORD,
    *,
    is_admin: bool = False,
    status: UserStatus = UserStatus.ACTIVE,
) -> int:
    """An account made directly in the database; returns its id."""
    async with ctx.sessions() as session, session.begin():
        user = await accounts.create_user(
            session, email=email, password=password, is_admin=is_admin, status=status
        )
        return user.id


async def log_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> None:
    """Sign ``client`` in through the login form (asserts that it worked)."""
    response = await submit(client, "/login", {"email": email, "password": password})
    assert response.status_code == 303, f"login as {email} → {response.status_code}"


async def add_member(
    ctx: Context, user_id: int, handle: str, role: MemberRole = MemberRole.FACILITATOR
) -> None:
    """Make an account a member of an assembly, directly in the database."""
    async with ctx.sessions() as session, session.begin():
        assembly = await assemblies.get(session, handle)
        session.add(
            Membership(assembly_id=assembly.id, user_id=user_id, role=role, created_at=ctx.clock())
        )
