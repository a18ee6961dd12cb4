"""GET /media/{file_name}: uploaded files, served with headers that keep them inert."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from server import media
from server.context import Context
from server.errors import NotFound
from server.web.session import current_user

# A file is only ever data: no sniffing it into HTML, no scripts even if it were opened as
# a document, and cached for good (a file's name changes whenever its content would).
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "public, max-age=31536000, immutable",
}
PRIVATE_CACHE = "private, max-age=3600"


async def serve(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    file_name = request.path_params["file_name"]
    if not media.FILE_NAME_RE.match(file_name):
        raise NotFound("no such file")
    user = await current_user(request)
    async with ctx.sessions() as session:
        found = await media.find_servable(session, file_name, user=user)
    if found is None or not media.file_path(ctx.settings, found.media).is_file():
        raise NotFound("no such file")
    headers = dict(HEADERS)
    if not found.public:
        # Seen only by its assembly's facilitators: no shared cache may keep it.
        headers["Cache-Control"] = PRIVATE_CACHE
    item = found.media
    pdf = item.media_type == "application/pdf"
    return FileResponse(
        media.file_path(ctx.settings, item),
        media_type=item.media_type,
        headers=headers,
        filename=media.download_name(item),
        # A PDF is downloaded: browsers' PDF viewers do not run under a sandbox CSP.
        content_disposition_type="attachment" if pdf else "inline",
    )


routes = [Route("/media/{file_name}", serve, methods=["GET", "HEAD"])]
