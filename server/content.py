"""Text to safe HTML: Markdown for our communiqués, sanitising for everything remote."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt

# What Mastodon (4.x) keeps of incoming HTML, plus headings and code blocks it renders too.
ALLOWED_TAGS = {
    "p", "br", "a", "span", "strong", "b", "em", "i", "u", "s", "del", "ins", "sub", "sup",
    "ul", "ol", "li", "blockquote", "code", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "class", "title"},
    "span": {"class"},
    "ol": {"start", "reversed"},
    "li": {"value"},
}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "nofollow noopener noreferrer"
MAX_LINK = 2048  # the longest URL our columns hold
# A BCP 47 language tag as communiqués and assemblies accept it (primary subtag lower-case).
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")

MAX_TAG = 64  # characters of a hashtag
HASHTAG_RE = re.compile(rf"(?<![\w/&#])#(\w{{1,{MAX_TAG}}})", re.UNICODE)
_TAG_NAME_RE = re.compile(rf"\w{{1,{MAX_TAG}}}", re.UNICODE)
_TAG_SPLIT_RE = re.compile(r"(<[^>]*>)")
_MAX_HASHTAGS = 30


def safe_link(url: object) -> str | None:
    """``url`` if it is an absolute http(s) URL with a host, else None.

    The one rule for every link made from remote data: applied when it is stored, and again
    when a page renders it (the ``safe_link`` template filter). Refused: any other scheme
    (javascript:, data:, vbscript:), relative and protocol-relative URLs (they would point
    into our own site or borrow its scheme), credentials (https://ours.example@evil.example),
    and whatever a browser reads differently from urlsplit: whitespace, control characters
    and backslashes, which browsers strip or turn into "/" before parsing.
    """
    if not isinstance(url, str) or not 0 < len(url) <= MAX_LINK:
        return None
    if not url[:8].lower().startswith(("http://", "https://")):
        return None
    if any(c <= " " or c in "\x7f\\" for c in url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no port
    except ValueError:
        return None
    if not parts.hostname or "@" in parts.netloc:
        return None
    return url


def _keep_attribute(tag: str, name: str, value: str) -> str | None:
    # nh3 already holds links to URL_SCHEMES, but lets relative URLs through: a remote
    # post's "/manage/…" or "//evil.example" would point into our site or borrow its scheme.
    if name == "href" and not (safe_link(value) or value.lower().startswith("mailto:")):
        return None
    return value


def sanitise_html(value: str) -> str:
    """Clean any HTML from anywhere: only the tags and attributes above survive, and only
    absolute http(s) and mailto: links."""
    return nh3.clean(
        value,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_keep_attribute,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
    )


def plain_to_html(text: str) -> str:
    """Plain text (an assembly's summary) as escaped paragraphs."""
    paras = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "".join(
        "<p>" + "<br>".join(html.escape(line) for line in p.splitlines()) + "</p>" for p in paras
    )


@dataclass(frozen=True)
class Rendered:
    html: str
    hashtags: list[str]


def _markdown() -> MarkdownIt:
    # Raw HTML in the source is escaped, not passed through: the sanitiser then only ever
    # sees what Markdown itself produced. "breaks": a single newline is a line break, as
    # Mastodon and every fediverse app show a post's lines (a communiqué's sign-off, an
    # address, a poem), not CommonMark's joining of them into one line.
    options = {"html": False, "linkify": True, "typographer": False, "breaks": True}
    return MarkdownIt("commonmark", options).enable(["linkify", "strikethrough"])


def tag_name(name: str) -> str | None:
    """The form a tag is looked up by (lower case, as Mastodon compares tags and as
    ``Urls.tag`` links them), or None for what no hashtag can be: empty, too long, all
    digits, or with characters HASHTAG_RE does not take."""
    if not _TAG_NAME_RE.fullmatch(name) or name.isdigit():
        return None
    return name.lower()


def render_markdown(source: str, *, tag_url: Callable[[str], str]) -> Rendered:
    """Markdown to sanitised HTML, with #hashtags linked the way Mastodon links them."""
    cleaned = sanitise_html(_markdown().render(source))
    tags: list[str] = []
    out: list[str] = []
    skip_depth = 0  # inside <a>, <code> or <pre>, a '#' is not a hashtag
    for part in _TAG_SPLIT_RE.split(cleaned):
        if part.startswith("<"):
            name = part[1:].lstrip("/").split(None, 1)[0].rstrip(">").lower() if part else ""
            if name in {"a", "code", "pre"}:
                skip_depth += -1 if part.startswith("</") else 1
            out.append(part)
            continue
        if skip_depth > 0:
            out.append(part)
            continue

        def link(match: re.Match[str]) -> str:
            tag = match.group(1)
            if tag.isdigit():
                return match.group(0)
            if tag.lower() not in (t.lower() for t in tags) and len(tags) < _MAX_HASHTAGS:
                tags.append(tag)
            href = html.escape(tag_url(tag), quote=True)
            return f'<a href="{href}" class="mention hashtag" rel="tag">#<span>{tag}</span></a>'

        out.append(HASHTAG_RE.sub(link, part))
    return Rendered(html="".join(out).strip(), hashtags=tags)
