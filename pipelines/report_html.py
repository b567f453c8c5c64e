"""The HTML of ``sepflow report``: the page's shell (inline CSS and script), its table of
contents and anchors, small element helpers, and how paths are shown (normalised)."""
from __future__ import annotations

import base64
import hashlib
import html
import os
import posixpath
import re
import urllib.parse

from .report_figures import FIGURE_WIDTH_PX

#: Pixels across the page's content column; every figure is drawn exactly this wide.
CONTENT_PX = FIGURE_WIDTH_PX

#: The page's sections: (id, title), in order.
SECTIONS = (("summary", "Job summary"), ("errors", "Errors"), ("evaluation", "Evaluation"), ("tracks", "Tracks"))

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: CONTENT_PXpx; margin: 1.5em auto;
       padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; } tr.oracle td { color: #777; font-style: italic; }
.kv th { background: #f4f4f4; font-weight: 600; } thead th { background: #eee; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
img { max-width: 100%; height: auto; } figure.plot img { display: block; width: 100%; }
.note { color: #666; } .error { color: #a00; }
.players { display: flex; flex-wrap: wrap; gap: .4em 1.2em; } .players figure { margin: .2em 0; }
audio { width: 260px; } code { font-size: .92em; overflow-wrap: anywhere; }
nav#contents { background: #f7f7f7; border: 1px solid #ddd; padding: .2em 1.2em .6em; margin: 1em 0; }
nav#contents h2 { border: 0; margin: .4em 0 .2em; font-size: 1.15em; } nav#contents ol { margin: .2em 0; }
details.track { border-top: 2px solid #ccc; margin: 1.5em 0; }
details.track > summary { cursor: pointer; padding: .3em 0; }
details.track > summary > h3 { display: inline; font-size: 1.3em; }
section.operator > h4 { font-size: 1.15em; margin: 1.4em 0 .4em; padding: .25em .6em;
                        background: #eef3f8; border-left: 4px solid #3b6ea5; }
h4 .op { font-weight: normal; color: #555; font-size: .85em; margin-left: .5em; }
""".replace("CONTENT_PX", str(CONTENT_PX))

# Records script errors and failed image/audio loads in <body data-errors>, marks the page
# rendered, and once laid out records in <body data-figure-fill> the width of each figure over
# the content column's: a headless browser's dumped DOM then shows whether the page worked.
_SCRIPT = """
(function () {
  var errors = [];
  function record(message) {
    errors.push(message);
    if (document.body) { document.body.setAttribute("data-errors", errors.join(" | ")); }
  }
  window.onerror = function (message, source, line) { record("script: " + message + " (line " + line + ")"); };
  window.addEventListener("error", function (event) {
    var el = event.target;
    if (el && el.tagName && /^(IMG|AUDIO|SOURCE|VIDEO)$/.test(el.tagName)) {
      record("failed to load " + el.tagName.toLowerCase() + " " + String(el.currentSrc || el.src || "").slice(0, 160));
    }
  }, true);
  document.addEventListener("DOMContentLoaded", function () {
    document.body.setAttribute("data-errors", errors.join(" | "));
    document.body.setAttribute("data-rendered", "1");
  });
  window.addEventListener("load", function () {
    var style = getComputedStyle(document.body);
    var column = document.body.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    var fills = [];
    document.querySelectorAll("figure.plot img").forEach(function (img) {
      fills.push((img.getBoundingClientRect().width / column).toFixed(3));
    });
    document.body.setAttribute("data-figure-fill", fills.join(" "));
  });
})();
"""


def esc(value) -> str:
    """``value`` as HTML text (``None`` as empty)."""
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, sections: list[str]) -> str:
    """The whole page: its CSS and script inline, ``sections`` in order."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
        f"<body data-errors=\"\">{''.join(sections)}</body></html>\n"
    )


def table(headers: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(), row_classes=None) -> str:
    """An HTML table; cells are HTML already (escape text with :func:`esc`)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(png: bytes, caption: str, alt: str, attributes: str = "") -> str:
    """A plot as an inline PNG, as wide as the content column, with its caption (HTML) under it."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure class="plot"{attributes}><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


# --- paths as shown -----------------------------------------------------------------------------
def display_uri(uri: str | None) -> str | None:
    """``uri`` as the page shows it: a path with its ``.`` and ``..`` segments resolved
    (``out/../data/x.flac`` is shown ``data/x.flac``), a URL with its path so normalised."""
    if not uri:
        return uri
    scheme, sep, rest = uri.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        if not rest:
            return uri
        normal = posixpath.normpath(rest) if scheme != "file" else os.path.normpath(rest)
        return f"{scheme}://{normal}{'/' if rest.endswith('/') and normal != '/' else ''}"
    return os.path.normpath(uri)


_TOKEN = re.compile(r"[^\s'\"()<>]+")
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


def display_text(text: str | None) -> str | None:
    """``text`` (an error message) with every path in it that has ``.`` or ``..`` segments normalised."""
    if not text:
        return text

    def normal(match: re.Match) -> str:
        token = match.group(0)
        return display_uri(token) if "/" in token and _DOT_SEGMENT.search(token) else token

    return _TOKEN.sub(normal, text)


# --- anchors and the table of contents ------------------------------------------------------------
def _anchor(*parts: str) -> str:
    """An id for the parts: whitespace (not allowed in ids) becomes ``_``, and then a short hash
    of the parts keeps it apart from the id of a name spelled with ``_``."""
    joined = "--".join(parts)
    if re.search(r"\s", joined):
        return re.sub(r"\s", "_", joined) + "-" + hashlib.sha1(joined.encode("utf-8")).hexdigest()[:6]
    return joined


def track_anchor(track_id: str) -> str:
    """The id of a track's heading."""
    return _anchor("track-" + track_id)


def operator_anchor(track_id: str, label: str) -> str:
    """The id of the heading of one operator (label) of a track."""
    return _anchor("track-" + track_id, label)


def href(anchor: str) -> str:
    """A link to the element with id ``anchor``, escaped for an attribute."""
    return esc("#" + urllib.parse.quote(anchor, safe="/:@!$&'()*+,;=-._~"))


def contents(tracks: list[tuple[str, list[str]]]) -> str:
    """The table of contents: the page's sections, and under Tracks each track with a link to
    each of its operators (labels)."""
    items = []
    for section, title in SECTIONS:
        sub = ""
        if section == "tracks" and tracks:
            entries = []
            for track_id, labels in tracks:
                links = ", ".join(f'<a href="{href(operator_anchor(track_id, label))}">{esc(label)}</a>'
                                  for label in labels)
                entries.append(f'<li><a href="{href(track_anchor(track_id))}">{esc(track_id)}</a>'
                               + (f": {links}" if links else "") + "</li>")
            sub = f"<ol>{''.join(entries)}</ol>"
        items.append(f'<li><a href="{href(section)}">{esc(title)}</a>{sub}</li>')
    return f'<nav id="contents" aria-label="Contents"><h2>Contents</h2><ol>{"".join(items)}</ol></nav>'
