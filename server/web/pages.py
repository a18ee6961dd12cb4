"""Human-facing pages: a Jinja2 environment built at start-up, and the render helper that
gives every page the signed-in person, the instance's settings, a CSRF token and the flash
message."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from server import i18n, instance, ratification
from server.content import safe_link
from server.context import Context
from server.web.session import (
    clear_cookie,
    cookie_name,
    csrf_token,
    current_user,
    take_flash,
    use_request_language,
)

HERE = Path(__file__).parent


def create_templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "xml"]),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.i18n"],
    )
    # _() and ngettext() in templates, in the request's language (server/i18n.py).
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    # {% trans %} blocks are looked up with their whitespace collapsed, as extracted (babel.cfg).
    env.policies["ext.i18n.trimmed"] = True
    env.filters["date"] = i18n.format_date
    env.filters["datetime"] = i18n.format_datetime
    env.filters["number"] = i18n.format_number
    env.globals["site_languages"] = i18n.LANGUAGES
    env.filters["decision"] = ratification.summary_text
    env.filters["remote_decision"] = lambda doc: ratification.from_remote(
        doc.get("ratification") if isinstance(doc, dict) else None
    )
    env.filters["iso"] = lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else ""
    env.filters["duration"] = duration
    env.filters["relative"] = relative
    # Every URL that came from another server goes through this before it is an href or a
    # src: an absolute http(s) URL, or None (see _links.html).
    env.filters["safe_link"] = safe_link
    return env


def duration(when: datetime | None, now: datetime) -> str:
    """How far ``when`` is from ``now``, coarsely: "4 minutes", "3 hours", "2 days"."""
    if when is None:
        return ""
    seconds = abs((when - now).total_seconds())
    # Each unit up to where rounding would reach the next one: 59 minutes, then 1 hour.
    for unit, size, up_to in (("minute", 60, 59.5 * 60), ("hour", 3600, 23.5 * 3600)):
        if seconds < up_to:
            n = max(1, round(seconds / size))
            return f"{n} {unit}{'' if n == 1 else 's'}"
    days = round(seconds / 86400)
    return f"{days} day{'' if days == 1 else 's'}"


def relative(when: datetime | None, now: datetime) -> str:
    """``when`` as people say it: "in 4 minutes", "3 hours ago", "now" (within a minute).
    Pages put the exact time in ``<time datetime>`` beside it."""
    if when is None:
        return ""
    if abs((when - now).total_seconds()) < 60:
        return "now"
    span = duration(when, now)
    return f"in {span}" if when > now else f"{span} ago"


async def render(
    request: Request, template: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    env: Environment = request.app.state.templates
    ctx: Context = request.app.state.ctx
    async with ctx.sessions() as session:
        info = await instance.load(session, ctx.settings)
    flash = take_flash(request)
    user = await current_user(request)
    use_request_language(request, ctx.settings, preferred=getattr(user, "language", None))
    html = env.get_template(template).render(
        instance=info,
        instance_name=info.name,
        base_url=ctx.urls.base,
        urls=ctx.urls,
        host=ctx.urls.host,
        user=user,
        lang=i18n.current(),
        csrf_token=csrf_token(request),
        flash=flash,
        path=request.url.path,
        status=status,
        **values,
    )
    response = HTMLResponse(
        html, status_code=status, headers={"Vary": "Accept, Accept-Language, Cookie"}
    )
    if request.cookies.get(cookie_name(ctx.settings, "flash")):
        clear_cookie(response, ctx.settings, "flash")
    return response
