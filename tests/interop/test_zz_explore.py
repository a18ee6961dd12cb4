import json, asyncio
from server import worker, communiques
from server.models import Follower, InboxActivity
from tests.helpers import approved_assembly, count, post

async def test_explore(ctx, server, fedify):
    await approved_assembly(ctx, "libertyplaza")
    r = await fedify.follow(f"libertyplaza@{ctx.urls.host}")
    print("worker", await worker.run_once(ctx))
    await fedify.wait_for_activity("Accept")
    await fedify.post("reset")
    pub = await post(ctx, "libertyplaza", "¡Hola, asambleas! #InterOcc", language="es")
    print("worker", await worker.run_once(ctx))
    c = await fedify.wait_for_activity("Create")
    print(json.dumps(c, indent=1))
    async with ctx.sessions() as session, session.begin():
        await communiques.edit(session, ctx.urls, url=pub.url, source="Enmienda. #InterOcc", now=ctx.clock())
    print("worker", await worker.run_once(ctx))
    u = await fedify.wait_for_activity("Update")
    print(json.dumps(u["json"], indent=1), u["verified"], u["verification"])
    r = await fedify.call("POST", "reply", {"inReplyTo": pub.url, "content": "<p>Re</p>"}, ok=False)
    print("REPLY", r.status_code, r.text[:5000])
    async with ctx.sessions() as session:
        from sqlalchemy import select
        for row in (await session.scalars(select(InboxActivity))).all():
            print(row.type, json.dumps(row.document)[:3000])
    for scheme in ["draft-cavage", "rfc9421"]:
        r = await fedify.call("POST", "send", {"inbox": ctx.urls.shared_inbox(), "scheme": scheme, "activity": {"type": "Follow", "object": ctx.urls.actor("libertyplaza")}}, ok=False)
        print("SEND", scheme, r.status_code, r.text)
    async with ctx.sessions() as session, session.begin():
        await communiques.delete(session, ctx.urls, url=pub.url, now=ctx.clock())
    print("worker", await worker.run_once(ctx))
    d = await fedify.wait_for_activity("Delete")
    print(json.dumps(d, indent=1)[:3000])
    print(json.dumps((await fedify.inbox())["errors"]))
