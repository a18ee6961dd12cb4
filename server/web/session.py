"""The browser side of accounts: session cookie, CSRF tokens, flash messages, form reading
and the guards every page handler calls (``require_user``, ``require_admin``,
``require_member``).

CSRF: every visitor carries a random ``csrf`` cookie (set by :class:`SecurityMiddleware`);
each form carries HMAC(secret key, that cookie) and a POST is refused unless they match. An
attacker's page can neither read the cookie nor compute the HMAC. Browsers that send an
``Origin`` must send ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Message

from server import accounts, i18n
from server.config import Settings
from server.context import Context
from server.errors import Forbidden, LoginRequired, NotFound, PayloadTooLarge
from server.models import Assembly, MemberRole, Membership, User

FORM_FIELD = "csrf_token"
MAX_FORM_BYTES = 1_000_000  # forms without files
MAX_FILES = 4  # attachments per communiqué


def cookie_name(settings: Settings, name: str) -> str:
    """``__Host-`` cookies under https: bound to our host, Secure, path /."""
    return f"__Host-interocc_{name}" if settings.https else f"interocc_{name}"


def set_cookie(
    response: Response, settings: Settings, name: str, value: str, *, max_age: int | None = None
) -> None:
    response.set_cookie(
        cookie_name(settings, name),
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.https,
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(
        cookie_name(settings, name), path="/", httponly=True, samesite="lax", secure=settings.https
    )


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _mac(settings: Settings, purpose: str, value: str) -> str:
    key = settings.secret_key.encode()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


# -- CSRF ---------------------------------------------------------------------------------


def csrf_cookie_value(request: Request) -> str:
    """This visitor's CSRF cookie (the middleware sets one on the first visit)."""
    value = request.scope.get("state", {}).get("csrf_cookie")
    return str(value or "")


def csrf_token(request: Request) -> str:
    return _mac(_ctx(request).settings, "csrf", csrf_cookie_value(request))


def check_csrf(request: Request, form: FormData) -> None:
    settings = _ctx(request).settings
    origin = request.headers.get("origin")
    if origin and origin != "null" and origin.rstrip("/") != settings.base_url:
        raise Forbidden("this form was sent from another site", detail=f"Origin {origin[:100]}")
    sent = form.get(FORM_FIELD)
    cookie = csrf_cookie_value(request)
    if (
        not isinstance(sent, str)
        or not cookie
        or not hmac.compare_digest(sent, _mac(settings, "csrf", cookie))
    ):
        raise Forbidden(
            "this form has expired or did not come from this site: reload the page and try again"
        )


# -- forms --------------------------------------------------------------------------------


async def read_form(request: Request, *, files: bool = False) -> FormData:
    """The POSTed form, size-bounded, after the CSRF check."""
    settings = _ctx(request).settings
    limit = settings.max_upload_bytes * MAX_FILES + MAX_FORM_BYTES if files else MAX_FORM_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(limit))
        chunks.append(chunk)
    request._body = b"".join(chunks)  # Starlette's form parser reads the cached body
    form = await request.form(
        max_files=MAX_FILES + 2 if files else 0,
        max_fields=200,
        max_part_size=MAX_FORM_BYTES,
    )
    try:
        check_csrf(request, form)
    except Forbidden:
        await form.close()  # uploads' temporary files, before the refusal
        raise
    return form


async def read_large_form(request: Request, *, limit: int) -> FormData:
    """A POSTed form with one large file (an assembly archive), bounded by ``limit`` bytes
    in all, after the CSRF check. Unlike :func:`read_form` the body is not held in memory:
    the parser spools the file to a temporary file as it arrives, and the count of bytes
    received stops the request once it is over the limit. The caller closes the form."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(limit))
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(_too_large(limit))
        return message

    bounded = Request(request.scope, receive)
    form = await bounded.form(max_files=1, max_fields=20, max_part_size=MAX_FORM_BYTES)
    try:
        check_csrf(request, form)
    except Forbidden:
        await form.close()
        raise
    return form


def _too_large(limit: int) -> str:
    return f"what you sent is larger than {limit // 1_000_000} MB: send less at once"


def text(form: FormData, name: str, *, max_length: int = 50_000) -> str:
    """A text field ('' if absent), normalised to Unix newlines and bounded."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.replace("\r\n", "\n")[:max_length]


def checkbox(form: FormData, name: str) -> bool:
    return form.get(name) in {"on", "true", "1", "yes"}


def uploads(form: FormData, name: str) -> list[UploadFile]:
    """Files actually chosen in a file field (browsers send an empty part for none)."""
    return [f for f in form.getlist(name) if isinstance(f, UploadFile) and f.filename]


@dataclass
class FormState:
    """What a form re-renders with after a refusal: the values typed and errors by field."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def fail(self, exc: Exception, default_field: str = "_form") -> FormState:
        name = getattr(exc, "field", None) or default_field
        self.errors[name] = getattr(exc, "message", str(exc))
        return self

    @property
    def ok(self) -> bool:
        return not self.errors


# -- flash messages -----------------------------------------------------------------------


def redirect(request: Request, url: str, *, flash: str | None = None) -> RedirectResponse:
    """303 to a page of ours, optionally carrying a one-time message shown there."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        settings = _ctx(request).settings
        message = base64.urlsafe_b64encode(flash[:300].encode()).decode()
        set_cookie(response, settings, "flash", f"{message}.{_mac(settings, 'flash', message)}")
    return response


def take_flash(request: Request) -> str | None:
    """The flash message sent with the last redirect (the render helper clears it)."""
    settings = _ctx(request).settings
    raw = request.cookies.get(cookie_name(settings, "flash"), "")
    message, _, mac = raw.partition(".")
    if not message or not hmac.compare_digest(mac, _mac(settings, "flash", message)):
        return None
    try:
        return base64.urlsafe_b64decode(message.encode()).decode()
    except ValueError:
        return None


# -- who is signed in ---------------------------------------------------------------------


def session_token(request: Request) -> str:
    return request.cookies.get(cookie_name(_ctx(request).settings, "session"), "")


async def current_user(request: Request) -> User | None:
    """The signed-in person, read once per request."""
    state = request.scope.setdefault("state", {})
    if "user" in state:
        user: User | None = state["user"]
        return user
    token = session_token(request)
    user = None
    if token:
        ctx = _ctx(request)
        async with ctx.sessions() as session:
            user = await accounts.session_user(session, token, now=ctx.clock())
        if user is not None and user.language:
            # The account's language comes after the visitor's own choice (the switcher's
            # cookie) and before the browser's: LanguageMiddleware could not know it yet.
            use_request_language(request, ctx.settings, preferred=user.language)
    state["user"] = user
    return user


def use_request_language(
    request: Request, settings: Settings, *, preferred: str | None = None
) -> None:
    """Make the request's language (server/i18n.py's order) the language of the rest of it:
    of its pages, and of the errors and notices its handlers write."""
    i18n.use(
        i18n.negotiate(
            chosen=request.cookies.get(cookie_name(settings, i18n.COOKIE)),
            preferred=preferred,
            accept_language=request.headers.get("accept-language"),
        )
    )


def safe_next(target: str | None) -> str:
    """A post-login destination: only a path on this site."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/dashboard"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return "/dashboard"
    return target


async def require_user(request: Request) -> User:
    user = await current_user(request)
    if user is None:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(detail=f"/login?next={quote(nxt)}")
    return user


async def require_admin(request: Request) -> User:
    user = await require_user(request)
    if not user.is_admin:
        raise Forbidden("only the instance's administrators may open this page")
    return user


async def require_member(
    session: AsyncSession, user: User, handle: str, *, admin: bool = False
) -> tuple[Assembly, Membership]:
    """The assembly and ``user``'s membership of it; Forbidden for anyone else.

    With ``admin`` the membership must have the assembly-admin role.
    """
    assembly, membership = await _assembly_and_membership(session, user, handle)
    if membership is None:
        raise Forbidden("you are not a facilitator of this assembly")
    if admin and membership.role != MemberRole.ADMIN:
        raise Forbidden("only this assembly's admins may do this")
    return assembly, membership


async def require_assembly_admin(
    session: AsyncSession, user: User, handle: str
) -> tuple[Assembly, Membership | None]:
    """The assembly, for one of its admins or one of the instance's administrators (then the
    membership is theirs if they have one, else None); Forbidden for anyone else."""
    if not user.is_admin:
        return await require_member(session, user, handle, admin=True)
    return await _assembly_and_membership(session, user, handle)


async def _assembly_and_membership(
    session: AsyncSession, user: User, handle: str
) -> tuple[Assembly, Membership | None]:
    """The assembly (NotFound if there is none) and ``user``'s membership of it, if any."""
    assembly = (await session.scalars(select(Assembly).where(Assembly.handle == handle))).first()
    if assembly is None:
        raise NotFound("no such assembly")
    membership = (
        await session.scalars(
            select(Membership).where(
                Membership.assembly_id == assembly.id, Membership.user_id == user.id
            )
        )
    ).first()
    return assembly, membership


def login_redirect_target(exc: LoginRequired) -> str:
    return exc.detail or "/login"


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)
