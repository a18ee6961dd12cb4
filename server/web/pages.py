"""Human-facing pages: a Jinja2 environment built at start-up, and a render helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

HERE = Path(__file__).parent


def create_templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = lambda d: d.strftime("%d %B %Y") if d else ""
    return env


def render(request: Request, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
    env: Environment = request.app.state.templates
    ctx = request.app.state.ctx
    html = env.get_template(template).render(
        instance_name=ctx.settings.instance_name, base_url=ctx.urls.base, **values
    )
    return HTMLResponse(html, status_code=status, headers={"Vary": "Accept"})
