"""A site's `manifest.csv`: one row per case, image paths relative to the manifest's folder.

Reading and row parsing only; `common.validation.load_cases` checks a manifest and returns its cases.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.errors import ClafedError

REQUIRED_COLUMNS = ("case_id", "bus_path", "cdfi_path", "label", "exam_date")
ROI_COLUMNS = ("roi_x", "roi_y", "roi_w", "roi_h")
# Optional: the index node's mask beside the images (as `clafed synth` writes it, or a site's own segmentations).
NODE_MASK_COLUMN = "node_mask_path"


class ManifestError(ClafedError, ValueError):
    """A manifest cannot be used; the message lists every problem with its case id.

    `count` is how many problems (what a site may tell the server, without the ids).
    """

    def __init__(self, message: str, count: int = 1) -> None:
        super().__init__(message)
        self.count = count


@dataclass(frozen=True)
class Case:
    """One lymph node: its two images, label (None when unlabeled) and metadata."""

    case_id: str
    bus_path: Path
    cdfi_path: Path
    label: str | None
    exam_date: str
    scanner: str = ""
    roi: tuple[int, int, int, int] | None = None
    extras: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # The index node's mask (grey PNG of the BUS image's size, node > 0) when the manifest's
    # optional `node_mask_path` gives one: an auxiliary training target, never required.
    node_mask: Path | None = None

    @property
    def date(self) -> dt.date:
        """The exam date as a date (manifests are validated before this is used)."""
        return dt.date.fromisoformat(self.exam_date)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a manifest as strings (empty cells become ''), checking the required columns."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not a readable CSV ({err})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}; "
                            f"required: {', '.join(REQUIRED_COLUMNS)}")
    partial_roi = [c for c in ROI_COLUMNS if c in table.columns]
    if partial_roi and len(partial_roi) != len(ROI_COLUMNS):
        raise ManifestError(f"{path}: ROI needs all of {', '.join(ROI_COLUMNS)}, found only {', '.join(partial_roi)}")
    return table.apply(lambda col: col.str.strip())


def row_to_case(row: dict[str, str], root: Path) -> Case:
    """Turn a (validated) manifest row into a Case with absolute image paths."""
    roi = None
    if all(row.get(c, "") != "" for c in ROI_COLUMNS):
        x, y, w, h = (int(float(row[c])) for c in ROI_COLUMNS)
        roi = (x, y, w, h)
    known = set(REQUIRED_COLUMNS) | set(ROI_COLUMNS) | {"scanner"}
    return Case(
        case_id=row["case_id"],
        bus_path=(root / row["bus_path"]).resolve(),
        cdfi_path=(root / row["cdfi_path"]).resolve(),
        label=row["label"].lower() or None,
        exam_date=row["exam_date"],
        scanner=row.get("scanner", ""),
        roi=roi,
        extras={k: v for k, v in row.items() if k not in known},
        node_mask=(root / row[NODE_MASK_COLUMN]).resolve() if row.get(NODE_MASK_COLUMN, "") else None,
    )
