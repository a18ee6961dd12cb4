"""Where deliveries stand (server/deliveries.py): a communiqué's, for its assembly's
facilitators and the instance's admins; every server's health, for the admins, with a reset.

Neither page is public: which servers follow an assembly, and what they answer, is for the
people who run it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import communiques, deliveries
from server.activitypub import hosts
from server.context import Context
from server.errors import NotFound
from server.web.pages import render
from server.web.public import is_member
from server.web.session import (
    read_form,
    redirect,
    require_admin,
    require_member,
    require_user,
    text,
)

FEDERATION = "/admin/federation"


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def communique_delivery(request: Request) -> Response:
    """A communiqué's delivery, server by server: its facilitators and instance admins only."""
    user = await require_user(request)
    ctx = _ctx(request)
    handle = request.path_params["handle"]
    now = ctx.clock()
    async with ctx.sessions() as session:
        if not user.is_admin:  # refused before anything about the communiqué is looked up
            await require_member(session, user, handle)
        assembly, item = await communiques.get(session, handle, request.path_params["public_id"])
        summary = await deliveries.communique_summary(session, item.id, now=now)
        # An instance admin may look without being a member: then no assembly tabs.
        member = not user.is_admin or await is_member(
            session, assembly_id=assembly.id, user_id=user.id
        )
    return await render(
        request,
        "communique_delivery.html",
        assembly=assembly,
        communique=item,
        summary=summary,
        member=member,
        now=now,
    )


async def federation_page(request: Request) -> Response:
    await require_admin(request)
    ctx = _ctx(request)
    now = ctx.clock()
    async with ctx.sessions() as session:
        overview = await deliveries.host_overview(session, now=now)
        queue = await deliveries.queue_overview(session, now=now)
    return await render(
        request,
        "admin_federation.html",
        overview=overview,
        queue=queue,
        policy=hosts.Policy.of(ctx.settings),
        now=now,
    )


async def reset_host(request: Request) -> Response:
    """Make a server available again and send what it held (hosts.reset)."""
    await require_admin(request)
    form = await read_form(request)
    host = text(form, "host", max_length=300).strip()
    ctx = _ctx(request)
    async with ctx.sessions() as session, session.begin():
        released = await hosts.reset(
            session, host, now=ctx.clock(), policy=hosts.Policy.of(ctx.settings)
        )
    if released is None:
        raise NotFound(f"{host or 'that server'} has no health record: there is nothing to reset")
    sent = "nothing was held" if not released else f"{released} held deliveries are sent again"
    return redirect(request, FEDERATION, flash=f"{host} is marked available; {sent}.")


routes = [
    Route("/manage/{handle}/communiques/{public_id}/delivery", communique_delivery),
    Route(FEDERATION, federation_page),
    Route(FEDERATION + "/reset", reset_host, methods=["POST"]),
]
