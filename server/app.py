"""create_app(settings): routes, middleware, lifespan (context and optional worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from server import accounts, address, instance, worker
from server.activitypub.negotiation import wants_activity_json
from server.config import Settings, load_settings
from server.context import Context, create_context
from server.errors import InterOccError, LoginRequired, TooManyRequests
from server.federation import namespace, webfinger
from server.federation import routes as ap_routes
from server.federation.cache import Memo, ReadCache
from server.federation.inbox_queue import Enqueuer
from server.web import (
    account,
    admin,
    archives,
    committees,
    composer,
    deliveries,
    feeds,
    followers,
    identities,
    language,
    media,
    public,
    relays,
)
from server.web.access_log import AccessLogMiddleware
from server.web.pages import HERE as WEB_DIR
from server.web.pages import create_templates, render
from server.web.security import SecurityMiddleware

log = logging.getLogger(__name__)


def _wants_html(request: Request) -> bool:
    """A browser: a page GET, or a form POST (errors are then shown as pages)."""
    accept = request.headers.get("accept", "")
    if request.method == "POST":
        kind = request.headers.get("content-type", "")
        return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
    return request.method == "GET" and "text/html" in accept and wants_activity_json(accept) is None


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InterOccError)
    if isinstance(exc, LoginRequired):
        return RedirectResponse(exc.detail or "/login", status_code=303)
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    elif exc.detail:
        log.info("%s %s: %s (%s)", request.method, request.url.path, exc.message, exc.detail)
    response: Response
    if _wants_html(request):
        response = await render(request, "error.html", status=exc.status, message=exc.message)
    else:
        response = JSONResponse({"error": exc.message}, status_code=exc.status)
    if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, method not allowed) in our shapes."""
    assert isinstance(exc, StarletteHTTPException)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    if _wants_html(request):
        return await render(request, "error.html", status=exc.status_code, message=message)
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error"}, status_code=500)


async def _check_address(context: Context) -> None:
    """Serve no other address than the one the database records (server/address.py): a web
    process started by hand, or by `interocc serve --workers N`, stops at start-up. Nothing is
    recorded here, and a database with none passes: `interocc serve` checked it fully (and
    recorded the address) before it started this app."""
    async with context.engine.connect() as conn:
        await address.check(conn, context.settings.base_url, recorded_only=True)


async def _ready_line(context: Context) -> str:
    """The line that tells whoever started the server where it is and what to do next."""
    base = context.urls.base
    async with context.sessions() as session:
        ready = await instance.has_admin(session)
    if ready:
        return f"InterOcc is serving {base}: log in at {base}/login"
    return (
        f"InterOcc is serving {base}: no administrator yet; create the first one with "
        "`interocc admin create EMAIL` (with this server's INTEROCC_* settings), then log in "
        f"at {base}/login"
    )


def create_app(
    settings: Settings, *, ctx: Context | None = None, run_worker: bool = False
) -> Starlette:
    """The ASGI app. With ``ctx`` given (tests) it is used and not closed by the app."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = ctx is None
        context = ctx if ctx is not None else await create_context(settings)
        if own:
            try:
                await _check_address(context)
            except BaseException:
                await context.aclose()
                raise
        app.state.ctx = context
        app.state.templates = create_templates()
        await asyncio.to_thread(accounts.prepare_logins)
        # Queued activities that arrive together are written together (group commit).
        app.state.inbox_enqueuer = enqueuer = Enqueuer(context)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run_forever(context, stop)) if run_worker else None
        log.info("%s", await _ready_line(context))
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            await enqueuer.aclose()
            if own:
                await context.aclose()

    # Federation first: Starlette tries routes in order, and these take most requests (an
    # inbox burst, actor and object fetches). No page route shares a path with them
    # (tests/test_app_routes.py), so the order changes nothing but the time to match.
    routes = [
        *ap_routes.routes,
        *webfinger.routes,
        *namespace.routes,
        *public.routes,
        *language.routes,
        *account.routes,
        *identities.routes,
        *archives.routes,
        *composer.routes,
        *followers.routes,
        *committees.routes,
        *admin.routes,
        *relays.routes,
        *deliveries.routes,
        *feeds.routes,
        *media.routes,
        Mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(AccessLogMiddleware),
            Middleware(SecurityMiddleware, settings=settings),
            Middleware(language.LanguageMiddleware, settings=settings),
        ],
        exception_handlers={
            InterOccError: _error,
            StarletteHTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    # One per app, so per web process: federation GET answers (server/federation/cache.py).
    app.state.read_cache = ReadCache(ttl=settings.read_cache_seconds)
    # The domain blocks and stored signing keys the inbox reads, kept the same way.
    app.state.inbox_memo = Memo(ttl=settings.read_cache_seconds)
    return app


def app_from_environment() -> Starlette:
    """The app as ``interocc serve --workers N`` starts it in each process (uvicorn factory)."""
    return create_app(load_settings())
