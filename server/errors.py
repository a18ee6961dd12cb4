"""One exception hierarchy: each error carries an HTTP status and a safe public message.

    InterOccError (500)
     ├── BadRequest (400)
     │    └── PayloadTooLarge (413)
     ├── Unauthorized (401)        signature missing or not verifiable
     │    └── LoginRequired         a page that needs a signed-in person (redirects)
     ├── Forbidden (403)
     ├── NotFound (404)
     ├── Gone (410)
     ├── Conflict (409)
     ├── UnsupportedMediaType (415)
     ├── TooManyRequests (429)     with ``retry_after`` seconds, sent as Retry-After
     └── RemoteError (502)         a remote server answered badly or not at all
          └── UnsafeAddress        a URL points at a private or loopback address

``message`` is safe to show to anyone; ``detail`` is for logs only; ``field`` names the form
field a message belongs beside, when the error comes from a form.
"""

from __future__ import annotations


class InterOccError(Exception):
    status = 500
    public = "internal error"

    def __init__(
        self, message: str | None = None, *, detail: str | None = None, field: str | None = None
    ) -> None:
        self.message = message or self.public
        self.detail = detail
        self.field = field
        super().__init__(self.message if detail is None else f"{self.message} ({detail})")


class BadRequest(InterOccError):
    status = 400
    public = "bad request"


class PayloadTooLarge(BadRequest):
    status = 413
    public = "body too large"


class Unauthorized(InterOccError):
    status = 401
    public = "signature required"


class LoginRequired(Unauthorized):
    public = "please log in first"


class Forbidden(InterOccError):
    status = 403
    public = "forbidden"


class NotFound(InterOccError):
    status = 404
    public = "not found"


class Gone(InterOccError):
    status = 410
    public = "gone"


class Conflict(InterOccError):
    status = 409
    public = "conflict"


class UnsupportedMediaType(InterOccError):
    status = 415
    public = "unsupported media type"


class TooManyRequests(InterOccError):
    status = 429
    public = "too many attempts; wait a few minutes and try again"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, detail=detail, field=field)
        self.retry_after = retry_after


class RemoteError(InterOccError):
    status = 502
    public = "remote server error"


class UnsafeAddress(RemoteError):
    public = "address not allowed"
