import json
from server import worker
from server.models import Follower, InboxActivity
from tests.helpers import approved_assembly, count, post

async def test_explore(ctx, server, fedify):
    await approved_assembly(ctx, "libertyplaza")
    r = await fedify.call("POST", "follow", {"target": f"libertyplaza@{ctx.urls.host}"}, ok=False)
    print("FOLLOW", r.status_code, r.text[:3000])
    print("followers", await count(ctx, Follower))
    print("worker", await worker.run_once(ctx))
    import asyncio; await asyncio.sleep(1)
    inbox = await fedify.inbox()
    print(json.dumps(inbox, indent=1)[:12000])
    print(json.dumps(await fedify.state(), indent=1))
