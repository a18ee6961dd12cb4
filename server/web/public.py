"""Public pages: the home page and directory, an assembly's page, a communiqué's permalink.

The assembly and communiqué pages share their URLs with the AS2 documents; the routes in
server.activitypub.routes negotiate and call :func:`assembly_page` / :func:`communique_page`
for the HTML face.
"""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import assemblies, communiques
from server.content import plain_to_html
from server.context import Context
from server.models import Assembly, AssemblyStatus, Communique
from server.web.pages import render

PAGE_SIZE = 20


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


async def home(request: Request) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        listed = (
            await session.scalars(
                select(Assembly)
                .where(Assembly.status == AssemblyStatus.APPROVED)
                .order_by(Assembly.name)
            )
        ).all()
    return await render(request, "home.html", assemblies=listed)


async def assembly_page(request: Request, assembly: Assembly) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        recent = (
            await session.scalars(
                select(Communique)
                .where(Communique.assembly_id == assembly.id, Communique.deleted_at.is_(None))
                .order_by(Communique.published_at.desc(), Communique.id.desc())
                .limit(PAGE_SIZE)
            )
        ).all()
        followers = await assemblies.follower_count(session, assembly.id)
    return await render(
        request,
        "assembly.html",
        assembly=assembly,
        summary_html=plain_to_html(assembly.summary),
        communiques=recent,
        followers=followers,
        acct=f"@{assembly.handle}@{ctx.urls.host}",
    )


async def communique_page(request: Request, assembly: Assembly, item: Communique) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        replies = await communiques.replies_of(session, item.id)
    return await render(
        request, "communique.html", assembly=assembly, communique=item, replies=replies
    )


routes = [Route("/", home)]
