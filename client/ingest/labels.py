"""The site's diagnosis CSV: diagnoses are not in the images, so the site lists them per study.

Columns: a key (`accession_number` or `study_instance_uid`), `label` (one of the four classes, or
empty for an unlabelled case), and optionally `exam_date` (YYYY-MM-DD; default: the header's
StudyDate), `node` (1, 2, ... when a study holds several nodes; default 1), `cohort`, and an ROI
`roi_x, roi_y, roi_w, roi_h` in the stored B-mode frame's pixels. Any other column is refused: the
manifest must not carry a name or an ID through an extra column.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.errors import ClafedError
from common.labels import CLASS_INDEX
from common.manifest import ROI_COLUMNS

KEYS = ("accession_number", "study_instance_uid")
OPTIONAL = ("exam_date", "node", "cohort", *ROI_COLUMNS)


class LabelsError(ClafedError, ValueError):
    """The diagnosis CSV cannot be used; the message lists every problem by row."""


@dataclass(frozen=True)
class LabelRow:
    """One node's diagnosis, as the site gave it."""

    key: str
    node: int
    label: str | None
    exam_date: str | None
    cohort: str
    roi: tuple[int, int, int, int] | None
    row: int  # data row, from 1


def read_labels(path: Path) -> tuple[str, dict[tuple[str, int], LabelRow]]:
    """(key column, {(key, node): LabelRow}); every problem of the file in one LabelsError."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise LabelsError(f"{path}: labels file not found") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LabelsError(f"{path}: not a readable CSV ({err})") from None
    table.columns = [c.strip().lower() for c in table.columns]
    keys = [k for k in KEYS if k in table.columns]
    if not keys:
        raise LabelsError(f"{path}: needs a key column, {' or '.join(KEYS)}, and a label column")
    key = keys[0]
    unknown = [c for c in table.columns if c not in (*KEYS, "label", *OPTIONAL)]
    if unknown or "label" not in table.columns:
        what = f"unknown column(s) {', '.join(unknown)}" if unknown else "no label column"
        raise LabelsError(f"{path}: {what}; allowed: {', '.join((*KEYS, 'label', *OPTIONAL))} "
                          "(names and IDs must not travel into the manifest)")
    partial = [c for c in ROI_COLUMNS if c in table.columns]
    if partial and len(partial) != len(ROI_COLUMNS):
        raise LabelsError(f"{path}: an ROI needs all of {', '.join(ROI_COLUMNS)}, found {', '.join(partial)}")
    rows, problems = {}, []
    for number, raw in enumerate(table.apply(lambda c: c.str.strip()).to_dict("records"), start=1):
        try:
            parsed = _parse(raw, key, number)
        except ValueError as err:
            problems.append(f"row {number}: {err}")
            continue
        if (parsed.key, parsed.node) in rows:
            problems.append(f"row {number}: {key} {parsed.key!r} node {parsed.node} is already in row "
                            f"{rows[(parsed.key, parsed.node)].row}")
        rows[(parsed.key, parsed.node)] = parsed
    if problems:
        raise LabelsError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
    return key, rows


def _parse(raw: dict[str, str], key: str, number: int) -> LabelRow:
    if not raw[key]:
        raise ValueError(f"empty {key}")
    label = raw["label"].lower() or None
    if label is not None and label not in CLASS_INDEX:
        raise ValueError(f"unknown label {raw['label']!r} (expected one of {', '.join(CLASS_INDEX)} or empty)")
    date = raw.get("exam_date") or None
    if date is not None:
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise ValueError(f"bad exam_date {date!r} (expected YYYY-MM-DD)") from None
    node_text = raw.get("node") or "1"
    if not node_text.isdigit() or int(node_text) < 1:
        raise ValueError(f"node must be 1, 2, ... (got {node_text!r})")
    return LabelRow(raw[key], int(node_text), label, date, raw.get("cohort", ""), _roi(raw), number)


def _roi(raw: dict[str, str]) -> tuple[int, int, int, int] | None:
    values = [raw.get(c, "") for c in ROI_COLUMNS]
    if not any(values):
        return None
    try:
        x, y, w, h = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"ROI {','.join(values)} is not four numbers") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0 or x < 0 or y < 0:
        raise ValueError(f"ROI {','.join(values)} needs a non-negative origin and a positive size")
    return int(round(x)), int(round(y)), int(round(w)), int(round(h))
