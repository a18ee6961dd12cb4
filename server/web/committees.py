"""Committees of correspondence, for an assembly's facilitators: whom it follows, what they
post (the timeline), letters to and from other assemblies, and co-signing.

Every page needs a member of the assembly. Remote lookups (WebFinger, actor and Note
fetches) run before the write transaction, never inside it.
"""

from __future__ import annotations

from urllib.parse import quote

from sqlalchemy import func, select
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import cosign, following, letters, timeline
from server.context import Context
from server.errors import Conflict, InterOccError, NotFound
from server.models import Communique, Following, User
from server.web.pages import render
from server.web.session import FormState, read_form, redirect, require_member, require_user
from server.web.session import text as form_text


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _handle(request: Request) -> str:
    return str(request.path_params["handle"])


async def _member_post(request: Request) -> tuple[User, Context, FormData, str]:
    """A POST by a member of the assembly in the path: who, the context, the form
    (CSRF-checked) and the handle. Anyone else is refused before anything is read."""
    user = await require_user(request)
    ctx = _ctx(request)
    handle = _handle(request)
    async with ctx.sessions() as session:
        await require_member(session, user, handle)
    return user, ctx, await read_form(request), handle


async def timeline_page(request: Request) -> Response:
    user = await require_user(request)
    ctx = _ctx(request)
    before = request.query_params.get("before", "")
    async with ctx.sessions() as session:
        assembly, _ = await require_member(session, user, _handle(request))
        items = await timeline.entries(
            session, assembly.id, before=int(before) if before.isdigit() else None
        )
    return await render(
        request, "timeline.html", assembly=assembly, items=items, form=FormState(), tab="timeline"
    )


async def cosign_post(request: Request) -> Response:
    user, ctx, form, handle = await _member_post(request)
    url = form_text(form, "url", max_length=2048).strip()
    state = FormState(values={"url": url})
    try:
        target = await cosign.find_target(ctx, url)
        async with ctx.sessions() as session, session.begin():
            await cosign.cosign(session, ctx, handle=handle, target=target, now=ctx.clock())
    except InterOccError as exc:
        async with ctx.sessions() as session:
            assembly, _ = await require_member(session, user, handle)
            items = await timeline.entries(session, assembly.id)
        return await render(
            request,
            "timeline.html",
            status=exc.status if exc.status < 500 else 400,
            assembly=assembly,
            items=items,
            form=state.fail(exc, "url"),
            tab="timeline",
        )
    return redirect(
        request, f"/manage/{handle}/timeline", flash="Co-signed: announced to your followers."
    )


async def _following_page(request: Request, form: FormState, status: int = 200) -> Response:
    user = await require_user(request)
    async with _ctx(request).sessions() as session:
        assembly, _ = await require_member(session, user, _handle(request))
        rows: list[Following] = list(await following.following_of(session, assembly.id))
    return await render(
        request,
        "following.html",
        status=status,
        assembly=assembly,
        rows=rows,
        form=form,
        tab="following",
    )


async def following_page(request: Request) -> Response:
    return await _following_page(request, FormState())


async def follow_post(request: Request) -> Response:
    _user, ctx, form, handle = await _member_post(request)
    target = form_text(form, "target", max_length=2048).strip()
    state = FormState(values={"target": target})
    try:
        await following.prefetch(ctx, target)
        async with ctx.sessions() as session, session.begin():
            await following.follow(session, ctx, handle=handle, target=target, now=ctx.clock())
    except InterOccError as exc:
        return await _following_page(
            request, state.fail(exc, "target"), exc.status if exc.status < 500 else 400
        )
    return redirect(
        request, f"/manage/{handle}/following", flash="Follow request sent: waiting for an answer."
    )


async def unfollow_post(request: Request) -> Response:
    user = await require_user(request)
    ctx = _ctx(request)
    await read_form(request)
    handle = _handle(request)
    async with ctx.sessions() as session, session.begin():
        assembly, _ = await require_member(session, user, handle)
        row = await session.get(Following, int(request.path_params["id"]))
        if row is None or row.assembly_id != assembly.id:
            return redirect(request, f"/manage/{handle}/following", flash="Already gone.")
        await following.unfollow(
            session, ctx, handle=handle, target=row.target_uri, now=ctx.clock()
        )
    return redirect(request, f"/manage/{handle}/following", flash="Unfollowed.")


async def letters_page(request: Request) -> Response:
    user = await require_user(request)
    async with _ctx(request).sessions() as session:
        assembly, _ = await require_member(session, user, _handle(request))
        found = await letters.threads(session, assembly)
    return await render(request, "letters.html", assembly=assembly, threads=found, tab="letters")


async def _compose_page(request: Request, form: FormState, status: int = 200) -> Response:
    user = await require_user(request)
    async with _ctx(request).sessions() as session:
        assembly, _ = await require_member(session, user, _handle(request))
    return await render(
        request, "letter_new.html", status=status, assembly=assembly, form=form, tab="letters"
    )


async def letter_new_page(request: Request) -> Response:
    to = request.query_params.get("to", "")[:2048]
    return await _compose_page(request, FormState(values={"recipients": to}))


def _recipients(raw: str) -> list[str]:
    return [part for part in raw.replace(",", " ").split() if part]


async def letter_send(request: Request) -> Response:
    _user, ctx, form, handle = await _member_post(request)
    values = {
        "recipients": form_text(form, "recipients", max_length=5000),
        "content": form_text(form, "content", max_length=letters.MAX_SOURCE + 1),
    }
    try:
        for target in _recipients(values["recipients"])[: letters.MAX_RECIPIENTS]:
            await following.prefetch(ctx, target)
        async with ctx.sessions() as session, session.begin():
            letter = await letters.write(
                session,
                ctx,
                handle=handle,
                recipients=_recipients(values["recipients"]),
                source=values["content"],
                now=ctx.clock(),
            )
    except InterOccError as exc:
        return await _compose_page(
            request,
            FormState(values=values).fail(exc, "content"),
            exc.status if exc.status < 500 else 400,
        )
    return redirect(
        request,
        f"/manage/{handle}/letters/thread?uri={quote(letter.thread, safe='')}",
        flash="Letter sent.",
    )


async def _thread_page(request: Request, form: FormState, status: int = 200) -> Response:
    user = await require_user(request)
    ctx = _ctx(request)
    uri = request.query_params.get("uri", "")[:2048]
    async with ctx.sessions() as session, session.begin():
        assembly, _ = await require_member(session, user, _handle(request))
        found = await letters.thread(session, assembly, uri, now=ctx.clock())
    if not found:
        raise NotFound("no such thread in this assembly's correspondence")
    return await render(
        request,
        "letter_thread.html",
        status=status,
        assembly=assembly,
        letters=found,
        thread_uri=uri,
        form=form,
        tab="letters",
    )


async def thread_page(request: Request) -> Response:
    return await _thread_page(request, FormState())


async def thread_reply(request: Request) -> Response:
    _user, ctx, form, handle = await _member_post(request)
    content = form_text(form, "content", max_length=letters.MAX_SOURCE + 1)
    parent = form_text(form, "in_reply_to", max_length=2048)
    # The thread's correspondents, refreshed if need be before the write transaction.
    for target in await letters.correspondents(ctx, handle, parent):
        await following.prefetch(ctx, target)
    try:
        async with ctx.sessions() as session, session.begin():
            letter = await letters.write(
                session,
                ctx,
                handle=handle,
                recipients=[],
                source=content,
                in_reply_to=parent,
                now=ctx.clock(),
            )
    except InterOccError as exc:
        return await _thread_page(
            request,
            FormState(values={"content": content}).fail(exc, "content"),
            exc.status if exc.status < 500 else 400,
        )
    return redirect(
        request,
        f"/manage/{handle}/letters/thread?uri={quote(letter.thread, safe='')}",
        flash="Answer sent.",
    )


MAX_PINNED = 5


async def pin_post(request: Request) -> Response:
    """Pin or unpin a communiqué: pinned ones form the assembly's featured collection,
    which Mastodon shows at the top of the assembly's profile."""
    user = await require_user(request)
    ctx = _ctx(request)
    await read_form(request)
    handle = _handle(request)
    async with ctx.sessions() as session, session.begin():
        assembly, _ = await require_member(session, user, handle)
        item = (
            await session.scalars(
                select(Communique).where(
                    Communique.assembly_id == assembly.id,
                    Communique.public_id == request.path_params["public_id"],
                    Communique.deleted_at.is_(None),
                )
            )
        ).first()
        if item is None:
            raise NotFound("no such communiqué")
        if item.pinned_at is not None:
            item.pinned_at = None
            message = "Unpinned."
        else:
            pinned = await session.scalar(
                select(func.count(Communique.id)).where(
                    Communique.assembly_id == assembly.id, Communique.pinned_at.is_not(None)
                )
            )
            if (pinned or 0) >= MAX_PINNED:
                raise Conflict(f"at most {MAX_PINNED} communiqués are pinned: unpin one first")
            item.pinned_at = ctx.clock()
            message = "Pinned to the top of the assembly's profile."
    return redirect(request, f"/manage/{handle}", flash=message)


routes = [
    Route("/manage/{handle}/communiques/{public_id}/pin", pin_post, methods=["POST"]),
    Route("/manage/{handle}/timeline", timeline_page),
    Route("/manage/{handle}/cosign", cosign_post, methods=["POST"]),
    Route("/manage/{handle}/following", following_page),
    Route("/manage/{handle}/following", follow_post, methods=["POST"]),
    Route("/manage/{handle}/following/{id:int}/unfollow", unfollow_post, methods=["POST"]),
    Route("/manage/{handle}/letters", letters_page),
    Route("/manage/{handle}/letters/new", letter_new_page),
    Route("/manage/{handle}/letters/new", letter_send, methods=["POST"]),
    Route("/manage/{handle}/letters/thread", thread_page),
    Route("/manage/{handle}/letters/thread", thread_reply, methods=["POST"]),
]
