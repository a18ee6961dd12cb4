"""The assembly's management home and its composer: write, preview, publish, edit and delete
communiqués with a content warning and up to four attachments.

Every handler starts with ``require_user`` then ``require_member`` (403 for anyone not
facilitating the assembly); every POST reads the form with its CSRF check before anything
else happens.

Files and previews: a preview stores the files chosen as unattached Media rows (committed)
and the page carries them on in hidden ``kept_N`` fields, so they need not be chosen again;
publishing attaches them. Files stored for a preview and never published are swept a day
later, when the assembly next writes. A refused publish, update or preview keeps nothing of
what it stored (rows rolled back, files removed): files chosen for it must be chosen again,
and the page says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server import assemblies, communiques, media, polls, ratification
from server.activitypub import mentions
from server.context import Context
from server.errors import BadRequest, Conflict, Gone
from server.models import Assembly, AssemblyStatus, Communique, Media, MediaPurpose, User
from server.web.pages import render
from server.web.session import (
    MAX_FILES,
    FormState,
    checkbox,
    read_form,
    redirect,
    require_member,
    require_user,
    text,
    uploads,
)

PAGE_SIZE = 20
SLOTS = range(1, MAX_FILES + 1)
UNATTACHED_LIFETIME = timedelta(days=1)
ACCEPT = "image/jpeg,image/png,image/gif,image/webp,application/pdf"
# Offered in the language menu, with the assembly's own languages first.
LANGUAGES = {
    "en": "English",
    "es": "Español",
    "fr": "Français",
    "de": "Deutsch",
    "it": "Italiano",
    "pt": "Português",
    "pt-BR": "Português (Brasil)",
    "ca": "Català",
    "eu": "Euskara",
    "gl": "Galego",
    "nl": "Nederlands",
    "pl": "Polski",
    "el": "Ελληνικά",
    "tr": "Türkçe",
    "ru": "Русский",
    "uk": "Українська",
    "ar": "العربية",
    "fa": "فارسی",
    "he": "עברית",
    "hi": "हिन्दी",
    "zh": "中文",
    "ja": "日本語",
    "ko": "한국어",
}


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


# -- the form -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FileView:
    """What a page shows of a stored file (a snapshot: rows may be rolled back)."""

    public_id: str
    file_name: str
    media_type: str
    original_name: str
    size: int
    width: int | None
    height: int | None
    alt_text: str

    @classmethod
    def of(cls, m: Media, alt_text: str) -> FileView:
        return cls(
            m.public_id,
            m.file_name,
            m.media_type,
            m.original_name,
            m.size,
            m.width,
            m.height,
            alt_text,
        )


@dataclass
class Slot:
    """One of the four attachment places of the form."""

    index: int
    alt: str = ""
    kept_id: str = ""  # a file stored earlier: attached already, or kept from a preview
    remove: bool = False
    upload: UploadFile | None = None  # a file chosen in this request
    media: Media | None = None  # the row to attach, once loaded or stored
    view: FileView | None = None  # what the page shows in this place

    @property
    def attached(self) -> bool:
        return self.media is not None and not self.remove


RATIFICATION_FIELDS = (
    "decided_on",
    "decided_at",
    "process",
    "threshold_percent",
    "votes_for",
    "votes_against",
    "abstentions",
    "blocks",
    "minutes",
)


@dataclass
class Draft:
    content: str
    language: str
    summary: str
    slots: list[Slot] = field(default_factory=list)
    decision: dict[str, str] = field(default_factory=dict)  # the ratification fields
    poll_choices: str = ""
    poll_hours: str = ""

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "content": self.content,
            "language": self.language,
            "summary": self.summary,
            **self.decision,
            "poll_choices": self.poll_choices,
            "poll_hours": self.poll_hours,
        }
        for slot in self.slots:
            values[f"alt_{slot.index}"] = slot.alt
        return values

    @property
    def files(self) -> list[Media]:
        return [s.media for s in self.slots if s.media is not None and not s.remove]


def _read_draft(form: FormData) -> Draft:
    draft = Draft(
        content=text(form, "content", max_length=communiques.MAX_SOURCE + 1),
        language=text(form, "language", max_length=40).strip(),
        summary=text(form, "summary", max_length=communiques.MAX_SUMMARY * 2).strip(),
        decision={name: text(form, name, max_length=2100).strip() for name in RATIFICATION_FIELDS},
        poll_choices=text(form, "poll_choices", max_length=2000),
        poll_hours=text(form, "poll_hours", max_length=20).strip(),
    )
    for i in SLOTS:
        chosen = uploads(form, f"attachment_{i}")
        draft.slots.append(
            Slot(
                index=i,
                alt=text(form, f"alt_{i}", max_length=media.MAX_ALT_TEXT * 2).strip(),
                kept_id=text(form, f"kept_{i}", max_length=40).strip(),
                remove=checkbox(form, f"remove_{i}"),
                upload=chosen[0] if chosen else None,
            )
        )
    return draft


def _check_alts(draft: Draft) -> None:
    for slot in draft.slots:
        if len(slot.alt) > media.MAX_ALT_TEXT:
            raise BadRequest(
                f"a description is at most {media.MAX_ALT_TEXT} characters",
                field=f"alt_{slot.index}",
            )


async def _load_kept(
    session: AsyncSession, draft: Draft, assembly: Assembly, communique: Communique | None
) -> None:
    """The files the form carries over by public id, checked to be this assembly's and
    free (or attached to the communiqué being edited)."""
    for slot in draft.slots:
        if not slot.kept_id:
            continue
        slot.media = await media.find_attachable(
            session,
            assembly_id=assembly.id,
            public_id=slot.kept_id,
            communique_id=communique.id if communique is not None else None,
        )
        if slot.media is None:
            raise BadRequest(
                "this file is no longer available: choose it again",
                field=f"attachment_{slot.index}",
            )
        slot.view = FileView.of(slot.media, slot.alt)


async def _store_new(
    session: AsyncSession,
    ctx: Context,
    draft: Draft,
    assembly: Assembly,
    user: User,
    stored: list[Media],
) -> None:
    """Store the files chosen in this request, each replacing what its place held. Each
    new row is appended to ``stored`` at once, so the caller can remove the files whatever
    fails next."""
    for slot in draft.slots:
        if slot.upload is None:
            continue
        slot.media = await media.store_upload(
            session,
            ctx.settings,
            assembly=assembly,
            upload=slot.upload,
            purpose=MediaPurpose.ATTACHMENT,
            alt_text=slot.alt,
            user=user,
            field=f"attachment_{slot.index}",
            now=ctx.clock(),
        )
        stored.append(slot.media)
        slot.remove = False
        slot.view = FileView.of(slot.media, slot.alt)


def _describe(draft: Draft) -> None:
    """The descriptions typed beside the files go onto their rows (publish and update only:
    a preview changes no published file)."""
    for slot in draft.slots:
        if slot.media is not None and slot.media.alt_text != slot.alt:
            slot.media.alt_text = slot.alt


async def _resolve_mentions(ctx: Context, source: str) -> list[mentions.Mention]:
    # Its own transaction: WebFinger and actor fetches must not hold the write lock.
    try:
        async with ctx.sessions() as session, session.begin():
            return await mentions.resolve(session, ctx, source)
    except BadRequest as exc:
        raise BadRequest(exc.message, field="content") from exc


def _shown(draft: Draft, stored: Sequence[Media] = ()) -> list[Slot]:
    """The places as the page shows them again: files ``stored`` by a refused request are
    gone, and so are files marked for removal."""
    dropped = {m.public_id for m in stored}
    shown = []
    for s in draft.slots:
        view = s.view if s.view is not None and not s.remove else None
        if view is not None and view.public_id in dropped:
            view = None
        shown.append(Slot(index=s.index, alt=s.alt, view=view))
    return shown


def _default_language(assembly: Assembly) -> str:
    return assembly.languages[0] if assembly.languages else "en"


def _language_options(assembly: Assembly, current: str) -> list[tuple[str, str]]:
    codes = [*assembly.languages, *LANGUAGES]
    if current and current not in codes:
        codes.insert(0, current)
    seen: dict[str, str] = {}
    for code in codes:
        seen.setdefault(code, LANGUAGES.get(code, code))
    return list(seen.items())


async def _page(
    request: Request,
    template: str,
    *,
    assembly: Assembly,
    form: FormState,
    slots: Sequence[Slot],
    status: int = 200,
    preview: dict[str, Any] | None = None,
    files_dropped: bool = False,
    communique: Communique | None = None,
) -> Response:
    ctx = _ctx(request)
    language = str(form.values.get("language") or _default_language(assembly))
    return await render(
        request,
        template,
        status=status,
        assembly=assembly,
        form=form,
        slots=slots,
        preview=preview,
        files_dropped=files_dropped,
        communique=communique,
        languages=_language_options(assembly, language),
        language=language,
        accept=ACCEPT,
        max_upload_mb=f"{ctx.settings.max_upload_bytes / 1_000_000:g}",
        max_alt=media.MAX_ALT_TEXT,
        max_summary=communiques.MAX_SUMMARY,
    )


def _preview(request: Request, draft: Draft) -> dict[str, Any]:
    html = communiques.render_preview(draft.content, _ctx(request).urls)
    return {
        "content_html": html,
        "summary": draft.summary,
        "language": draft.language,
        "files": [s.view for s in draft.slots if s.view is not None and not s.remove],
    }


# -- pages --------------------------------------------------------------------------------


async def _member(request: Request) -> tuple[User, Assembly]:
    user = await require_user(request)
    async with _ctx(request).sessions() as session:
        assembly, _membership = await require_member(session, user, request.path_params["handle"])
    return user, assembly


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return max(1, min(int(raw), 10_000)) if raw.isdigit() else 1


async def manage(request: Request) -> Response:
    _user, assembly = await _member(request)
    page = _page_number(request)
    async with _ctx(request).sessions() as session:
        items = await communiques.recent(
            session, assembly.id, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
        )
        total = await assemblies.communique_count(session, assembly.id)
        files = await communiques.attachments_of(session, [c.id for c in items])
    base = f"/manage/{assembly.handle}"
    return await render(
        request,
        "manage.html",
        assembly=assembly,
        communiques=items,
        attachments=files,
        total=total,
        newer=f"{base}?page={page - 1}" if page > 1 else None,
        older=f"{base}?page={page + 1}" if page * PAGE_SIZE < total else None,
    )


def _not_publishing(assembly: Assembly) -> FormState:
    form = FormState(values={"language": _default_language(assembly)})
    if assembly.status != AssemblyStatus.APPROVED:
        form.errors["_form"] = (
            f"@{assembly.handle} is {assembly.status.value}: it can publish once an "
            "administrator of this instance has approved it."
        )
    elif assembly.moved_to:
        form.errors["_form"] = _moved(assembly)
    return form


def _moved(assembly: Assembly) -> str:
    when = f" on {assembly.moved_at:%d %B %Y}" if assembly.moved_at else ""
    return (
        f"@{assembly.handle} has moved to {assembly.moved_to}{when}: it no longer publishes "
        "here. Publish from its new identity."
    )


async def compose(request: Request) -> Response:
    user, assembly = await _member(request)
    if request.method == "GET":
        form = _not_publishing(assembly)
        slots = [Slot(index=i) for i in SLOTS]
        return await _page(request, "compose.html", assembly=assembly, form=form, slots=slots)
    try:
        form_data = await read_form(request, files=True)
        action = text(form_data, "action", max_length=20)
        return await _submit(request, user, assembly, _read_draft(form_data), action, None)
    finally:
        await request.close()  # the uploads' temporary files, even when the CSRF check fails


async def edit(request: Request) -> Response:
    user, assembly = await _member(request)
    ctx = _ctx(request)
    async with ctx.sessions() as session:
        _assembly, item = await communiques.get(
            session, assembly.handle, request.path_params["public_id"]
        )
        files = (await communiques.attachments_of(session, [item.id])).get(item.id, [])
    if item.deleted_at is not None:
        raise Gone("this communiqué was deleted")
    if request.method == "GET":
        form = _not_publishing(assembly)
        form.values.update(content=item.source, language=item.language, summary=item.summary or "")
        slots = [Slot(index=i) for i in SLOTS]
        for slot, m in zip(slots, files, strict=False):
            slot.alt, slot.view = m.alt_text, FileView.of(m, m.alt_text)
            form.values[f"alt_{slot.index}"] = m.alt_text
        return await _page(
            request,
            "communique_edit.html",
            assembly=assembly,
            form=form,
            slots=slots,
            communique=item,
        )
    try:
        form_data = await read_form(request, files=True)
        action = text(form_data, "action", max_length=20)
        return await _submit(request, user, assembly, _read_draft(form_data), action, item)
    finally:
        await request.close()  # the uploads' temporary files, even when the CSRF check fails


async def _submit(
    request: Request,
    user: User,
    assembly: Assembly,
    draft: Draft,
    action: str,
    item: Communique | None,
) -> Response:
    """Preview, publish (``item`` None) or update (``item`` given) a draft."""
    ctx = _ctx(request)
    template = "compose.html" if item is None else "communique_edit.html"
    previewing = action == "preview"
    stored: list[Media] = []
    swept: list[Media] = []
    try:
        communiques.check_draft(draft.content, draft.language, draft.summary or None)
        decision = ratification.validate(draft.decision) if item is None else None
        poll = (
            polls.validate(draft.poll_choices, draft.poll_hours, now=ctx.clock())
            if item is None
            else None
        )
        _check_alts(draft)
        found = [] if previewing else await _resolve_mentions(ctx, draft.content)
        async with ctx.sessions() as session, session.begin():
            # Again in the transaction that writes: a membership removed meanwhile counts.
            # (`current` is this transaction's copy: `assembly` must outlive a rollback.)
            current, _membership = await require_member(session, user, assembly.handle)
            if not previewing:
                await assemblies.require_active(session, current.handle)
            await _load_kept(session, draft, current, item)
            swept = await media.sweep_unattached(
                session,
                assembly_id=current.id,
                before=ctx.clock() - UNATTACHED_LIFETIME,
                keep=[m.id for m in draft.files],
            )
            await _store_new(session, ctx, draft, current, user, stored)
            published: communiques.Published | None = None
            if not previewing:
                _describe(draft)
                common: dict[str, Any] = {
                    "source": draft.content,
                    "language": draft.language,
                    "summary": draft.summary or None,
                    "attachments": draft.files,
                    "mentions": found,
                    "now": ctx.clock(),
                    "wake": ctx.wake,  # set once this transaction commits
                }
                if item is None:
                    published = await communiques.publish(
                        session,
                        ctx.urls,
                        handle=current.handle,
                        decision=decision,
                        poll=poll,
                        **common,
                    )
                else:
                    url = ctx.urls.communique(current.handle, item.public_id)
                    published = await communiques.edit(session, ctx.urls, url=url, **common)
    except (BadRequest, Conflict, Gone) as exc:
        # Conflict: the assembly has moved (or was moved meanwhile) and no longer publishes.
        media.remove_files(ctx.settings, stored)
        return await _page(
            request,
            template,
            assembly=assembly,
            form=FormState(values=draft.values()).fail(exc),
            slots=_shown(draft, stored),
            status=409 if isinstance(exc, Conflict) else 400,
            files_dropped=any(s.upload is not None for s in draft.slots),
            communique=item,
        )
    except BaseException:
        media.remove_files(ctx.settings, stored)
        raise
    media.remove_files(ctx.settings, swept)
    if published is None:
        return await _page(
            request,
            template,
            assembly=assembly,
            form=FormState(values=draft.values()),
            slots=_shown(draft),
            preview=_preview(request, draft),
            communique=item,
        )
    media.remove_files(ctx.settings, published.removed_media)
    return redirect(request, published.url, flash="Published." if item is None else "Updated.")


async def delete(request: Request) -> Response:
    user, assembly = await _member(request)
    await read_form(request)
    ctx = _ctx(request)
    async with ctx.sessions() as session, session.begin():
        assembly, _membership = await require_member(session, user, assembly.handle)
        _assembly, item = await communiques.get(
            session, assembly.handle, request.path_params["public_id"]
        )
        deleted = await communiques.delete(
            session,
            ctx.urls,
            url=ctx.urls.communique(assembly.handle, item.public_id),
            now=ctx.clock(),
            wake=ctx.wake,
        )
    media.remove_files(ctx.settings, deleted.removed_media)
    return redirect(request, f"/manage/{assembly.handle}", flash="Deleted.")


routes = [
    Route("/manage/{handle}", manage, methods=["GET"]),
    Route("/manage/{handle}/compose", compose, methods=["GET", "POST"]),
    Route("/manage/{handle}/communiques/{public_id}/edit", edit, methods=["GET", "POST"]),
    Route("/manage/{handle}/communiques/{public_id}/delete", delete, methods=["POST"]),
]
