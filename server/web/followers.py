"""An assembly's followers, for its facilitators: who follows, who asks to, and the answers.

Approve sends Accept{Follow}; reject sends Reject{Follow} and forgets the request; remove
sends Reject{Follow} for an accepted follower (how Mastodon removes a follower) and deletes
it: the policy is server.followers', which also wakes the delivery worker once the answer is
committed. Only members of the assembly may see or change any of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import followers
from server.context import Context
from server.errors import BadRequest, Conflict
from server.models import FollowerStatus
from server.web.pages import render
from server.web.session import FormState, read_form, redirect, require_member, require_user

PAGE_SIZE = 100

Change = Callable[..., Awaitable[followers.FollowerEntry]]


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 1 <= int(raw) <= 100_000 else 1


async def followers_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    user = await require_user(request)
    page = _page_number(request)
    async with _ctx(request).sessions() as session:
        assembly, membership = await require_member(session, user, request.path_params["handle"])
        requests = await followers.list_followers(
            session, assembly.id, status=FollowerStatus.PENDING, limit=500
        )
        held = await followers.count_followers(
            session, assembly.id, status=FollowerStatus.PENDING, held_for_admin=True
        )
        total = await followers.count_followers(
            session, assembly.id, status=FollowerStatus.ACCEPTED, held_for_admin=False
        )
        accepted = await followers.list_followers(
            session,
            assembly.id,
            status=FollowerStatus.ACCEPTED,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    return await render(
        request,
        "followers.html",
        status=status,
        form=form,
        assembly=assembly,
        membership=membership,
        requests=requests,
        held=held,
        followers=accepted,
        total=total,
        page=page,
        has_next=page * PAGE_SIZE < total,
    )


def _follower_action(change: Change, message: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        user = await require_user(request)
        await read_form(request)
        ctx = _ctx(request)
        handle = request.path_params["handle"]
        follower_id = int(request.path_params["follower_id"])
        try:
            async with ctx.sessions() as session, session.begin():
                assembly, _ = await require_member(session, user, handle)
                entry = await change(
                    session, ctx, assembly=assembly, follower_id=follower_id, now=ctx.clock()
                )
        except (BadRequest, Conflict) as exc:
            return await followers_page(request, FormState().fail(exc), exc.status)
        back = f"/manage/{assembly.handle}/followers"
        return redirect(request, back, flash=message.format(who=entry.handle))

    return endpoint


routes = [
    Route("/manage/{handle}/followers", followers_page),
    Route(
        "/manage/{handle}/followers/{follower_id:int}/approve",
        _follower_action(followers.approve_follower, "{who} now follows the assembly."),
        methods=["POST"],
    ),
    Route(
        "/manage/{handle}/followers/{follower_id:int}/reject",
        _follower_action(followers.reject_follower, "{who}'s follow request is rejected."),
        methods=["POST"],
    ),
    Route(
        "/manage/{handle}/followers/{follower_id:int}/remove",
        _follower_action(followers.remove_follower, "{who} no longer follows the assembly."),
        methods=["POST"],
    ),
]
