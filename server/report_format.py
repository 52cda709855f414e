"""How the report is written: a `Block` of Markdown and HTML, table and text primitives, number formats.

Plots are PNG bytes, referenced as files from report.md and embedded as base64 in report.html,
which therefore needs nothing beside it.
"""
from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from common.formatting import is_missing, md_table
from server import run_dir as rd


@dataclass
class Block:
    """One piece of the report in both formats; `plots` are the PNGs its Markdown links to."""

    md: str
    html: str
    plots: dict[str, bytes] = field(default_factory=dict)


# ---- numbers ----------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 3) -> str:
    """A figure as text; missing or undefined (NaN) figures read 'n/a'."""
    if is_missing(value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)




# ---- Markdown and HTML primitives -------------------------------------------------------------


def html_table(header: list[str], rows: list[list[str]], groups: list[tuple[str, int]] | None = None) -> str:
    """An HTML table; `groups` adds a first header row of (title, column span) over the columns."""
    head = ""
    if groups:
        head = "<tr>" + "".join(f'<th colspan="{span}">{html.escape(title)}</th>' for title, span in groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def table_block(header: list[str], rows: list[list[str]]) -> Block:
    return Block(md_table(header, rows), html_table(header, rows))


def _inline(text: str) -> str:
    """Escape, then the inline Markdown this report and `clafed readers` use: `code`, **bold**, *em*."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", out)


BULLET = re.compile(r"^\s*[-*]\s+")


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(text: str) -> str:
    """HTML of the Markdown subset used here: headings, pipe tables, bullet lists, paragraphs.

    Enough for report text and `clafed readers` output without a Markdown dependency; any other
    syntax is shown as plain (escaped) text.
    """
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", line):
            out.append(f"<h{len(m.group(1))}>{_inline(m.group(2))}</h{len(m.group(1))}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?[\s:|-]+\|?\s*$", lines[i + 1]) \
                and "-" in lines[i + 1]:
            header, i = _cells(line), i + 2
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif BULLET.match(line):
            items = []
            while i < len(lines) and BULLET.match(lines[i]):
                items.append("<li>" + _inline(BULLET.sub("", lines[i])) + "</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#{1,6}\s|\s*\||\s*[-*]\s)", lines[i]):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


def text_block(markdown: str) -> Block:
    return Block(markdown, markdown_to_html(markdown))


def heading(text: str, level: int = 2) -> Block:
    return Block(f"{'#' * level} {text}", f"<h{level}>{html.escape(text)}</h{level}>")


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_block(name: str, png: bytes, caption: str) -> Block:
    """A plot: linked file in Markdown, embedded base64 image in HTML."""
    data = base64.b64encode(png).decode("ascii")
    return Block(f"![{caption}]({rd.PLOTS_DIR}/{name}.png)",
                 f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>", {f"{name}.png": png})
