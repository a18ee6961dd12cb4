"""An assembly's other identities, from its settings page: aliases (its actor's
``alsoKnownAs``) and the move to another identity (server/moving.py).

Only the assembly's admins and the instance's administrators may use them: whoever else
asks is refused before the form is read. WebFinger and the target's actor document are
fetched before the write transaction, never inside it; a refusal shows the settings page
again with the reason beside the field.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import moving
from server.context import Context
from server.errors import BadRequest, Forbidden, InterOccError
from server.models import User
from server.web.account import settings_page
from server.web.session import (
    FormState,
    checkbox,
    read_form,
    redirect,
    require_assembly_admin,
    require_user,
    text,
)

MAX_TARGET = 2048  # a handle or an actor URL


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def _admin_post(request: Request) -> tuple[User, Context, FormData, str]:
    """A POST by one of the assembly's admins or an instance administrator: who, the
    context, the form (CSRF-checked) and the handle."""
    user = await require_user(request)
    ctx = _ctx(request)
    handle = str(request.path_params["handle"])
    async with ctx.sessions() as session:
        await require_assembly_admin(session, user, handle)
    return user, ctx, await read_form(request), handle


def _back(request: Request, handle: str, flash: str) -> Response:
    return redirect(request, f"/manage/{quote(handle)}/settings", flash=flash)


def _status(exc: InterOccError) -> int:
    # Another server's failure is reported on our page, which is not itself a 502.
    return exc.status if exc.status < 500 else 400


async def add_alias(request: Request) -> Response:
    user, ctx, form, handle = await _admin_post(request)
    target = text(form, "alias", max_length=MAX_TARGET).strip()
    state = FormState(values={"alias": target})
    try:
        await moving.prepare(ctx, target)
        async with ctx.sessions() as session, session.begin():
            await require_assembly_admin(session, user, handle)
            uri = await moving.add_alias(session, ctx, handle=handle, target=target)
    except Forbidden:
        raise
    except InterOccError as exc:
        return await settings_page(
            request, user, handle, status=_status(exc), alias_form=state.fail(exc, "alias")
        )
    return _back(request, handle, f"{uri} is now an alias of this assembly.")


async def remove_alias(request: Request) -> Response:
    user, ctx, form, handle = await _admin_post(request)
    target = text(form, "alias", max_length=MAX_TARGET).strip()
    try:
        async with ctx.sessions() as session, session.begin():
            await require_assembly_admin(session, user, handle)
            uri = await moving.remove_alias(session, ctx, handle=handle, target=target)
    except Forbidden:
        raise
    except InterOccError as exc:
        return await settings_page(
            request, user, handle, status=_status(exc), alias_form=FormState().fail(exc)
        )
    return _back(request, handle, f"{uri} is no longer an alias of this assembly.")


async def move(request: Request) -> Response:
    user, ctx, form, handle = await _admin_post(request)
    target = text(form, "target", max_length=MAX_TARGET).strip()
    state = FormState(values={"target": target})
    try:
        if not checkbox(form, "confirm"):
            raise BadRequest(
                "tick the box to confirm that followers will be asked to follow the new "
                "identity and that this assembly will no longer publish",
                field="confirm",
            )
        await moving.prepare(ctx, target)
        # Its aliases as they are now, read from its origin: not from a cache.
        found = await moving.current_target(ctx, target)
        async with ctx.sessions() as session, session.begin():
            await require_assembly_admin(session, user, handle)
            await moving.move(session, ctx, handle=handle, target=found, now=ctx.clock())
    except Forbidden:
        raise
    except InterOccError as exc:
        return await settings_page(
            request, user, handle, status=_status(exc), move_form=state.fail(exc, "target")
        )
    return _back(
        request,
        handle,
        f"This assembly has moved to {found.uri}. Its followers' servers are asked to "
        "follow the new identity.",
    )


routes = [
    Route("/manage/{handle}/aliases", add_alias, methods=["POST"]),
    Route("/manage/{handle}/aliases/remove", remove_alias, methods=["POST"]),
    Route("/manage/{handle}/move", move, methods=["POST"]),
]
