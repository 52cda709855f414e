"""The sites' preflight replies (client/preflight.py) as the coordinator's report shows them.

One row per site: cohort sizes, per-class counts of both cohorts, cases without ROI, duplicate
and unreadable images, image size ranges. A count a site left out under its small-number rules
reads "<min_cell"; a cohort below the site's `min_cohort` sent its total only and reads
"withheld".
"""
from __future__ import annotations

from collections.abc import Mapping

from common.formatting import md_table
from common.labels import CLASSES, check_label
from common.preflight_figures import (
    CROSS_COHORT_DUPLICATES,
    DUPLICATES,
    MODALITIES,
    NO_ROI,
    SITE_SUPPRESSED,
    UNREADABLE,
    cohort_key,
)

SUPPRESSED_CELL = "<min_cell"
WITHHELD_CELL = "withheld"
COHORT_COLUMNS = {"train": "train", "heldout": "held-out"}
LEGEND = (f"{SUPPRESSED_CELL}: fewer cases than the site's min_cell (but some), left out; "
          f"{WITHHELD_CELL}: a cohort below the site's min_cohort sends its total only; "
          "duplicates: groups of identical image files (across cohorts: a case of the held-out cohort "
          "shares an image with one of the training cohort); sizes in pixels, width x height, min-max.")


def _int(value: float) -> int:
    return int(round(value))


def _count_cell(figures: Mapping[str, float], cohort: str, what: str) -> int | str:
    """A cohort's count as the table shows it: the number, '<min_cell' or 'withheld'."""
    key = cohort_key(cohort, what)
    if key in figures:
        return _int(figures[key])
    if figures.get(cohort_key(cohort, "n"), 0) == 0:
        return 0  # no case in the cohort: every count is zero
    return SUPPRESSED_CELL if cohort_key(cohort, "suppressed") in figures else WITHHELD_CELL


def _site_cell(figures: Mapping[str, float], key: str) -> int | str:
    if key in figures:
        return _int(figures[key])
    return SUPPRESSED_CELL if SITE_SUPPRESSED in figures else WITHHELD_CELL


def _size_cell(figures: Mapping[str, float], modality: str) -> str:
    keys = [f"pre.{modality}.{dim}.{stat}" for dim in ("width", "height") for stat in ("min", "max")]
    if all(k in figures for k in keys):
        w0, w1, h0, h1 = (_int(figures[k]) for k in keys)
        return f"{w0}-{w1} x {h0}-{h1}"
    return "n/a" if SITE_SUPPRESSED in figures else WITHHELD_CELL  # shared, but no readable image


def summary_table(replies: dict[str, dict[str, float]]) -> list[dict]:
    """One row per site (sorted by name); values are ints or display strings."""
    rows = []
    for site in sorted(replies):
        figures = replies[site]
        row: dict = {"site": site}
        for cohort, title in COHORT_COLUMNS.items():
            row[f"{title} n"] = _int(figures.get(cohort_key(cohort, "n"), 0))
        for cohort, title in COHORT_COLUMNS.items():
            for name in CLASSES:
                row[f"{title} {name}"] = _count_cell(figures, cohort, f"class.{name}")
        row["no ROI"] = _site_cell(figures, NO_ROI)
        row["duplicates"] = _int(figures.get(DUPLICATES, 0))
        row["duplicates across cohorts"] = _int(figures.get(CROSS_COHORT_DUPLICATES, 0))
        row["unreadable"] = _int(figures.get(UNREADABLE, 0))
        for modality in MODALITIES:
            row[f"{modality.upper()} size"] = _size_cell(figures, modality)
        rows.append(row)
    return rows


def markdown_table(replies: dict[str, dict[str, float]], legend: bool = True) -> str:
    """The summary as a Markdown pipe table, followed by a line saying what its marks mean."""
    rows = summary_table(replies)
    if not rows:
        return "No site sent a preflight."
    header = list(rows[0])
    table = md_table(header, [[row[h] for h in header] for row in rows])
    return f"{table}\n\n{LEGEND}" if legend else table


def missing_classes(replies: dict[str, dict[str, float]], required: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per site, the classes it is meant to train (`required`: site -> class names) that have no
    training case; only sites with at least one such class are listed, classes in CLASSES order.

    A class is missing when the site's training cohort is empty or its count is 0. A count left
    out under min_cell is not missing (it has cases); a cohort withheld under min_cohort cannot
    be judged and is not listed, nor is a site without a reply. An unknown class name in
    `required` raises ValueError.
    """
    out: dict[str, list[str]] = {}
    for site, classes in required.items():
        wanted = {check_label(c) for c in classes}  # a misspelt class must not pass as "not missing"
        figures = replies.get(site)
        if figures is None or cohort_key("train", "n") not in figures:
            continue
        empty = figures[cohort_key("train", "n")] == 0
        missing = [c for c in CLASSES if c in wanted and (empty or figures.get(cohort_key("train", f"class.{c}")) == 0)]
        if missing:
            out[site] = missing
    return out


__all__ = ["LEGEND", "markdown_table", "missing_classes", "summary_table"]
