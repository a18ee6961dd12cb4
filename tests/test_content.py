"""Text to safe HTML: Markdown for our communiqués, sanitising for anything from elsewhere.

* ``render_markdown`` turns an assembly's Markdown into HTML that a Mastodon user sees as
  intended: emphasis, links with rel="nofollow noopener noreferrer", #hashtags linked the
  way Mastodon links them (and returned, for the Note's ``tag`` list). Raw HTML in the
  source is shown, never executed. A single newline is a line break (``<br>``), as
  fediverse apps show a post's lines.
* ``sanitise_html`` keeps only what Mastodon keeps of incoming HTML.
* ``plain_to_html`` turns a plain summary into escaped paragraphs.
"""

from __future__ import annotations

import re

import pytest

from server.content import plain_to_html, render_markdown, sanitise_html

REL = 'rel="nofollow noopener noreferrer"'


def tag_url(tag: str) -> str:
    return f"https://ga.example/tags/{tag.lower()}"


def render(source: str) -> str:
    return render_markdown(source, tag_url=tag_url).html


def hashtags(source: str) -> list[str]:
    return render_markdown(source, tag_url=tag_url).hashtags


def hashtag_link(tag: str) -> str:
    return f'<a href="{tag_url(tag)}" class="mention hashtag" rel="tag">#<span>{tag}</span></a>'


# ---- Markdown --------------------------------------------------------------------------------


def test_emphasis_and_links() -> None:
    assert render("**bold**, *em* and [the GA](https://ga.example/minutes)") == (
        "<p><strong>bold</strong>, <em>em</em> and "
        f'<a href="https://ga.example/minutes" {REL}>the GA</a></p>'
    )


def test_bare_urls_are_linked_with_rel() -> None:
    html = render("minutes at https://ga.example/m/1")
    assert f'<a href="https://ga.example/m/1" {REL}>https://ga.example/m/1</a>' in html


def test_paragraphs_lists_quotes_and_code() -> None:
    html = render("one\n\n- a\n- b\n\n> quoted\n\n`x`")
    assert html == (
        "<p>one</p>\n<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"
        "<blockquote>\n<p>quoted</p>\n</blockquote>\n<p><code>x</code></p>"
    )


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "hello <script>alert(1)</script> world",
        "<SCRIPT src=https://evil.example/x.js></SCRIPT>",
        "```\n<script>alert(1)</script>\n```",
        "`<script>`",
    ],
)
def test_raw_html_is_escaped_never_executed(source: str) -> None:
    html = render(source)
    assert "<script" not in html.lower()
    assert "&lt;script" in html.lower()


def test_raw_html_tags_and_handlers_are_shown_as_text() -> None:
    html = render('<img src=x onerror=alert(1)> <b>bold?</b> <a href="javascript:x">a</a>')
    assert html == (
        "<p>&lt;img src=x onerror=alert(1)&gt; &lt;b&gt;bold?&lt;/b&gt; "
        '&lt;a href="javascript:x"&gt;a&lt;/a&gt;</p>'
    )


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        "[click](JavaScript:alert(1))",
        "[click](vbscript:msgbox(1))",
        "[click](data:text/html,<script>alert(1)</script>)",
        "<javascript:alert(1)>",
    ],
)
def test_dangerous_link_schemes_are_dropped(source: str) -> None:
    html = render(source)
    assert "href" not in html
    assert "<a" not in html


# The founding communiqué's sign-off (docs/founding-communique.txt): three lines, not one.
SIGN_OFF = "General Assembly\nLiberty Plaza\nNew York City"


def test_a_single_newline_is_a_line_break() -> None:
    assert render(SIGN_OFF) == "<p>General Assembly<br>\nLiberty Plaza<br>\nNew York City</p>"


def test_paragraphs_and_lists_are_unchanged_by_line_breaks() -> None:
    html = render("one\ntwo\n\nthree\n\n- a\n- b\n\n> quoted\n> still quoted")
    assert html == (
        "<p>one<br>\ntwo</p>\n<p>three</p>\n<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n"
        "<blockquote>\n<p>quoted<br>\nstill quoted</p>\n</blockquote>"
    )
    # Code keeps its own newlines, without <br>.
    assert render("```\nx = 1\ny = 2\n```") == "<pre><code>x = 1\ny = 2\n</code></pre>"
    # Two trailing spaces (CommonMark's hard break) still make one break, not two.
    assert render("a  \nb") == "<p>a<br>\nb</p>"


def test_line_breaks_stay_sanitised_and_hashtags_linked() -> None:
    html = render("<script>\nalert(1)\n</script>\n#Occupy\n[x](javascript:alert(1))")
    assert "<script" not in html.lower()
    assert html.count("<br>") == 4
    assert hashtag_link("Occupy") + "<br>" in html
    assert html.count("<a ") == 1  # the hashtag's; the javascript: link stays text
    assert 'href="javascript' not in html


def test_every_link_gets_nofollow_noopener_noreferrer() -> None:
    html = render("[a](https://a.example) <https://b.example> ga@c.org www.d.org")
    links = re.findall(r"<a [^>]*>", html)
    assert len(links) == 4
    assert all(REL in link for link in links)


# ---- hashtags --------------------------------------------------------------------------------


def test_hashtags_are_linked_mastodon_style_and_returned() -> None:
    rendered = render_markdown("Join us #OccupyWallStreet", tag_url=tag_url)
    assert rendered.html == f"<p>Join us {hashtag_link('OccupyWallStreet')}</p>"
    assert rendered.hashtags == ["OccupyWallStreet"]


def test_hashtag_urls_are_escaped() -> None:
    rendered = render_markdown("#x", tag_url=lambda t: f'https://ga.example/t?a=1&b="{t}"')
    assert 'href="https://ga.example/t?a=1&amp;b=&quot;x&quot;"' in rendered.html


def test_hashtags_are_deduplicated_case_insensitively_keeping_the_first_spelling() -> None:
    rendered = render_markdown("#Occupy #occupy #OCCUPY #OWS #ows", tag_url=tag_url)
    assert rendered.hashtags == ["Occupy", "OWS"]
    assert rendered.html.count('class="mention hashtag"') == 5  # each mention is still linked


def test_at_most_thirty_hashtags_are_returned() -> None:
    source = " ".join(f"#tag{i}" for i in range(40))
    assert hashtags(source) == [f"tag{i}" for i in range(30)]


def test_hashtags_end_at_punctuation_and_may_be_unicode() -> None:
    assert hashtags("(#paren) #end. #a-b #Ünïcode #日本") == [
        "paren",
        "end",
        "a",
        "Ünïcode",
        "日本",
    ]


def test_hashtags_in_headings_and_emphasis_count() -> None:
    assert hashtags("# Meeting #GA\n\n**#Strike** *#Now*") == ["GA", "Strike", "Now"]


@pytest.mark.parametrize(
    "source",
    [
        "#123",
        "issue #42 and #2011",
        "`#tag`",
        "```\n#tag\n```",
        "    #tag in an indented block",
        "https://x.org/page#frag",
        "www.x.org/page#frag",
        "[#label](https://x.org)",
        "x/#path",
        "word#inside",
    ],
)
def test_these_are_not_hashtags(source: str) -> None:
    rendered = render_markdown(source, tag_url=tag_url)
    assert rendered.hashtags == []
    assert "mention hashtag" not in rendered.html


def test_url_fragment_link_is_kept_intact_next_to_a_real_hashtag() -> None:
    rendered = render_markdown("see https://x.org/page#frag #real", tag_url=tag_url)
    assert rendered.hashtags == ["real"]
    assert f'<a href="https://x.org/page#frag" {REL}>https://x.org/page#frag</a>' in rendered.html
    assert hashtag_link("real") in rendered.html


def test_code_and_text_hashtags_together() -> None:
    assert hashtags("use `#notag` but #yes\n\n```\n#no\n```\n\nand #also") == ["yes", "also"]


# ---- sanitise_html ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("<p>a<script>alert(1)</script>b</p>", "<p>ab</p>"),
        ("<style>p{color:red}</style><p>x</p>", "<p>x</p>"),
        ('<p>x<iframe src="https://evil.example"></iframe></p>', "<p>x</p>"),
        ('<p>x<img src="x" onerror="alert(1)"></p>', "<p>x</p>"),
        ('<p style="color:red" onclick="x()">x</p>', "<p>x</p>"),
        (
            '<span class="h-card" style="x" data-id="1">@ga</span>',
            '<span class="h-card">@ga</span>',
        ),
        ("<p>a<!-- secret -->b</p>", "<p>ab</p>"),
        ("<div><table><tr><td>cell</td></tr></table></div>", "cell"),
    ],
)
def test_sanitise_strips_what_is_not_allowed(dirty: str, clean: str) -> None:
    assert sanitise_html(dirty) == clean


def test_sanitise_drops_dangerous_hrefs_but_keeps_the_text() -> None:
    for href in ("javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "vbscript:x"):
        html = sanitise_html(f'<a href="{href}">t</a>')
        assert "href" not in html
        assert ">t</a>" in html


def test_sanitise_keeps_http_https_and_mailto_links_with_our_rel() -> None:
    for href in ("https://x.org/a", "http://x.org/a", "mailto:ga@x.org"):
        assert sanitise_html(f'<a href="{href}" rel="opener" target="_blank">t</a>') == (
            f'<a href="{href}" {REL}>t</a>'
        )


def test_sanitise_keeps_mastodon_mention_markup() -> None:
    mastodon = (
        '<p><span class="h-card"><a href="https://m.example/@ga" class="u-url mention">'
        "@<span>ga</span></a></span> hello<br>world</p>"
    )
    assert sanitise_html(mastodon) == (
        '<p><span class="h-card"><a href="https://m.example/@ga" class="u-url mention" '
        f"{REL}>@<span>ga</span></a></span> hello<br>world</p>"
    )


@pytest.mark.parametrize(
    "kept",
    [
        "<p>para</p>",
        "<p>a<br>b</p>",
        "<blockquote><p>q</p></blockquote>",
        "<p><code>c</code></p>",
        "<pre><code>x = 1\n</code></pre>",
        "<ul><li>a</li><li>b</li></ul>",
        '<ol start="3"><li>c</li></ol>',
        "<p><strong>s</strong> <em>e</em> <del>d</del></p>",
        "<h2>heading</h2>",
    ],
)
def test_sanitise_keeps_the_allowed_structure(kept: str) -> None:
    assert sanitise_html(kept) == kept


def test_sanitise_escapes_stray_angle_brackets_in_text() -> None:
    assert sanitise_html("1 < 2 & 3 > 2") == "1 &lt; 2 &amp; 3 &gt; 2"


# ---- plain_to_html ---------------------------------------------------------------------------


def test_plain_text_is_escaped_and_split_into_paragraphs() -> None:
    assert plain_to_html('We <3 "assemblies" & parks\nline two\n\n\n  second para  \n') == (
        "<p>We &lt;3 &quot;assemblies&quot; &amp; parks<br>line two</p><p>second para</p>"
    )


def test_plain_text_tags_are_not_markup() -> None:
    html = plain_to_html("<script>alert(1)</script>")
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_empty_plain_text_is_empty_html() -> None:
    assert plain_to_html("") == ""
    assert plain_to_html(" \n\n \n") == ""
