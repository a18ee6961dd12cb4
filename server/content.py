"""Text to safe HTML: Markdown for our communiqués, sanitising for everything remote."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

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

HASHTAG_RE = re.compile(r"(?<![\w/&#])#(\w{1,64})", re.UNICODE)
_TAG_SPLIT_RE = re.compile(r"(<[^>]*>)")
_MAX_HASHTAGS = 30


def sanitise_html(value: str) -> str:
    """Clean any HTML from anywhere: only the tags and attributes above survive."""
    return nh3.clean(
        value,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
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
    # sees what Markdown itself produced.
    return MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False}).enable(
        ["linkify", "strikethrough"]
    )


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
