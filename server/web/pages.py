"""Human-facing pages: a Jinja2 environment built at start-up, and the render helper that
gives every page the signed-in person, the instance's settings, a CSRF token and the flash
message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from server import instance, ratification
from server.content import safe_link
from server.context import Context
from server.web.session import clear_cookie, cookie_name, csrf_token, current_user, take_flash

HERE = Path(__file__).parent


def create_templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = lambda d: d.strftime("%d %B %Y") if d else ""
    env.filters["datetime"] = lambda d: d.strftime("%d %B %Y, %H:%M UTC") if d else ""
    env.filters["decision"] = ratification.summary_text
    env.filters["remote_decision"] = lambda doc: ratification.from_remote(
        doc.get("ratification") if isinstance(doc, dict) else None
    )
    env.filters["iso"] = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else ""
    # Every URL that came from another server goes through this before it is an href or a
    # src: an absolute http(s) URL, or None (see _links.html).
    env.filters["safe_link"] = safe_link
    return env


async def render(
    request: Request, template: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    env: Environment = request.app.state.templates
    ctx: Context = request.app.state.ctx
    async with ctx.sessions() as session:
        info = await instance.load(session, ctx.settings)
    flash = take_flash(request)
    html = env.get_template(template).render(
        instance=info,
        instance_name=info.name,
        base_url=ctx.urls.base,
        urls=ctx.urls,
        host=ctx.urls.host,
        user=await current_user(request),
        csrf_token=csrf_token(request),
        flash=flash,
        path=request.url.path,
        status=status,
        **values,
    )
    response = HTMLResponse(html, status_code=status, headers={"Vary": "Accept, Cookie"})
    if request.cookies.get(cookie_name(ctx.settings, "flash")):
        clear_cookie(response, ctx.settings, "flash")
    return response
