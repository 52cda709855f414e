"""How figures read everywhere (terminal, Markdown, report): one format for a value with its CI, one
Markdown table."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


def is_missing(value: Any) -> bool:
    """None or NaN: a figure that is undefined (e.g. an AUC of a class without cases)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def json_number(value: Any) -> float | None:
    """A figure for strict JSON: None where it is undefined (None or NaN)."""
    return None if is_missing(value) else float(value)


def format_ci(point: float | None, low: float | None = None, high: float | None = None, digits: int = 3) -> str:
    """'0.850 (0.808–0.883)'; the point alone when the interval is undefined; 'n/a' without a point."""
    if is_missing(point):
        return "n/a"
    if is_missing(low) or is_missing(high):
        return f"{point:.{digits}f}"
    return f"{point:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def figure_ci(figures: Mapping[str, Any], key: str, digits: int = 3) -> str:
    """`format_ci` of a flat figure key and its `.low` / `.high` companions (a site's figures)."""
    return format_ci(figures.get(key), figures.get(f"{key}.low"), figures.get(f"{key}.high"), digits)


def md_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown pipe table (pipes inside cells escaped)."""
    def line(cells: Iterable[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])
