"""Accounts in the browser: sign up, log in and out, the dashboard, requesting an assembly,
its settings, its facilitators and invitations; a person's own account (/account: password,
address, sessions, deletion, export), password reset and address confirmation by mail.

Routes stay thin: read the form, check who asks, call the domain (server.accounts,
server.assemblies, server.memberships, server.media) in one transaction, render. A page is
rendered only after the transaction is over: with SQLite every transaction holds the write
lock, and the render helper opens its own session.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import (
    accounts,
    archive,
    assemblies,
    exports,
    instance,
    mail,
    media,
    memberships,
    moving,
)
from server.activitypub.vocab import build_assembly_actor
from server.context import Context
from server.errors import BadRequest, Conflict, Forbidden, InterOccError, NotFound
from server.instance import RegistrationMode
from server.memberships import Member
from server.models import (
    Assembly,
    Invitation,
    Media,
    MediaPurpose,
    MemberRole,
    User,
    UserStatus,
)
from server.web.pages import render
from server.web.security import CSRF_MAX_AGE
from server.web.session import (
    FormState,
    clear_cookie,
    current_user,
    new_csrf_cookie,
    read_form,
    redirect,
    require_assembly_admin,
    require_member,
    require_user,
    safe_next,
    session_token,
    set_cookie,
    text,
    uploads,
)
from server.web.session import (
    checkbox as form_checkbox,
)

# A password longer than this is refused by accounts.check_password, not silently cut.
PASSWORD_FIELD_MAX = accounts.MAX_PASSWORD + 1
IMAGES = (("avatar", MediaPurpose.AVATAR), ("header", MediaPurpose.HEADER))
_T = TypeVar("_T")


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _private(response: Response) -> Response:
    """Pages with a secret in them (an invitation link) stay out of every cache."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _rotate_csrf(response: Response, ctx: Context) -> None:
    # A new CSRF cookie whenever who is signed in changes: a token planted or read before
    # the login is worth nothing after it.
    set_cookie(response, ctx.settings, "csrf", new_csrf_cookie(), max_age=CSRF_MAX_AGE)


def _signed_in(response: Response, ctx: Context, token: str) -> Response:
    lifetime = int(ctx.settings.session_lifetime.total_seconds())
    set_cookie(response, ctx.settings, "session", token, max_age=lifetime)
    _rotate_csrf(response, ctx)
    return response


def _closing(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Close the request's form after ``handler``: Starlette leaves uploaded files' spooled
    temporary files open otherwise (even when the CSRF check refused the form)."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        finally:
            await request.close()

    return wrapped


def _client(request: Request) -> str:
    # uvicorn puts the proxy's X-Forwarded-For here when the proxy is trusted. Only the
    # login limiter reads it, and it stores a keyed hash: no address is logged or kept.
    return request.client.host if request.client else "unknown"


# -- sign up, log in, log out -------------------------------------------------------------


async def _registration_mode(ctx: Context) -> RegistrationMode:
    async with ctx.sessions() as session:
        return (await instance.load(session, ctx.settings)).registration_mode


async def signup(request: Request) -> Response:
    ctx = _ctx(request)
    mode = await _registration_mode(ctx)
    if mode == RegistrationMode.CLOSED:
        # Nothing is read, nothing is stored.
        return await render(request, "signup.html", status=403, mode=mode.value, closed=True)
    nxt = safe_next(request.query_params.get("next"))
    mail_on = ctx.settings.mail_enabled
    if request.method == "GET":
        if await current_user(request) is not None:
            return redirect(request, nxt)
        state = FormState(values={"next": nxt})
        return await render(request, "signup.html", mode=mode.value, form=state, mail_on=mail_on)

    form = await read_form(request)
    email = text(form, "email", max_length=1000)
    password = text(form, "password", max_length=PASSWORD_FIELD_MAX)
    nxt = safe_next(text(form, "next", max_length=2000))
    state = FormState(values={"email": email.strip(), "next": nxt})
    token: str | None = None
    try:
        async with ctx.sessions() as session, session.begin():
            user = await accounts.create_user(
                session,
                email=email,
                password=password,
                status=UserStatus.ACTIVE if mode == RegistrationMode.OPEN else UserStatus.PENDING,
            )
            await mail.confirm_address(
                session, ctx.settings, user=user, email=user.email, now=ctx.clock()
            )
            if user.status == UserStatus.ACTIVE:
                if previous := session_token(request):
                    await accounts.end_session(session, previous)
                token = await accounts.start_session(
                    session, user, now=ctx.clock(), lifetime=ctx.settings.session_lifetime
                )
    except InterOccError as exc:
        state.fail(exc, "email")
        return await render(
            request,
            "signup.html",
            status=exc.status,
            mode=mode.value,
            form=state,
            mail_on=mail_on,
        )
    except IntegrityError:  # the same address signed up a moment ago
        state.fail(Conflict("an account with this e-mail address already exists", field="email"))
        return await render(
            request, "signup.html", status=409, mode=mode.value, form=state, mail_on=mail_on
        )
    if token is None:
        return await render(
            request, "signup.html", mode=mode.value, waiting=True, mail_on=mail_on, email=email
        )
    flash = "Welcome! Your account is ready."
    if mail_on:
        flash += f" A link to confirm your address is on its way to {email.strip().lower()}."
    response = redirect(request, nxt, flash=flash)
    return _signed_in(response, ctx, token)


async def login(request: Request) -> Response:
    ctx = _ctx(request)
    if request.method == "GET":
        nxt = safe_next(request.query_params.get("next"))
        if await current_user(request) is not None:
            return redirect(request, nxt)
        return await render(
            request,
            "login.html",
            form=FormState(values={"next": nxt}),
            mail_on=ctx.settings.mail_enabled,
        )

    form = await read_form(request)
    email = text(form, "email", max_length=1000)
    password = text(form, "password", max_length=PASSWORD_FIELD_MAX)
    nxt = safe_next(text(form, "next", max_length=2000))
    previous = session_token(request)
    token: str | None = None
    # Committed whether or not the login succeeds: failures are the rate limiter's memory.
    async with ctx.sessions() as session, session.begin():
        result = await accounts.authenticate(
            session,
            email=email,
            password=password,
            client=_client(request),
            secret=ctx.settings.secret_key,
            now=ctx.clock(),
        )
        if result.user is not None:
            if previous:
                await accounts.end_session(session, previous)
            token = await accounts.start_session(
                session, result.user, now=ctx.clock(), lifetime=ctx.settings.session_lifetime
            )
    if token is None:
        state = FormState(values={"email": email.strip(), "next": nxt})
        state.errors["_form"] = result.error or "wrong e-mail address or password"
        return await render(
            request,
            "login.html",
            status=429 if result.limited else 400,
            form=state,
            mail_on=ctx.settings.mail_enabled,
        )
    return _signed_in(redirect(request, nxt), ctx, token)


async def logout(request: Request) -> Response:
    ctx = _ctx(request)
    form = await read_form(request)
    nxt = text(form, "next", max_length=2000)
    token = session_token(request)
    if token:
        async with ctx.sessions() as session, session.begin():
            await accounts.end_session(session, token)
    response = redirect(request, safe_next(nxt) if nxt else "/", flash="You are logged out.")
    clear_cookie(response, ctx.settings, "session")
    _rotate_csrf(response, ctx)
    return response


# -- dashboard ----------------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    ctx = _ctx(request)
    user = await require_user(request)
    async with ctx.sessions() as session:
        mine = await memberships.facilitating(session, user.id)
        invited = await memberships.invitations_for(session, user)
    if not _may_claim_invitations(ctx, user):
        invited = []
    return await render(request, "dashboard.html", facilitating=mine, invitations=invited)


def _may_claim_invitations(ctx: Context, user: User) -> bool:
    """Whether invitations to the account's address are listed on its dashboard, to be
    accepted without their link. With mail on, only once the address is confirmed (until
    then it may be someone else's: they get the link by mail); without mail, as always,
    only invitations made after the account (memberships.invitations_for)."""
    return not ctx.settings.mail_enabled or user.email_confirmed_at is not None


async def accept_from_dashboard(request: Request) -> Response:
    ctx = _ctx(request)
    user = await require_user(request)
    await read_form(request)
    if not _may_claim_invitations(ctx, user):
        raise Forbidden("confirm your e-mail address first, or open the link of the invitation")
    async with ctx.sessions() as session, session.begin():
        joined = await memberships.accept_by_id(
            session,
            invitation_id=request.path_params["invitation_id"],
            user=user,
            now=ctx.clock(),
        )
    return redirect(request, "/dashboard", flash=_joined_message(joined))


def _joined_message(joined: memberships.Facilitating) -> str:
    role = "an admin" if joined.role == MemberRole.ADMIN else "a facilitator"
    return f"You are now {role} of {joined.assembly.name}."


# -- images -------------------------------------------------------------------------------


@dataclass
class _Files:
    """Files written during a transaction: removed if it fails, the replaced ones after
    it commits."""

    stored: list[Media] = field(default_factory=list)
    replaced: list[Media] = field(default_factory=list)


async def _store_images(
    session: AsyncSession,
    ctx: Context,
    form: FormData,
    *,
    assembly: Assembly,
    user: User,
    files: _Files,
) -> bool:
    """Store the avatar and header chosen in ``form``; True if there was any."""
    changed = False
    for name, purpose in IMAGES:
        for upload in uploads(form, name)[:1]:
            change = await assemblies.set_image(
                session,
                ctx.settings,
                ctx.urls,
                assembly=assembly,
                upload=upload,
                purpose=purpose,
                user=user,
                field=name,
                now=ctx.clock(),
            )
            files.stored.append(change.media)
            files.replaced += change.replaced
            changed = True
    return changed


def _profile_values(form: FormData) -> dict[str, Any]:
    return {
        "name": text(form, "name", max_length=1000),
        "summary": text(form, "summary", max_length=assemblies.MAX_SUMMARY + 1),
        "place": text(form, "place", max_length=1000),
        "languages": text(form, "languages", max_length=1000),
        "manually_approves_followers": form_checkbox(form, "manually_approves_followers"),
    }


# -- requesting an assembly ---------------------------------------------------------------


async def request_assembly(request: Request) -> Response:
    ctx = _ctx(request)
    user = await require_user(request)
    if request.method == "GET":
        return await render(request, "assembly_request.html", form=FormState())

    form = await read_form(request, files=True)
    values = {"handle": text(form, "handle", max_length=100), **_profile_values(form)}
    state = FormState(values=values)
    files = _Files()
    try:
        async with ctx.sessions() as session, session.begin():
            assembly = await assemblies.create(
                session,
                handle=values["handle"],
                name=values["name"],
                summary=values["summary"],
                place=values["place"],
                languages=values["languages"],
                manually_approves_followers=values["manually_approves_followers"],
                requested_by_id=user.id,
            )
            await _store_images(session, ctx, form, assembly=assembly, user=user, files=files)
    except InterOccError as exc:
        media.remove_files(ctx.settings, files.stored)
        state.fail(exc)
        return await render(request, "assembly_request.html", status=exc.status, form=state)
    except IntegrityError:  # the same handle requested a moment ago
        media.remove_files(ctx.settings, files.stored)
        state.errors["handle"] = "an assembly with this handle already exists"
        return await render(request, "assembly_request.html", status=409, form=state)
    except BaseException:
        media.remove_files(ctx.settings, files.stored)
        raise
    return redirect(
        request,
        "/dashboard",
        flash=f"Your request for @{assembly.handle} is sent. An administrator of this "
        "instance must approve it before it can publish.",
    )


# -- assembly settings --------------------------------------------------------------------


def _settings_values(assembly: Assembly) -> dict[str, Any]:
    return {
        "name": assembly.name,
        "summary": assembly.summary,
        "place": assembly.place,
        "languages": ", ".join(assembly.languages or []),
        "manually_approves_followers": assembly.manually_approves_followers,
        "publish_social_graph": assembly.publish_social_graph,
    }


async def settings_page(
    request: Request,
    user: User,
    handle: str,
    *,
    status: int = 200,
    form: FormState | None = None,
    alias_form: FormState | None = None,
    move_form: FormState | None = None,
    export_form: FormState | None = None,
    schedule_form: FormState | None = None,
    assembly: Assembly | None = None,
) -> Response:
    """The settings page of an assembly, for its admins and the instance's administrators
    (who may give it other identities, move it and export it, not edit its profile unless
    they are among its admins). ``assembly`` is the copy to show when the caller has one
    that a rolled-back transaction left as the person typed it."""
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        current, membership = await require_assembly_admin(session, user, handle)
        schedule = await exports.info(session, assembly=current, now=ctx.clock())
    kept = await asyncio.to_thread(exports.kept, ctx.settings, current.handle)
    shown = assembly or current
    keep = str(schedule.keep if schedule else 3)
    response = await render(
        request,
        "assembly_settings.html",
        status=status,
        assembly=shown,
        member=membership is not None,
        edits_profile=membership is not None and membership.role == MemberRole.ADMIN,
        form=form or FormState(values=_settings_values(shown)),
        alias_form=alias_form or FormState(),
        move_form=move_form or FormState(),
        max_aliases=moving.MAX_ALIASES,
        export_form=export_form or FormState(),
        schedule_form=schedule_form or FormState(values={"keep": keep}),
        schedule=schedule,
        kept=kept,
        keep_options=[(str(n), str(n)) for n in range(exports.MIN_KEEP, exports.MAX_KEEP + 1)],
        min_passphrase=archive.MIN_PASSPHRASE,
        export_hours=int(ctx.settings.export_interval.total_seconds() // 3600),
    )
    return _private(response)


async def assembly_settings(request: Request) -> Response:
    ctx = _ctx(request)
    user = await require_user(request)
    handle = request.path_params["handle"]
    if request.method == "GET":
        return await settings_page(request, user, handle)

    # Who may change it is checked before the (possibly large) body is read, and again in
    # the transaction below.
    async with ctx.sessions() as session:
        assembly, _ = await require_member(session, user, handle, admin=True)
    form = await read_form(request, files=True)
    values = _profile_values(form)
    publish = form_checkbox(form, "publish_social_graph")
    state = FormState(values={**values, "publish_social_graph": publish})
    files = _Files()
    changed = sent = listing_changed = False
    try:
        async with ctx.sessions() as session, session.begin():
            # Its own name: on failure the rollback expires it, the page shows `assembly`.
            target, _ = await require_member(session, user, handle, admin=True)
            target, changed = await assemblies.update_profile(
                session, handle=target.handle, **values
            )
            listing_changed = await assemblies.set_publish_social_graph(
                session, handle=target.handle, publish=publish
            )
            if await _store_images(session, ctx, form, assembly=target, user=user, files=files):
                changed = True
            if changed:
                announced = await assemblies.announce_profile(
                    session,
                    ctx.urls,
                    assembly=target,
                    actor_document=build_assembly_actor(ctx.urls, target),
                    now=ctx.clock(),
                    wake=ctx.wake,
                )
                sent = announced is not None
    except InterOccError as exc:
        media.remove_files(ctx.settings, files.stored)
        if isinstance(exc, Forbidden | NotFound):
            raise
        state.fail(exc)
        return await settings_page(
            request, user, handle, status=exc.status, form=state, assembly=assembly
        )
    except BaseException:
        media.remove_files(ctx.settings, files.stored)
        raise
    media.remove_files(ctx.settings, files.replaced)
    if sent:
        flash = "Saved. Followers' servers are sent the new profile."
    elif changed or listing_changed:
        flash = "Saved."
    else:
        flash = "Nothing to change."
    return redirect(request, f"/manage/{quote(assembly.handle)}/settings", flash=flash)


# -- facilitators -------------------------------------------------------------------------


async def _facilitators_page(
    request: Request,
    user: User,
    handle: str,
    *,
    form: FormState | None = None,
    link: str | None = None,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        assembly, me = await require_member(session, user, handle)
        listed = await memberships.members(session, assembly.id)
        is_admin = me.role == MemberRole.ADMIN
        invited = await memberships.pending_invitations(session, assembly.id) if is_admin else []
    response = await render(
        request,
        "facilitators.html",
        status=status,
        assembly=assembly,
        me=me,
        is_admin=is_admin,
        members=listed,
        invitations=invited,
        form=form or FormState(values={"role": MemberRole.FACILITATOR.value}),
        link=link,
        problem=problem,
        # With mail on, invitations go by mail (facilitators.html may say so instead of
        # "you get a link to pass on").
        mail_on=ctx.settings.mail_enabled,
    )
    return _private(response) if link else response


async def facilitators(request: Request) -> Response:
    ctx = _ctx(request)
    user = await require_user(request)
    handle = request.path_params["handle"]
    if request.method == "GET":
        return await _facilitators_page(request, user, handle)

    form = await read_form(request)
    email = text(form, "email", max_length=1000)
    role = text(form, "role", max_length=50)
    state = FormState(values={"email": email.strip(), "role": role})
    try:
        async with ctx.sessions() as session, session.begin():
            assembly, _ = await require_member(session, user, handle, admin=True)
            invited = await memberships.invite(
                session, assembly=assembly, email=email, role=role, invited_by=user, now=ctx.clock()
            )
            # With mail on, the invitation goes by mail (with a link of its own, minted when
            # it is sent) and this one is shown to nobody.
            mailed = await mail.invitation(
                session, ctx.settings, invitation=invited.invitation, now=ctx.clock()
            )
    except (Forbidden, NotFound):
        raise
    except InterOccError as exc:
        return await _facilitators_page(
            request, user, handle, form=state.fail(exc, "email"), status=exc.status
        )
    if mailed:
        return _back_to_list(
            request, f"An invitation is on its way to {invited.invitation.email} by e-mail."
        )
    link = f"{ctx.urls.base}/invitations/{invited.token}"
    # The form starts afresh; the page names whom the link is for.
    state = FormState(values={"role": role, "invited": invited.invitation.email})
    return await _facilitators_page(request, user, handle, form=state, link=link)


async def _member_action(
    request: Request, action: Callable[[AsyncSession, Assembly, FormData], Awaitable[_T]]
) -> _T | Response:
    """A change to the facilitator list by one of the assembly's admins: the action's
    result, or the list again with the reason it was refused."""
    ctx = _ctx(request)
    user = await require_user(request)
    handle = request.path_params["handle"]
    form = await read_form(request)
    try:
        async with ctx.sessions() as session, session.begin():
            assembly, _ = await require_member(session, user, handle, admin=True)
            return await action(session, assembly, form)
    except Conflict as exc:
        return await _facilitators_page(
            request, user, handle, problem=exc.message, status=exc.status
        )


def _back_to_list(request: Request, flash: str) -> Response:
    return redirect(
        request, f"/manage/{quote(request.path_params['handle'])}/facilitators", flash=flash
    )


async def remove_member(request: Request) -> Response:
    membership_id: int = request.path_params["membership_id"]

    async def action(session: AsyncSession, assembly: Assembly, form: FormData) -> Member:
        return await memberships.remove(
            session, assembly_id=assembly.id, membership_id=membership_id
        )

    result = await _member_action(request, action)
    if isinstance(result, Response):
        return result
    user = await require_user(request)
    if result.user_id == user.id:
        # Not a member any more: the list is not theirs to see.
        return redirect(request, "/dashboard", flash="You no longer facilitate this assembly.")
    return _back_to_list(request, f"{result.email} was removed.")


async def change_role(request: Request) -> Response:
    membership_id: int = request.path_params["membership_id"]

    async def action(session: AsyncSession, assembly: Assembly, form: FormData) -> Member:
        return await memberships.set_role(
            session,
            assembly_id=assembly.id,
            membership_id=membership_id,
            role=text(form, "role", max_length=50),
        )

    result = await _member_action(request, action)
    if isinstance(result, Response):
        return result
    return _back_to_list(request, f"{result.email} is now {result.role.value}.")


async def withdraw_invitation(request: Request) -> Response:
    invitation_id: int = request.path_params["invitation_id"]

    async def action(session: AsyncSession, assembly: Assembly, form: FormData) -> Invitation:
        return await memberships.withdraw(
            session, assembly_id=assembly.id, invitation_id=invitation_id
        )

    result = await _member_action(request, action)
    if isinstance(result, Response):
        return result
    return _back_to_list(request, f"The invitation to {result.email} is withdrawn.")


# -- invitations --------------------------------------------------------------------------


async def invitation(request: Request) -> Response:
    ctx = _ctx(request)
    token = request.path_params["token"]
    if request.method == "GET":
        user = await current_user(request)
        async with ctx.sessions() as session:
            pending = await memberships.find_invitation(session, token)
        wrong: str | None = None
        if user is not None:
            try:
                memberships.check_addressee(pending.invitation, user)
            except Forbidden as exc:
                wrong = exc.message
        response = await render(
            request,
            "invitation.html",
            status=403 if wrong else 200,
            invitation=pending.invitation,
            assembly=pending.assembly,
            wrong_account=wrong,
            here=request.url.path,
        )
        return _private(response)

    user = await require_user(request)
    await read_form(request)
    async with ctx.sessions() as session, session.begin():
        joined = await memberships.accept(session, token=token, user=user, now=ctx.clock())
    return redirect(request, "/dashboard", flash=_joined_message(joined))


# -- password reset by mail ---------------------------------------------------------------


def _link_page(response: Response) -> Response:
    """A page opened from a mailed link: its token is in the URL, so no cache keeps the
    page and no Referer carries the URL anywhere."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


RESET_SENT = (
    "If an account uses this address, a link to choose a new password is on its way to it."
    " It works for one hour."
)


async def forgot_password(request: Request) -> Response:
    ctx = _ctx(request)
    mail_on = ctx.settings.mail_enabled
    if request.method == "GET" or not mail_on:
        status = 200 if request.method == "GET" else 404
        return await render(
            request, "password_forgot.html", status=status, form=FormState(), mail_on=mail_on
        )
    form = await read_form(request)
    email = text(form, "email", max_length=1000).strip()
    state = FormState(values={"email": email})
    try:
        address = accounts.normalise_email(email)
        # The same work whether or not an account has the address (the worker looks it up,
        # and sends nothing if none has): neither the answer nor its time tells.
        async with ctx.sessions() as session, session.begin():
            await accounts.spend_requests(
                session,
                secret=ctx.settings.secret_key,
                counted=accounts.reset_request_counts(email=address, client=_client(request)),
                now=ctx.clock(),
            )
            await mail.password_reset(session, ctx.settings, email=address, now=ctx.clock())
    except InterOccError as exc:
        state.fail(exc, "email")
        return await render(
            request, "password_forgot.html", status=exc.status, form=state, mail_on=mail_on
        )
    return await render(request, "password_forgot.html", sent=RESET_SENT, mail_on=mail_on)


async def _reset_page(
    request: Request, token: str, form: FormState, *, status: int = 200
) -> Response:
    """The new-password form of a reset link, or its "this link does not work" (400)."""
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        holder = await accounts.check_link_token(
            session, token, purpose=accounts.RESET, now=ctx.clock()
        )
    page = await render(
        request,
        "password_reset.html",
        status=status if holder else 400,
        invalid=holder is None,
        email=holder.user.email if holder else None,
        form=form,
    )
    return _link_page(page)


async def reset_password(request: Request) -> Response:
    ctx = _ctx(request)
    token = request.path_params["token"]
    if request.method == "GET":
        return await _reset_page(request, token, FormState())

    form = await read_form(request)
    password = text(form, "password", max_length=PASSWORD_FIELD_MAX)
    try:
        async with ctx.sessions() as session, session.begin():
            user = await accounts.reset_password(
                session, token=token, password=password, now=ctx.clock()
            )
            await mail.password_changed(session, ctx.settings, user=user, now=ctx.clock())
    except BadRequest as exc:
        if exc.field != "password":  # the link itself does not work
            page = await render(
                request, "password_reset.html", status=400, invalid=True, form=FormState()
            )
            return _link_page(page)
        return await _reset_page(request, token, FormState().fail(exc), status=exc.status)
    response = redirect(
        request,
        "/login",
        flash="Your new password is set, and every browser that was signed in to your account"
        " is signed out. Log in with the new password.",
    )
    clear_cookie(response, ctx.settings, "session")
    _rotate_csrf(response, ctx)
    return _link_page(response)


# -- address confirmation -------------------------------------------------------------------


async def confirm_email(request: Request) -> Response:
    """A confirmation link: the page asks for one click (a POST), since mail scanners open
    the links of the messages they check."""
    ctx = _ctx(request)
    token = request.path_params["token"]
    if request.method == "GET":
        async with ctx.sessions() as session:
            holder = await accounts.check_link_token(
                session, token, purpose=accounts.CONFIRM, now=ctx.clock()
            )
        page = await render(
            request,
            "email_confirm.html",
            status=200 if holder else 400,
            invalid=holder is None,
            address=holder.token.email if holder else None,
            changing=holder is not None and holder.token.email != holder.user.email,
        )
        return _link_page(page)

    await read_form(request)
    try:
        async with ctx.sessions() as session, session.begin():
            confirmed = await accounts.confirm_email(session, token=token, now=ctx.clock())
            if confirmed.replaced:
                await mail.address_changed(
                    session,
                    ctx.settings,
                    old_email=confirmed.replaced,
                    new_email=confirmed.user.email,
                    now=ctx.clock(),
                )
    except (BadRequest, Conflict) as exc:
        page = await render(
            request, "email_confirm.html", status=exc.status, invalid=True, problem=exc.message
        )
        return _link_page(page)
    user = await current_user(request)
    where = "/account" if user is not None and user.id == confirmed.user.id else "/login"
    flash = f"Your address {confirmed.user.email} is confirmed."
    if confirmed.replaced:
        flash = f"Your account's address is now {confirmed.user.email}."
    return _link_page(redirect(request, where, flash=flash))


# -- the account's own page -----------------------------------------------------------------


@dataclass
class _AccountForms:
    password: FormState = field(default_factory=FormState)
    email: FormState = field(default_factory=FormState)
    confirm: FormState = field(default_factory=FormState)
    sessions: FormState = field(default_factory=FormState)


async def _account_page(
    request: Request, user: User, *, forms: _AccountForms | None = None, status: int = 200
) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        others = await accounts.other_sessions(
            session, user=user, keep_session=session_token(request), now=ctx.clock()
        )
    response = await render(
        request,
        "account.html",
        status=status,
        forms=forms or _AccountForms(),
        other_sessions=others,
        mail_on=ctx.settings.mail_enabled,
        min_password=accounts.MIN_PASSWORD,
    )
    return _private(response)


async def account_page(request: Request) -> Response:
    return await _account_page(request, await require_user(request))


async def _check_current(
    session: AsyncSession,
    request: Request,
    user: User,
    form: FormData,
    field: str = "current_password",
) -> None:
    ctx = _ctx(request)
    await accounts.check_current_password(
        session,
        user,
        text(form, field, max_length=PASSWORD_FIELD_MAX),
        client=_client(request),
        secret=ctx.settings.secret_key,
        now=ctx.clock(),
    )


async def _account_action(
    request: Request,
    which: str,
    action: Callable[[AsyncSession, User, FormData], Awaitable[str]],
    *,
    values: Callable[[FormData], dict[str, Any]] = lambda form: {},
    current_password: str | None = "current_password",
) -> Response:
    """One change to the signed-in person's own account, in one transaction, after the
    check of their current password (whose failure is kept, for the login limiter, even
    though nothing else is): back to /account with the action's message, or the page
    again with the refusal beside the form ``which``."""
    ctx = _ctx(request)
    user = await require_user(request)
    form = await read_form(request)
    refused: InterOccError | None = None
    message = ""
    try:
        async with ctx.sessions() as session, session.begin():
            me = await session.get(User, user.id)
            assert me is not None
            try:
                if current_password:
                    await _check_current(session, request, me, form, current_password)
            except InterOccError as exc:
                refused = exc  # committed: the failed guess counts
            else:
                message = await action(session, me, form)
    except InterOccError as exc:
        refused = exc
    if refused is not None:
        forms = _AccountForms()
        state = FormState(values=values(form))
        # Each form of the page has its own name for the current password (ids are unique).
        name = current_password if refused.field == "current_password" else refused.field
        state.errors[name or "_form"] = refused.message
        setattr(forms, which, state)
        return await _account_page(request, user, forms=forms, status=refused.status)
    return redirect(request, "/account", flash=message)


async def change_password(request: Request) -> Response:
    ctx = _ctx(request)

    async def action(session: AsyncSession, me: User, form: FormData) -> str:
        signed_out = await accounts.change_password(
            session,
            user=me,
            password=text(form, "password", max_length=PASSWORD_FIELD_MAX),
            keep_session=session_token(request),
        )
        await mail.password_changed(session, ctx.settings, user=me, now=ctx.clock())
        others = f" {signed_out} other browser{'s' if signed_out != 1 else ''} signed out."
        return "Your password is changed." + (others if signed_out else "")

    return await _account_action(request, "password", action)


async def change_email(request: Request) -> Response:
    ctx = _ctx(request)
    if not ctx.settings.mail_enabled:
        raise NotFound("this instance sends no mail: ask an administrator to change your address")

    async def action(session: AsyncSession, me: User, form: FormData) -> str:
        await accounts.spend_requests(
            session,
            secret=ctx.settings.secret_key,
            counted=accounts.confirmation_counts(me),
            now=ctx.clock(),
        )
        address = await accounts.request_email_change(
            session, user=me, email=text(form, "email", max_length=1000)
        )
        await mail.confirm_address(session, ctx.settings, user=me, email=address, now=ctx.clock())
        return (
            f"A link to confirm {address} is on its way to it. Your address stays {me.email}"
            " until you open it."
        )

    def values(form: FormData) -> dict[str, Any]:
        return {"email": text(form, "email", max_length=1000).strip()}

    return await _account_action(
        request, "email", action, values=values, current_password="email_current_password"
    )


async def resend_confirmation(request: Request) -> Response:
    ctx = _ctx(request)
    if not ctx.settings.mail_enabled:
        raise NotFound("this instance sends no mail")

    async def action(session: AsyncSession, me: User, form: FormData) -> str:
        address = me.pending_email or (me.email if me.email_confirmed_at is None else None)
        if address is None:
            raise Conflict("your address is confirmed already")
        await accounts.spend_requests(
            session,
            secret=ctx.settings.secret_key,
            counted=accounts.confirmation_counts(me),
            now=ctx.clock(),
        )
        await mail.confirm_address(session, ctx.settings, user=me, email=address, now=ctx.clock())
        return f"A new link to confirm {address} is on its way to it."

    return await _account_action(request, "confirm", action, current_password=None)


async def sign_out_others(request: Request) -> Response:
    async def action(session: AsyncSession, me: User, form: FormData) -> str:
        ended = await accounts.sign_out_others(
            session, user=me, keep_session=session_token(request)
        )
        if not ended:
            return "No other browser was signed in."
        return f"{ended} other browser{'s are' if ended != 1 else ' is'} signed out."

    return await _account_action(request, "sessions", action, current_password=None)


async def _delete_page(
    request: Request, user: User, *, form: FormState | None = None, status: int = 200
) -> Response:
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        blockers = await accounts.sole_admin_of(session, user)
        facilitating = await memberships.facilitating(session, user.id)
    response = await render(
        request,
        "account_delete.html",
        status=status,
        form=form or FormState(),
        blockers=blockers,
        facilitating=facilitating,
    )
    return _private(response)


async def delete_account(request: Request) -> Response:
    ctx = _ctx(request)
    user = await require_user(request)
    if request.method == "GET":
        return await _delete_page(request, user)
    form = await read_form(request)
    refused: InterOccError | None = None
    try:
        async with ctx.sessions() as session, session.begin():
            me = await session.get(User, user.id)
            assert me is not None
            try:
                await _check_current(session, request, me, form)
            except InterOccError as exc:
                refused = exc  # committed: the failed guess counts
            else:
                await accounts.delete_account(session, user=me)
    except InterOccError as exc:
        refused = exc
    if refused is not None:
        state = FormState().fail(refused)
        return await _delete_page(request, user, form=state, status=refused.status)
    response = redirect(request, "/", flash="Your account is deleted. Thank you for your work.")
    clear_cookie(response, ctx.settings, "session")
    _rotate_csrf(response, ctx)
    return response


async def export_account(request: Request) -> Response:
    """The account's own records as a JSON file (accounts.export_account says what is in
    it, and what is not)."""
    ctx = _ctx(request)
    user = await require_user(request)
    async with ctx.sessions() as session:
        data = await accounts.export_account(session, user=user, now=ctx.clock())
    body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    day = ctx.clock().strftime("%Y-%m-%d")
    return Response(
        body,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="interocc-account-{day}.json"',
            "Cache-Control": "no-store",
        },
    )


routes = [
    Route("/signup", signup, methods=["GET", "POST"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/dashboard", dashboard),
    Route(
        "/dashboard/invitations/{invitation_id:int}/accept",
        accept_from_dashboard,
        methods=["POST"],
    ),
    Route("/assemblies/new", _closing(request_assembly), methods=["GET", "POST"]),
    Route("/manage/{handle}/settings", _closing(assembly_settings), methods=["GET", "POST"]),
    Route("/manage/{handle}/facilitators", facilitators, methods=["GET", "POST"]),
    Route(
        "/manage/{handle}/facilitators/{membership_id:int}/remove",
        remove_member,
        methods=["POST"],
    ),
    Route("/manage/{handle}/facilitators/{membership_id:int}/role", change_role, methods=["POST"]),
    Route(
        "/manage/{handle}/invitations/{invitation_id:int}/withdraw",
        withdraw_invitation,
        methods=["POST"],
    ),
    Route("/invitations/{token}", invitation, methods=["GET", "POST"]),
    Route("/password/forgot", forgot_password, methods=["GET", "POST"]),
    Route("/password/reset/{token}", reset_password, methods=["GET", "POST"]),
    Route("/account/confirm/{token}", confirm_email, methods=["GET", "POST"]),
    Route("/account", account_page),
    Route("/account/password", change_password, methods=["POST"]),
    Route("/account/email", change_email, methods=["POST"]),
    Route("/account/email/confirm", resend_confirmation, methods=["POST"]),
    Route("/account/sessions", sign_out_others, methods=["POST"]),
    Route("/account/delete", delete_account, methods=["GET", "POST"]),
    Route("/account/export", export_account),
]
