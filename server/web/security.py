"""Security headers on every response, and the CSRF cookie every visitor carries."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import Settings
from server.web.session import cookie_name, new_csrf_cookie

# No inline script anywhere: scripts and styles come from /static only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
    "media-src 'self' https:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "referrer-policy": "strict-origin-when-cross-origin",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    "cross-origin-opener-policy": "same-origin",
}
CSRF_MAX_AGE = 60 * 60 * 24 * 365


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.csrf_name = cookie_name(settings, "csrf")
        # What every response gets, unless the app set the header itself.
        wanted = dict(HEADERS)
        if settings.https:
            wanted["strict-transport-security"] = "max-age=31536000"
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in wanted.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        existing = ""
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # noqa: BLE001 - a malformed cookie header is ignored
                    continue
                if self.csrf_name in jar:
                    existing = jar[self.csrf_name].value
        fresh = not (16 <= len(existing) <= 100)
        token = new_csrf_cookie() if fresh else existing
        scope.setdefault("state", {})["csrf_cookie"] = token

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # The raw header list, extended in place: one pass over it, where
                # MutableHeaders would scan it again for every header set.
                raw = list(message.get("headers", ()))
                message["headers"] = raw
                present = {name.lower(): value for name, value in raw}
                raw.extend(h for h in self.headers if h[0] not in present)
                # Only pages carry forms: API and federation answers stay cookie-free.
                if fresh and present.get(b"content-type", b"").startswith(b"text/html"):
                    cookie = f"{self.csrf_name}={token}; Path=/; HttpOnly; SameSite=Lax"
                    cookie += f"; Max-Age={CSRF_MAX_AGE}"
                    if self.settings.https:
                        cookie += "; Secure"
                    raw.append((b"set-cookie", cookie.encode("latin-1")))
            await send(message)

        await self.app(scope, receive, send_with_headers)
