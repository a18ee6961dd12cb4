"""Content negotiation: one URL, two faces (AS2 JSON for servers, HTML for people)."""

from __future__ import annotations

AS2_TYPES = {"application/activity+json", "application/ld+json"}
HTML_TYPES = {"text/html", "application/xhtml+xml"}


def _entries(accept: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            name, _, value = piece.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
            else:
                params[name] = value
        out.append((media, params, q))
    return out


AS_PROFILE = "https://www.w3.org/ns/activitystreams"


def is_activity_json(content_type: str | None) -> bool:
    """Whether a Content-Type names an ActivityStreams document (FEP-96ff).

    ``application/activity+json`` (any parameters), or ``application/ld+json`` whose
    ``profile`` lists the ActivityStreams profile. Plain JSON, HTML or an image is not an
    actor, whatever it holds: a file uploaded to a server is served as what it is.
    """
    entries = _entries(content_type or "")
    if len(entries) != 1:
        return False
    media, params, _q = entries[0]
    if media == "application/activity+json":
        return True
    return media == "application/ld+json" and AS_PROFILE in params.get("profile", "").split()


def wants_activity_json(accept: str | None) -> str | None:
    """The AS2 media type to answer with, or None when HTML is preferred.

    ``application/ld+json`` counts only with the ActivityStreams profile (or no profile),
    and AS2 wins ties, so Mastodon's ``application/activity+json, application/ld+json,
    text/html;q=0.1`` gets JSON while a browser's ``text/html,…,*/*;q=0.8`` gets HTML.
    """
    if not accept:
        return None
    best_as2: tuple[float, str] | None = None
    best_html = 0.0
    for media, params, q in _entries(accept):
        if media in AS2_TYPES:
            profile = params.get("profile")
            if media == "application/ld+json" and profile not in {
                None,
                "https://www.w3.org/ns/activitystreams",
            }:
                continue
            if q > 0 and (best_as2 is None or q > best_as2[0]):
                answer = (
                    "application/activity+json"
                    if media == "application/activity+json"
                    else 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
                )
                best_as2 = (q, answer)
        elif media in HTML_TYPES or media in {"text/*", "*/*"}:
            best_html = max(best_html, q if media != "*/*" else q * 0.99)
    if best_as2 is not None and best_as2[0] >= best_html:
        return best_as2[1]
    return None
