"""Assembly archives in the browser (server/archive.py, server/exports.py): export an
assembly to an encrypted file, have the instance keep its latest archives, download them;
for the instance's administrators, import an archive and, once the imported assembly is
approved, follow again what it followed and bring its followers over (recover).

An assembly's archives are for its admins and the instance's administrators only, as its
aliases and its move are: whoever else asks is refused before the form is read. A
passphrase is read from the form and never shown again or stored: a schedule keeps the key
derived from it. Exports, imports and key derivations are heavy (scrypt takes 128 MiB and
half a second; an archive is held in memory whole): they run in threads, one at a time per
web process.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from sqlalchemy.exc import IntegrityError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from server import archive, assemblies, exports, following, media, moving
from server.context import Context
from server.errors import BadRequest, Conflict, Forbidden, InterOccError, NotFound
from server.models import Media, User
from server.web.account import settings_page
from server.web.admin import assemblies_page
from server.web.pages import render
from server.web.session import (
    FormState,
    read_form,
    read_large_form,
    redirect,
    require_admin,
    require_assembly_admin,
    require_user,
    text,
    uploads,
)

MAX_PASSPHRASE = 1024  # refused beyond, never silently cut
# The import form: the archive (at most what any instance imports) and a few fields.
MAX_IMPORT_BYTES = archive.MAX_ARCHIVE_BYTES + 64 * 1024


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _heavy(request: Request) -> asyncio.Semaphore:
    """One export, import or key derivation at a time in this web process: each holds up to
    an archive's size (and scrypt's 128 MiB) in memory."""
    gate: asyncio.Semaphore | None = getattr(request.app.state, "archive_gate", None)
    if gate is None:
        gate = request.app.state.archive_gate = asyncio.Semaphore(1)
    return gate


def _passphrase(form: FormData, name: str, *, again: str | None = None) -> str:
    """A passphrase from ``form`` (as typed: no trimming), checked as the command line
    checks it; with ``again``, the same typed a second time."""
    value = form.get(name)
    passphrase = value if isinstance(value, str) else ""
    if len(passphrase) > MAX_PASSPHRASE:
        raise BadRequest(f"choose a passphrase of at most {MAX_PASSPHRASE} characters", field=name)
    try:
        archive.check_passphrase(passphrase)
    except BadRequest as exc:
        raise BadRequest(exc.message, field=name) from None
    if again is not None and form.get(again) != passphrase:
        raise BadRequest("the two passphrases differ: type the same one twice", field=again)
    return passphrase


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _download_name(handle: str, stamp: str) -> str:
    return f"{handle}-{stamp}.interocc"


async def _assembly_post(request: Request) -> tuple[User, Context, FormData, str]:
    """A POST by one of the assembly's admins or an instance administrator: who, the
    context, the form (CSRF-checked) and the handle. Anyone else is refused first."""
    user = await require_user(request)
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        assembly, _ = await require_assembly_admin(session, user, request.path_params["handle"])
    return user, ctx, await read_form(request), assembly.handle


def _back(request: Request, handle: str, flash: str) -> Response:
    return redirect(request, f"/manage/{quote(handle)}/settings#archives", flash=flash)


# -- export now ----------------------------------------------------------------------------


async def export(request: Request) -> Response:
    user, ctx, form, handle = await _assembly_post(request)
    state = FormState()
    now = ctx.clock()
    try:
        passphrase = _passphrase(form, "export_passphrase", again="export_passphrase_again")
        async with _heavy(request):
            async with ctx.sessions() as session, session.begin():
                # First in its transaction (it asks PostgreSQL for one snapshot), then who
                # asks is checked again in the same transaction.
                exported = await archive.export_assembly(
                    session, ctx.settings, ctx.urls, handle=handle, now=now
                )
                await require_assembly_admin(session, user, handle)
            data = await asyncio.to_thread(archive.encrypt, exported.zip_data, passphrase)
            del exported
    except (Forbidden, NotFound):
        raise
    except InterOccError as exc:
        return await settings_page(
            request,
            user,
            handle,
            status=exc.status,
            export_form=state.fail(exc),
        )
    name = _download_name(handle, now.strftime("%Y-%m-%d"))
    return _no_store(
        Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    )


# -- scheduled exports ---------------------------------------------------------------------


async def schedule(request: Request) -> Response:
    user, ctx, form, handle = await _assembly_post(request)
    keep_raw = text(form, "keep", max_length=10)
    state = FormState(values={"keep": keep_raw})
    try:
        keep = exports.check_keep(keep_raw)
        passphrase = _passphrase(form, "schedule_passphrase", again="schedule_passphrase_again")
        async with _heavy(request):
            key = await asyncio.to_thread(archive.derive_key, passphrase)
        async with ctx.sessions() as session, session.begin():
            assembly, _ = await require_assembly_admin(session, user, handle)
            await exports.schedule(
                session, assembly=assembly, keep=keep, key=key, user_id=user.id, now=ctx.clock()
            )
    except (Forbidden, NotFound):
        raise
    except InterOccError as exc:
        return await settings_page(
            request, user, handle, status=exc.status, schedule_form=state.fail(exc, "keep")
        )
    archives = "archive" if keep == 1 else f"{keep} archives"
    return _back(
        request,
        handle,
        f"Scheduled exports are on: this instance keeps the latest {archives}, made every "
        f"{_hours(ctx)}. The first is made within a few minutes.",
    )


def _hours(ctx: Context) -> str:
    hours = int(ctx.settings.export_interval.total_seconds() // 3600)
    return "hour" if hours == 1 else f"{hours} hours"


async def unschedule(request: Request) -> Response:
    user, ctx, _form, handle = await _assembly_post(request)
    async with ctx.sessions() as session, session.begin():
        assembly, _ = await require_assembly_admin(session, user, handle)
        was_on = await exports.unschedule(session, assembly=assembly)
    removed = await asyncio.to_thread(exports.remove_kept, ctx.settings, handle)
    said = "are off" if was_on else "were off"
    return _back(
        request, handle, f"Scheduled exports {said}; {removed} archive(s) kept here deleted."
    )


async def kept_archive(request: Request) -> Response:
    """A kept archive, by its name in the listing (never a path from the request)."""
    user = await require_user(request)
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        assembly, _ = await require_assembly_admin(session, user, request.path_params["handle"])
    name = str(request.path_params["name"])
    path = await asyncio.to_thread(exports.kept_file, ctx.settings, assembly.handle, name)
    stamp = name.removesuffix(exports.SUFFIX)
    return _no_store(
        FileResponse(
            path,
            media_type="application/octet-stream",
            filename=_download_name(assembly.handle, stamp),
        )
    )


# -- import (instance administrators) ------------------------------------------------------


async def import_page(
    request: Request, form: FormState | None = None, status: int = 200
) -> Response:
    await require_admin(request)
    return await render(
        request,
        "admin_import.html",
        status=status,
        form=form or FormState(),
        max_mib=archive.MAX_ARCHIVE_BYTES // (1024 * 1024),
        min_passphrase=archive.MIN_PASSPHRASE,
    )


async def import_archive(request: Request) -> Response:
    await require_admin(request)  # before the (possibly large) body is read
    ctx = _ctx(request)
    form = await read_large_form(request, limit=MAX_IMPORT_BYTES)
    state = FormState(values={"handle": text(form, "handle", max_length=100).strip()})
    stored: list[Media] = []
    try:
        handle = assemblies.normalise_handle(state.values["handle"])
        passphrase = form.get("passphrase")
        if not isinstance(passphrase, str) or not passphrase:
            raise BadRequest("type the archive's passphrase", field="passphrase")
        if len(passphrase) > MAX_PASSPHRASE:
            raise BadRequest(archive.WRONG_PASSPHRASE, field="passphrase")
        chosen = uploads(form, "archive")
        if not chosen:
            raise BadRequest("choose the archive file", field="archive")
        async with ctx.sessions() as session:
            if await assemblies.find(session, handle) is not None:
                raise Conflict(
                    f"an assembly with the handle {handle!r} already exists", field="handle"
                )
        async with _heavy(request):
            data = await chosen[0].read(archive.MAX_ARCHIVE_BYTES + 1)
            if len(data) > archive.MAX_ARCHIVE_BYTES:
                raise archive.ArchiveError(
                    f"an archive is at most {archive.MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB",
                    field="archive",
                )
            opened = await asyncio.to_thread(archive.open_archive, data, passphrase)
            del data
            async with ctx.sessions() as session, session.begin():
                imported = await archive.import_archive(
                    session,
                    ctx.settings,
                    ctx.urls,
                    archive=opened,
                    handle=handle,
                    now=ctx.clock(),
                    stored=stored,
                )
    except InterOccError as exc:
        media.remove_files(ctx.settings, stored)  # the transaction rolled back
        return await import_page(request, state.fail(exc, "archive"), exc.status)
    except IntegrityError:  # the same handle taken a moment ago
        media.remove_files(ctx.settings, stored)
        state.errors["handle"] = "an assembly with this handle already exists"
        return await import_page(request, state, 409)
    except BaseException:
        media.remove_files(ctx.settings, stored)
        raise
    finally:
        await form.close()
    c = imported.counts
    return redirect(
        request,
        "/admin/assemblies",
        flash=f"@{handle} is imported, pending: {c['communiques']} communiqués, "
        f"{c['letters']} letters, {c['following']} follows to send again, "
        f"{c['followers']} followers to recover. Approve it, then press Follow again and "
        "Recover followers.",
    )


# -- after an import: follow again, recover followers --------------------------------------


async def refollow(request: Request) -> Response:
    await require_admin(request)
    await read_form(request)
    ctx = _ctx(request)
    handle = str(request.path_params["handle"])
    try:
        async with ctx.sessions() as session:
            targets = await archive.follow_targets(session, handle=handle)
        for target in targets:  # WebFinger and actor fetches before the write transaction
            await following.prefetch(ctx, target)
        async with ctx.sessions() as session, session.begin():
            done = await archive.refollow(session, ctx, handle=handle, now=ctx.clock())
    except (BadRequest, Conflict) as exc:
        return await assemblies_page(request, FormState().fail(exc), exc.status)
    message = (
        f"@{handle}: {len(done.sent)} follow request(s) sent, {len(done.already)} already "
        f"followed, {len(done.failed)} not followed."
    )
    if done.failed:
        target, why = done.failed[0]
        message += f" First failure: {target}: {why}"
    return redirect(request, "/admin/assemblies", flash=message)


async def recover(request: Request) -> Response:
    await require_admin(request)
    await read_form(request)
    ctx = _ctx(request)
    handle = str(request.path_params["handle"])
    try:
        # It sends over the network: outside any transaction (it reads in its own session).
        done = await moving.recover(ctx, handle=handle)
    except (BadRequest, Conflict) as exc:
        return await assemblies_page(request, FormState().fail(exc), exc.status)
    message = (
        f"@{handle}: {len(done.sent)} server(s) took the Move from its old identity; "
        f"{len(done.failed)} refused it or could not be reached."
    )
    if done.failed:
        message += " Press Recover followers again later to retry them."
    return redirect(request, "/admin/assemblies", flash=message)


routes = [
    Route("/manage/{handle}/export", export, methods=["POST"]),
    Route("/manage/{handle}/export-schedule", schedule, methods=["POST"]),
    Route("/manage/{handle}/export-schedule/stop", unschedule, methods=["POST"]),
    Route("/manage/{handle}/archives/{name}", kept_archive),
    Route("/admin/import", import_page),
    Route("/admin/import", import_archive, methods=["POST"]),
    Route("/admin/assemblies/{handle}/refollow", refollow, methods=["POST"]),
    Route("/admin/assemblies/{handle}/recover", recover, methods=["POST"]),
]
