"""WebFinger, host-meta and NodeInfo: how other servers discover us."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import unquote

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server import assemblies, instance
from server.activitypub.vocab import AS2_MEDIA_TYPE
from server.config import VERSION
from server.context import Context
from server.errors import BadRequest, NotFound
from server.federation.cache import cache_of, respond
from server.instance import RegistrationMode
from server.models import Assembly, AssemblyStatus, Communique

JRD = "application/jrd+json"


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def parse_resource(ctx: Context, resource: str) -> str:
    """The handle a WebFinger resource names on this instance (acct: URI or actor URL)."""
    resource = unquote(resource.strip())
    if resource.startswith("acct:"):
        user, sep, host = resource.removeprefix("acct:").lstrip("@").rpartition("@")
        if not sep or host.lower() != ctx.urls.host:
            raise NotFound("not an account on this instance")
        return user
    prefix = ctx.urls.actor("")
    if resource.startswith(prefix) and "/" not in resource.removeprefix(prefix):
        return resource.removeprefix(prefix)
    if resource == ctx.urls.instance_actor():
        return ctx.urls.host
    raise NotFound("not an account on this instance")


async def webfinger(request: Request) -> Response:
    ctx = _ctx(request)
    resource = request.query_params.get("resource")
    if not resource:
        raise BadRequest("the resource parameter is required")
    handle = parse_resource(ctx, resource)

    async def render() -> Response:
        if handle == ctx.urls.host:  # the instance actor, acct:host@host as Mastodon has it
            actor_url = ctx.urls.instance_actor()
            subject = f"acct:{handle}@{ctx.urls.host}"
        else:
            async with ctx.sessions() as session:
                assembly = await assemblies.get_public(session, handle)
            actor_url = ctx.urls.actor(assembly.handle)
            subject = ctx.urls.acct(assembly.handle)
        links = [
            {"rel": "self", "type": AS2_MEDIA_TYPE, "href": actor_url},
            {
                "rel": "http://webfinger.net/rel/profile-page",
                "type": "text/html",
                "href": actor_url,
            },
        ]
        body = {"subject": subject, "aliases": [actor_url], "links": links}
        return JSONResponse(body, media_type=JRD, headers={"Access-Control-Allow-Origin": "*"})

    # Keyed by the handle the resource names (its acct: URI and actor URL forms share it).
    key = (request.url.path, handle)
    return respond(request, await cache_of(request).answer(key, render))


async def host_meta(request: Request) -> Response:
    base = _ctx(request).urls.base

    async def render() -> Response:
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
            f'  <Link rel="lrdd" template="{base}/.well-known/webfinger?resource={{uri}}"/>\n'
            "</XRD>\n"
        )
        return Response(xml, media_type="application/xrd+xml")

    return respond(request, await cache_of(request).answer((request.url.path,), render))


async def nodeinfo_links(request: Request) -> Response:
    base = _ctx(request).urls.base

    async def render() -> Response:
        links = [
            {
                "rel": f"http://nodeinfo.diaspora.software/ns/schema/{v}",
                "href": f"{base}/nodeinfo/{v}",
            }
            for v in ("2.0", "2.1")
        ]
        return JSONResponse({"links": links})

    return respond(request, await cache_of(request).answer((request.url.path,), render))


async def active_assemblies(session: AsyncSession, *, since: datetime) -> int:
    """Approved assemblies that published a communiqué since ``since``: NodeInfo's active
    users. Our accounts are assemblies and publishing is what they do; a facilitator who
    signs in only to read does nothing the fediverse sees."""
    query = (
        select(func.count(func.distinct(Communique.assembly_id)))
        .join(Assembly, Assembly.id == Communique.assembly_id)
        .where(Assembly.status == AssemblyStatus.APPROVED, Communique.published_at >= since)
    )
    return int(await session.scalar(query) or 0)


async def nodeinfo(request: Request) -> Response:
    ctx = _ctx(request)
    version = request.path_params["version"]
    if version not in {"2.0", "2.1"}:
        raise NotFound()

    async def render() -> Response:
        now = ctx.clock()
        async with ctx.sessions() as session:
            users = await session.scalar(
                select(func.count(Assembly.id)).where(Assembly.status == AssemblyStatus.APPROVED)
            )
            posts = await session.scalar(
                select(func.count(Communique.id)).where(Communique.deleted_at.is_(None))
            )
            # Our accounts are assemblies; an active one is one that published (see
            # active_assemblies), over NodeInfo's month and half year as Mastodon
            # counts them: 30 and 180 days.
            month = await active_assemblies(session, since=now - timedelta(days=30))
            halfyear = await active_assemblies(session, since=now - timedelta(days=180))
            info = await instance.load(session, ctx.settings)
        software: dict[str, str] = {"name": "interocc", "version": VERSION}
        if version == "2.1":
            software["homepage"] = ctx.urls.base
        body = {
            "version": version,
            "software": software,
            "protocols": ["activitypub"],
            "services": {"inbound": [], "outbound": []},
            # Open unless closed: sign-ups that wait for an admin's approval are open too,
            # as Mastodon reports its "approval required" mode.
            "openRegistrations": info.registration_mode != RegistrationMode.CLOSED,
            "usage": {
                "users": {
                    "total": users or 0,
                    "activeMonth": month,
                    "activeHalfyear": halfyear,
                },
                "localPosts": posts or 0,
            },
            "metadata": {"nodeName": ctx.settings.instance_name},
        }
        profile = f"http://nodeinfo.diaspora.software/ns/schema/{version}#"
        return JSONResponse(body, media_type=f'application/json; profile="{profile}"')

    return respond(request, await cache_of(request).answer((request.url.path,), render))


routes = [
    Route("/.well-known/webfinger", webfinger),
    Route("/.well-known/host-meta", host_meta),
    Route("/.well-known/nodeinfo", nodeinfo_links),
    Route("/nodeinfo/{version}", nodeinfo),
]
