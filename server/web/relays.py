"""Admin screen for relay subscriptions (server.relays)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import following, relays
from server.context import Context
from server.errors import InterOccError
from server.web.pages import render
from server.web.session import FormState, read_form, redirect, require_admin
from server.web.session import text as form_text


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def _page(request: Request, form: FormState, status: int = 200) -> Response:
    async with _ctx(request).sessions() as session:
        rows = await relays.relays(session)
    return await render(request, "admin_relays.html", status=status, rows=rows, form=form)


async def relays_page(request: Request) -> Response:
    await require_admin(request)
    return await _page(request, FormState())


async def subscribe(request: Request) -> Response:
    await require_admin(request)
    ctx = _ctx(request)
    form = await read_form(request)
    url = form_text(form, "url", max_length=2048).strip()
    state = FormState(values={"url": url})
    try:
        await following.prefetch(ctx, relays.actor_url(url))
        async with ctx.sessions() as session, session.begin():
            await relays.subscribe(session, ctx, url=url, now=ctx.clock())
    except InterOccError as exc:
        return await _page(request, state.fail(exc, "url"), exc.status if exc.status < 500 else 400)
    return redirect(request, "/admin/relays", flash="Subscription sent: waiting for the relay.")


async def unsubscribe(request: Request) -> Response:
    await require_admin(request)
    ctx = _ctx(request)
    await read_form(request)
    async with ctx.sessions() as session, session.begin():
        await relays.unsubscribe(
            session, ctx, relay_id=int(request.path_params["id"]), now=ctx.clock()
        )
    return redirect(request, "/admin/relays", flash="Unsubscribed from the relay.")


routes = [
    Route("/admin/relays", relays_page),
    Route("/admin/relays", subscribe, methods=["POST"]),
    Route("/admin/relays/{id:int}/delete", unsubscribe, methods=["POST"]),
]
