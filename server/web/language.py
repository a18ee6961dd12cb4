"""The language of a request, and the switcher: a visitor's choice of language, kept in a
cookie for a year."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from server import accounts, i18n
from server.config import Settings
from server.context import Context
from server.web.session import check_csrf, cookie_name, current_user, use_request_language

YEAR = 365 * 24 * 3600


class LanguageMiddleware:
    """Sets the language of each HTTP request before its handler runs, from the switcher's
    cookie and ``Accept-Language`` (the account's preference is added once the handler reads
    the signed-in user: ``current_user``), so that a form error or a notice a handler writes
    is in the visitor's language, as the page around it is."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            use_request_language(Request(scope), self.settings)
        await self.app(scope, receive, send)


def _back_to(value: object) -> str:
    """A path on this site to go back to; anything else (another site, //host) is "/"."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(c) < 32 for c in value) or len(value) > 2000:
        return "/"
    return value


async def choose(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    form = await request.form()
    check_csrf(request, form)
    chosen = form.get("lang")
    response = RedirectResponse(_back_to(form.get("next")), status_code=303)
    if isinstance(chosen, str) and chosen in i18n.LANGUAGES:
        user = await current_user(request)
        if user is not None:
            # Kept with the account too: its e-mail and its other browsers follow.
            async with ctx.sessions() as session, session.begin():
                await accounts.set_language(session, user.id, chosen)
        response.set_cookie(
            cookie_name(ctx.settings, i18n.COOKIE),
            chosen,
            max_age=YEAR,
            httponly=True,
            samesite="lax",
            secure=ctx.settings.base_url.startswith("https://"),
        )
    return response


routes = [Route("/language", choose, methods=["POST"])]
