"""summary.md with hostile text from a run (patch subjects from lore, skip reasons, splat titles):
rendered by GitHub's own GFM renderer (cmark-gfm, autolinks on), it shows the text as written
and adds no link, image, heading, list, quote or table cell."""

from __future__ import annotations

import html
import re
from pathlib import Path

import cmarkgfm
from cmarkgfm.cmark import Options

from harness.report.summary import Code, Link, render_markdown

HOSTILE = [
    "[click](http://evil.example/a)",
    "![](http://evil.example/pixel.png)",
    "<http://evil.example/autolink>",
    "see http://evil.example/bare and https://evil.example/tls",
    "www.evil.example/page",
    "WWW.Evil.Example",
    "mail maintainer@evil.example",
    "mailto:maintainer@evil.example or xmpp:bot@evil.example",
    "ftp://evil.example/x and ssh://epyc1",
    "[ref]: http://evil.example",
    "[ref] and [x][ref]",
    "# KVM: SEV: a heading",
    "1. ordered",
    "- bullet",
    "> quote",
    "---",
    "*emph* _emph_ **strong** ~~strike~~",
    "`code` span",
    "a | b | c",
    "a \\| b and a\\",
    "<img src=x onerror=alert(1)> <script>alert(1)</script>",
    "&lt;img src=x&gt; &#x3C;b&#x3E; &#104;ttp://evil.example",
    "    indented code",
    "two\nlines\n\n# then a heading\n![](http://evil.example/p)",
    "line\u2028separator http://evil.example",
    "$x^2$ and {braces} (parens)",
]

# Elements only our own blocks may create; none may come from the text.
_MARKUP = re.compile(r"<(a|img|h[1-6]|ol|ul|li|blockquote|hr|pre|em|strong|del|script|code)\b")


def render(md: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE)


def text_of(rendered: str) -> str:
    """What a reader sees: tags dropped, entities and word joiners undone."""
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).replace("\u2060", "").strip()


def test_a_paragraph_shows_the_text_and_adds_no_markup():
    for text in HOSTILE:
        out = render(render_markdown([("p", [text])]))
        assert out.startswith("<p>") and out.count("<p>") == 1, (text, out)
        assert not _MARKUP.findall(out), (text, out)
        assert text_of(out) == " ".join(text.splitlines()).strip(), (text, out)


def test_a_heading_stays_one_heading():
    for text in HOSTILE:
        out = render(render_markdown([("h", 3, [Code("t.py::x"), f" — {text}"])]))
        assert out.count("<h3>") == 1 and out.strip().endswith("</h3>"), (text, out)
        assert _MARKUP.findall(out) == ["h3", "code"], (text, out)


def test_table_cells_stay_cells():
    header = ["reason", "count", "tests"]
    rows = [[([text], ""), ([Code(text)], ""), ([Link(text, "dmesg/x.log")], "")] for text in HOSTILE]
    out = render(render_markdown([("table", header, rows)]))
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", out, re.S)]
    assert len(cells) == len(HOSTILE) + 1 and all(len(c) == 3 for c in cells), out
    for text, (plain, code, link) in zip(HOSTILE, cells[1:]):
        one_line = " ".join(text.splitlines()).strip()
        assert text_of(plain) == one_line and not _MARKUP.findall(plain), plain
        assert code.startswith("<code>") and _MARKUP.findall(code) == ["code"], code
        # Our own link to the run's file, and nothing else in it.
        assert link.startswith('<a href="dmesg/x.log">') and _MARKUP.findall(link) == ["a"], link
        assert text_of(link) == one_line


def test_image_alt_text_and_links_to_run_files_cannot_become_urls():
    out = render(render_markdown([("img", Path("rmp-map-x.png"), "![](http://evil.example) [a](b)"),
                                  ("p", [Link("x", "javascript:alert(1)")])]))
    assert re.findall(r'(?:src|href)="([^"]*)"', out) == ["rmp-map-x.png", "javascript%3Aalert%281%29"]


def test_the_rendered_text_has_no_bare_url_for_gitlab_to_link():
    """GitLab links any scheme:// (and @mentions) in the rendered text too, after Markdown:
    backslashes are gone by then, only the word joiner stands in the way."""
    out = render(render_markdown([("p", [t]) for t in HOSTILE]))
    seen = html.unescape(re.sub(r"<[^>]+>", "", out))  # word joiners kept
    assert "evil.example" in seen
    assert not re.search(r"(?i)[a-z0-9+.-]://|\bwww\.|@[a-z]", seen), seen
