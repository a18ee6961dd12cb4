"""Acceptance: other servers find our assemblies through WebFinger, host-meta and NodeInfo.

Everything runs over real loopback HTTP against our app under uvicorn; the host in handles
is ``127.0.0.1:PORT``, port included, exactly as INTEROCC_BASE_URL says.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import update

from server import assemblies, communiques, instance
from server.app import create_app
from server.config import Settings
from server.context import Context
from server.models import Assembly, AssemblyStatus, Communique
from tests.helpers import approved_assembly, count, post
from tests.support.servers import ServerThread

pytestmark = pytest.mark.e2e

AP_JSON = "application/activity+json"
XRD_NS = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"


@pytest.fixture
async def http(server: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=10) as c:
        yield c


async def pending_assembly(ctx: Context, handle: str) -> None:
    async with ctx.sessions() as session, session.begin():
        await assemblies.create(session, handle=handle, name=f"{handle} assembly")


async def suspended_assembly(ctx: Context, handle: str) -> None:
    await approved_assembly(ctx, handle)
    async with ctx.sessions() as session, session.begin():
        await assemblies.suspend(session, handle, now=ctx.clock())


async def webfinger(http: httpx.AsyncClient, resource: str | None) -> httpx.Response:
    params = {} if resource is None else {"resource": resource}
    return await http.get(
        "/.well-known/webfinger", params=params, headers={"Accept": "application/jrd+json"}
    )


def self_link(jrd: dict[str, object]) -> dict[str, str]:
    links = jrd["links"]
    assert isinstance(links, list)
    found = [link for link in links if link.get("rel") == "self"]
    assert len(found) == 1, links
    return found[0]


async def test_webfinger_by_acct_and_by_actor_url(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza")
    host = ctx.urls.host
    assert host.startswith("127.0.0.1:")  # the port is part of the handle's host
    actor_id = ctx.urls.actor("libertyplaza")

    for resource in (f"acct:libertyplaza@{host}", actor_id):
        response = await webfinger(http, resource)
        assert response.status_code == 200, (resource, response.text)
        assert response.headers["content-type"].startswith("application/jrd+json")
        jrd = response.json()
        assert jrd["subject"] == f"acct:libertyplaza@{host}"
        link = self_link(jrd)
        assert link["type"] == AP_JSON
        assert link["href"] == actor_id

    # The self link leads to the actor document whose id is that very link.
    actor = await http.get(actor_id, headers={"Accept": AP_JSON})
    assert actor.status_code == 200
    assert actor.json()["id"] == actor_id

    # A percent-encoded resource (as some servers send it) names the same account.
    response = await http.get(
        f"/.well-known/webfinger?resource={quote(f'acct:libertyplaza@{host}', safe='')}"
    )
    assert response.status_code == 200
    assert self_link(response.json())["href"] == actor_id


async def test_webfinger_refusals(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await pending_assembly(ctx, "waiting")
    await suspended_assembly(ctx, "banned")
    host = ctx.urls.host

    cases = [
        (f"acct:nobody@{host}", 404),  # unknown
        (f"acct:waiting@{host}", 404),  # pending: it does not exist yet
        (ctx.urls.actor("waiting"), 404),
        (f"acct:banned@{host}", 410),  # suspended: gone
        (ctx.urls.actor("banned"), 410),
        ("acct:libertyplaza@elsewhere.example", 404),  # another host
        ("acct:libertyplaza@127.0.0.1", 404),  # our IP but without our port
        ("https://elsewhere.example/actors/libertyplaza", 404),
        (f"acct:Bad Handle!@{host}", 404),
    ]
    for resource, status in cases:
        response = await webfinger(http, resource)
        assert response.status_code == status, (resource, response.text)
        assert response.headers["content-type"].startswith("application/json"), resource
        assert isinstance(response.json().get("error"), str), resource

    for params in ({}, {"resource": ""}):
        response = await http.get("/.well-known/webfinger", params=params)
        assert response.status_code == 400, params
        assert "resource" in response.json()["error"]


async def test_host_meta_points_at_webfinger(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza")
    response = await http.get("/.well-known/host-meta")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xrd+xml")
    root = ET.fromstring(response.content)
    assert root.tag == f"{XRD_NS}XRD"
    links = [link for link in root.iter(f"{XRD_NS}Link") if link.get("rel") == "lrdd"]
    assert len(links) == 1
    template = links[0].get("template", "")
    assert template == f"{ctx.urls.base}/.well-known/webfinger?resource={{uri}}"

    # Following the template as a client would gives the account.
    url = template.replace("{uri}", quote(f"acct:libertyplaza@{ctx.urls.host}", safe=""))
    found = await http.get(url)
    assert found.status_code == 200
    assert self_link(found.json())["href"] == ctx.urls.actor("libertyplaza")


async def test_nodeinfo_links_and_documents(ctx: Context, http: httpx.AsyncClient) -> None:
    await approved_assembly(ctx, "libertyplaza")
    await approved_assembly(ctx, "oakland")
    await pending_assembly(ctx, "waiting")
    await suspended_assembly(ctx, "banned")
    first = await post(ctx, "libertyplaza", "One.")
    await post(ctx, "libertyplaza", "Two.")
    await post(ctx, "oakland", "Three.")
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=first.url, now=ctx.clock())
    assert await count(ctx, Assembly, Assembly.status == AssemblyStatus.APPROVED) == 2

    response = await http.get("/.well-known/nodeinfo")
    assert response.status_code == 200
    links = {link["rel"]: link["href"] for link in response.json()["links"]}
    schema = "http://nodeinfo.diaspora.software/ns/schema/"
    assert set(links) == {f"{schema}2.0", f"{schema}2.1"}

    for version in ("2.0", "2.1"):
        href = links[f"{schema}{version}"]
        assert href.startswith(ctx.urls.base + "/")
        response = await http.get(href)
        assert response.status_code == 200, href
        assert response.headers["content-type"].startswith("application/json")
        doc = response.json()
        assert doc["version"] == version
        assert doc["software"]["name"] == "interocc"
        assert isinstance(doc["software"]["version"], str) and doc["software"]["version"]
        assert doc["protocols"] == ["activitypub"]
        assert set(doc["services"]) == {"inbound", "outbound"}
        assert isinstance(doc["openRegistrations"], bool)
        assert isinstance(doc["metadata"], dict)
        # Approved assemblies only; communiqués that were not deleted only.
        assert doc["usage"]["users"]["total"] == 2
        assert doc["usage"]["localPosts"] == 2

    assert (await http.get("/nodeinfo/9.9")).status_code == 404


@pytest.fixture
async def uncached(settings: Settings, ctx: Context) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process, keeping no federation answer: each GET sees the database now."""
    app = create_app(dataclasses.replace(settings, read_cache_seconds=0), ctx=ctx)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=settings.base_url) as client:
            yield client


async def test_nodeinfo_says_whether_sign_ups_are_open(
    ctx: Context, uncached: httpx.AsyncClient
) -> None:
    # Mastodon reports "approval required" as open too: anyone may ask for an account.
    for mode, open_ in (("open", True), ("approval", True), ("closed", False)):
        async with ctx.sessions() as session, session.begin():
            await instance.save(
                session,
                name="InterOcc",
                description="",
                rules="",
                registration_mode=mode,
                follow_approval=False,
            )
        for version in ("2.0", "2.1"):
            doc = (await uncached.get(f"/nodeinfo/{version}")).json()
            assert doc["openRegistrations"] is open_, (mode, version)


async def test_nodeinfo_counts_assemblies_that_published_lately_as_active(
    ctx: Context, uncached: httpx.AsyncClient
) -> None:
    now = ctx.clock()
    ages = {
        "month": [10, 400],  # active this month (and half year)
        "halfyear": [100],  # active in the half year only
        "dormant": [400],  # published, but long ago
        "silent": [],  # never published
        "banned": [5],  # active, but suspended: not counted at all
    }
    for handle, days in ages.items():
        await approved_assembly(ctx, handle)
        for age in days:
            published = await post(ctx, handle, f"{age} days ago.")
            async with ctx.sessions() as session, session.begin():
                await session.execute(
                    update(Communique)
                    .where(Communique.id == published.communique.id)
                    .values(published_at=now - timedelta(days=age))
                )
    async with ctx.sessions() as session, session.begin():
        await assemblies.suspend(session, "banned", now=now)

    doc = (await uncached.get("/nodeinfo/2.1")).json()
    assert doc["usage"]["users"] == {"total": 4, "activeMonth": 1, "activeHalfyear": 2}
