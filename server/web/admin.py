"""The instance admin's screens: overview, assemblies, accounts, settings, blocked domains,
held follow requests and reports (relays: server/web/relays.py; federation, the servers we
deliver to: server/web/deliveries.py).

Every handler starts with ``require_admin`` (anonymous visitors go to /login, others get
403) and every POST then reads the form (CSRF). The work happens in one transaction; a
refusal re-renders the page with the message beside its field and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import accounts, archive, assemblies, deliveries, followers, instance, moderation
from server.context import Context
from server.errors import BadRequest, Conflict, NotFound
from server.models import Assembly, AssemblyStatus, FollowerStatus, User, UserStatus
from server.web.pages import render
from server.web.session import (
    FormState,
    checkbox,
    read_form,
    redirect,
    require_admin,
    text,
)

Page = Callable[[Request, FormState | None, int], Awaitable[Response]]
Action = Callable[[AsyncSession, Context, User], Awaitable[str]]


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _int_param(request: Request, name: str) -> int:
    value: Any = request.path_params[name]
    return int(value)


async def _act(request: Request, action: Action, *, back: str, page: Page) -> Response:
    """Run one admin action in one transaction; flash its message, or show its refusal."""
    user = await require_admin(request)
    await read_form(request)
    ctx = _ctx(request)
    try:
        async with ctx.sessions() as session, session.begin():
            message = await action(session, ctx, user)
    except (BadRequest, Conflict) as exc:
        return await page(request, FormState().fail(exc), exc.status)
    return redirect(request, back, flash=message)


# -- overview -----------------------------------------------------------------------------


async def overview(request: Request) -> Response:
    await require_admin(request)
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        counts = await moderation.overview(session)
        queue = await deliveries.queue_overview(session, now=ctx.clock())
    return await render(
        request,
        "admin_overview.html",
        counts=counts,
        queue=queue,
        mail_on=ctx.settings.mail_enabled,
    )


# -- assemblies ---------------------------------------------------------------------------


async def assemblies_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    async with _ctx(request).sessions() as session:
        rows = (
            await session.execute(
                select(Assembly, User.email)
                .outerjoin(User, User.id == Assembly.requested_by_id)
                .order_by(Assembly.handle)
            )
        ).all()
        imported = await archive.imported_handles(session)
    listed = [(assembly, email) for assembly, email in rows]
    pending = [row for row in listed if row[0].status == AssemblyStatus.PENDING]
    return await render(
        request,
        "admin_assemblies.html",
        status=status,
        form=form,
        pending=sorted(pending, key=lambda row: (row[0].created_at, row[0].id)),
        listed=listed,
        imported=imported,
    )


Change = Callable[..., Awaitable[Assembly]]


def _assembly_action(change: Change, done: str) -> Callable[[Request], Awaitable[Response]]:
    """approve, suspend, unsuspend: one button each, no form fields."""

    async def endpoint(request: Request) -> Response:
        handle = request.path_params["handle"]

        async def action(session: AsyncSession, ctx: Context, user: User) -> str:
            assembly = await change(session, handle, now=ctx.clock())
            return f"{assembly.name} (@{assembly.handle}) is {done}."

        return await _act(request, action, back="/admin/assemblies", page=assemblies_page)

    return endpoint


async def reject_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    async with _ctx(request).sessions() as session:
        assembly = await assemblies.get(session, request.path_params["handle"])
    if form is None and assembly.status != AssemblyStatus.PENDING:
        raise NotFound(f"@{assembly.handle} is not waiting for approval")
    return await render(
        request, "admin_reject.html", status=status, form=form or FormState(), assembly=assembly
    )


async def reject_assembly(request: Request) -> Response:
    await require_admin(request)
    form = await read_form(request)
    reason = text(form, "reason", max_length=5000)
    ctx = _ctx(request)
    try:
        async with ctx.sessions() as session, session.begin():
            assembly = await assemblies.reject(
                session, request.path_params["handle"], reason=reason, now=ctx.clock()
            )
    except (BadRequest, Conflict) as exc:
        state = FormState(values={"reason": reason}).fail(exc)
        return await reject_page(request, state, 400)
    return redirect(
        request, "/admin/assemblies", flash=f"The request for @{assembly.handle} is rejected."
    )


# -- accounts -----------------------------------------------------------------------------

ACCOUNT_MESSAGES = {
    "approve": "{email} is approved and can sign in.",
    "reject": "{email} is rejected.",
    "close": "{email} is closed and signed out everywhere.",
    "reopen": "{email} is open again.",
    "make-admin": "{email} is now an administrator.",
    "remove-admin": "{email} is no longer an administrator.",
}


async def accounts_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    async with _ctx(request).sessions() as session:
        users = await accounts.list_users(session)
    pending = [u for u in users if u.status == UserStatus.PENDING]
    return await render(
        request, "admin_accounts.html", status=status, form=form, users=users, pending=pending
    )


async def account_action(request: Request) -> Response:
    user_id = _int_param(request, "user_id")
    verb = request.path_params["action"]
    if verb not in ACCOUNT_MESSAGES:
        raise NotFound("no such action")

    async def action(session: AsyncSession, ctx: Context, admin: User) -> str:
        changed = await accounts.moderate_account(
            session, admin_id=admin.id, user_id=user_id, action=verb
        )
        return ACCOUNT_MESSAGES[verb].format(email=changed.email)

    return await _act(request, action, back="/admin/accounts", page=accounts_page)


# -- settings -----------------------------------------------------------------------------


async def settings_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    ctx = _ctx(request)
    if form is None:
        async with ctx.sessions() as session:
            info = await instance.load(session, ctx.settings)
        form = FormState(
            values={
                "name": info.name,
                "description": info.description,
                "rules": info.rules,
                "registration_mode": info.registration_mode.value,
                "follow_approval": info.follow_approval,
            }
        )
    return await render(
        request,
        "admin_settings.html",
        status=status,
        form=form,
        modes=[
            ("open", "Open: anyone may sign up"),
            ("approval", "Approval: sign-ups wait for an administrator"),
            ("closed", "Closed: no sign-ups"),
        ],
    )


async def save_settings(request: Request) -> Response:
    await require_admin(request)
    form = await read_form(request)
    values: dict[str, Any] = {
        "name": text(form, "name", max_length=1000),
        "description": text(form, "description", max_length=10_000),
        "rules": text(form, "rules", max_length=10_000),
        "registration_mode": text(form, "registration_mode", max_length=20),
        "follow_approval": checkbox(form, "follow_approval"),
    }
    ctx = _ctx(request)
    try:
        async with ctx.sessions() as session, session.begin():
            await instance.save(session, **values)
    except BadRequest as exc:
        return await settings_page(request, FormState(values=values).fail(exc), 400)
    return redirect(request, "/admin/settings", flash="The instance's settings are saved.")


# -- blocked domains ----------------------------------------------------------------------


async def domains_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    async with _ctx(request).sessions() as session:
        blocks = await moderation.list_domain_blocks(session)
    return await render(
        request, "admin_domains.html", status=status, form=form or FormState(), blocks=blocks
    )


async def block_domain(request: Request) -> Response:
    await require_admin(request)
    form = await read_form(request)
    values = {
        "domain": text(form, "domain", max_length=1000),
        "reason": text(form, "reason", max_length=5000),
    }
    ctx = _ctx(request)
    try:
        async with ctx.sessions() as session, session.begin():
            blocked = await moderation.block_domain(
                session,
                domain=values["domain"],
                reason=values["reason"],
                own_host=ctx.urls.host,
                now=ctx.clock(),
            )
    except (BadRequest, Conflict) as exc:
        return await domains_page(request, FormState(values=values).fail(exc), 400)
    message = f"{blocked.block.domain} is blocked."
    if blocked.followers_removed:
        message += f" {blocked.followers_removed} follower(s) from it were removed."
    return redirect(request, "/admin/domains", flash=message)


async def unblock_domain(request: Request) -> Response:
    block_id = _int_param(request, "block_id")

    async def action(session: AsyncSession, ctx: Context, user: User) -> str:
        block = await moderation.unblock_domain(session, block_id)
        return f"{block.domain} is no longer blocked."

    return await _act(request, action, back="/admin/domains", page=domains_page)


# -- follow requests held by the instance's follow approval -------------------------------


async def follows_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        held = await followers.held_follows(session)
        info = await instance.load(session, ctx.settings)
    return await render(
        request,
        "admin_follows.html",
        status=status,
        form=form,
        held=held,
        follow_approval=info.follow_approval,
    )


async def approve_follow(request: Request) -> Response:
    follower_id = _int_param(request, "follower_id")

    async def action(session: AsyncSession, ctx: Context, user: User) -> str:
        entry = await followers.approve_held_follow(
            session, ctx, follower_id=follower_id, now=ctx.clock()
        )
        if entry.status == FollowerStatus.ACCEPTED:
            return f"{entry.handle} now follows @{entry.assembly_handle}."
        return f"{entry.handle}'s request now waits for @{entry.assembly_handle}'s facilitators."

    return await _act(request, action, back="/admin/follows", page=follows_page)


async def reject_follow(request: Request) -> Response:
    follower_id = _int_param(request, "follower_id")

    async def action(session: AsyncSession, ctx: Context, user: User) -> str:
        entry = await followers.reject_held_follow(
            session, ctx, follower_id=follower_id, now=ctx.clock()
        )
        return f"{entry.handle}'s request to follow @{entry.assembly_handle} is rejected."

    return await _act(request, action, back="/admin/follows", page=follows_page)


# -- reports ------------------------------------------------------------------------------


async def reports_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    async with _ctx(request).sessions() as session:
        reports = await moderation.list_reports(session)
    return await render(request, "admin_reports.html", status=status, form=form, reports=reports)


async def resolve_report(request: Request) -> Response:
    report_id = _int_param(request, "report_id")

    async def action(session: AsyncSession, ctx: Context, user: User) -> str:
        await moderation.resolve_report(session, report_id, now=ctx.clock())
        return "The report is marked resolved."

    return await _act(request, action, back="/admin/reports", page=reports_page)


routes = [
    Route("/admin", overview),
    Route("/admin/assemblies", assemblies_page),
    Route(
        "/admin/assemblies/{handle}/approve",
        _assembly_action(assemblies.approve, "approved: it federates"),
        methods=["POST"],
    ),
    Route("/admin/assemblies/{handle}/reject", reject_page),
    Route("/admin/assemblies/{handle}/reject", reject_assembly, methods=["POST"]),
    Route(
        "/admin/assemblies/{handle}/suspend",
        _assembly_action(assemblies.suspend, "suspended"),
        methods=["POST"],
    ),
    Route(
        "/admin/assemblies/{handle}/unsuspend",
        _assembly_action(assemblies.unsuspend, "restored"),
        methods=["POST"],
    ),
    Route("/admin/accounts", accounts_page),
    Route("/admin/accounts/{user_id:int}/{action}", account_action, methods=["POST"]),
    Route("/admin/settings", settings_page),
    Route("/admin/settings", save_settings, methods=["POST"]),
    Route("/admin/domains", domains_page),
    Route("/admin/domains", block_domain, methods=["POST"]),
    Route("/admin/domains/{block_id:int}/delete", unblock_domain, methods=["POST"]),
    Route("/admin/follows", follows_page),
    Route("/admin/follows/{follower_id:int}/approve", approve_follow, methods=["POST"]),
    Route("/admin/follows/{follower_id:int}/reject", reject_follow, methods=["POST"]),
    Route("/admin/reports", reports_page),
    Route("/admin/reports/{report_id:int}/resolve", resolve_report, methods=["POST"]),
]
