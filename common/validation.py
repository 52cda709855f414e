"""Checks of a manifest, row by row (every problem is reported with its case id), and `load_cases`,
which returns the cases of a manifest only when it has none."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.config import MIN_IMAGE_SIZE
from common.imaging import MAX_PIXELS, MIN_COLOUR_FRACTION, ImageError, colour_fraction, image_size, read_image
from common.labels import CLASS_INDEX
from common.manifest import NODE_MASK_COLUMN, ROI_COLUMNS, Case, ManifestError, read_table, row_to_case

DEFAULT_MIN_SIZE = MIN_IMAGE_SIZE


@dataclass(frozen=True)
class Problem:
    """One problem of one case (or of the whole file when case_id is empty)."""

    case_id: str
    message: str

    def __str__(self) -> str:
        return f"case {self.case_id}: {self.message}" if self.case_id else self.message


def validate_manifest(path: str | Path, min_size: int = DEFAULT_MIN_SIZE, max_pixels: int = MAX_PIXELS) -> list[Problem]:
    """Check a manifest file; a file-level problem (missing, wrong columns) is the only entry."""
    path = Path(path)
    try:
        table = read_table(path)
    except ValueError as err:
        return [Problem("", str(err))]
    return validate_table(table, path.parent, min_size=min_size, max_pixels=max_pixels)


def validate_table(table: pd.DataFrame, root: Path, min_size: int = DEFAULT_MIN_SIZE,
                   check_images: bool = True, max_pixels: int = MAX_PIXELS) -> list[Problem]:
    """Check every row of a manifest table whose image paths are relative to `root`."""
    problems: list[Problem] = []
    if table.empty:
        return [Problem("", "the manifest lists no cases (a header only)")]
    counts = table["case_id"].value_counts()
    for number, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        case = row["case_id"] or f"<line {number}>"
        if not row["case_id"]:
            problems.append(Problem(case, "empty case_id"))
        elif counts[row["case_id"]] > 1:
            problems.append(Problem(case, f"duplicate case_id (line {number})"))
        problems += [Problem(case, m) for m in _check_fields(row)]
        if check_images:
            problems += [Problem(case, m) for m in _check_images(row, root, min_size, max_pixels)]
    return problems


def _check_fields(row: dict[str, str]) -> list[str]:
    messages = []
    if row["label"] and row["label"].lower() not in CLASS_INDEX:
        messages.append(f"unknown label {row['label']!r} (expected one of {', '.join(CLASS_INDEX)} or empty)")
    try:
        dt.date.fromisoformat(row["exam_date"])
    except ValueError:
        messages.append(f"bad exam_date {row['exam_date']!r} (expected YYYY-MM-DD)")
    roi = [row.get(c, "") for c in ROI_COLUMNS]
    if any(roi):
        try:
            x, y, w, h = (float(v) for v in roi)
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                messages.append(f"ROI {','.join(roi)} is not four finite numbers")
            elif w <= 0 or h <= 0 or x < 0 or y < 0:
                messages.append(f"ROI {','.join(roi)} has a negative origin or an empty size")
        except ValueError:
            messages.append(f"ROI {','.join(roi)} is not four numbers")
    return messages


def _check_images(row: dict[str, str], root: Path, min_size: int, max_pixels: int) -> list[str]:
    messages = [f"empty {column}" for column in ("bus_path", "cdfi_path") if not row[column]]
    if messages:
        return messages
    try:
        x, y, w, h = (float(row[c]) for c in ROI_COLUMNS)
        roi = (x, y, w, h) if all(math.isfinite(v) for v in (x, y, w, h)) else None
    except (KeyError, ValueError):
        roi = None  # absent ROI is allowed; malformed ones are reported by _check_fields
    images, problems = image_problems(root / row["bus_path"], root / row["cdfi_path"], roi, min_size, max_pixels)
    if row.get(NODE_MASK_COLUMN, ""):
        problems += _mask_problems(root / row[NODE_MASK_COLUMN], images[0].shape if images else None)
    return problems


def _mask_problems(path: Path, bus_shape: tuple[int, ...] | None) -> list[str]:
    """An optional node mask must be an image of its BUS image's size (read from its header)."""
    size = image_size(path)
    if size is None:
        return [f"{NODE_MASK_COLUMN}: {path} is missing or not an image (fix the path or leave the cell empty)"]
    if bus_shape is not None and size != (bus_shape[1], bus_shape[0]):
        return [f"{NODE_MASK_COLUMN}: {path} is {size[0]}x{size[1]} px, its BUS image {bus_shape[1]}x{bus_shape[0]} "
                "(a mask must match its image)"]
    return []


def image_problems(bus_path: Path, cdfi_path: Path, roi: tuple[float, float, float, float] | None,
                   min_size: int, max_pixels: int = MAX_PIXELS) -> tuple[list[np.ndarray], list[str]]:
    """Read a case's two images and check what the model needs: readable, not too small or too
    large, colour in the CDFI, the ROI inside both. Returns the images read and every problem,
    each naming its file (`validate`, a site's loading and `predict` share these checks)."""
    images, problems = [], []
    for column, path in (("bus_path", bus_path), ("cdfi_path", cdfi_path)):
        try:
            image = read_image(path, max_pixels)
        except ImageError as err:
            problems.append(f"{column}: {err}")
            continue
        images.append(image)
        problems += decoded_image_problems(column, str(path), image, roi, min_size)
    return images, problems


def decoded_image_problems(column: str, name: str, image: np.ndarray, roi: tuple[float, float, float, float] | None,
                           min_size: int) -> list[str]:
    """What makes one decoded image of a case unusable (`column`: bus_path or cdfi_path; `name`
    names the file or upload in the message)."""
    problems = []
    if min(image.shape[:2]) < min_size:
        problems.append(f"{column}: image too small: {name} ({image.shape[1]}x{image.shape[0]} px, "
                        f"minimum {min_size} px per side)")
    if column == "cdfi_path" and colour_fraction(image) < MIN_COLOUR_FRACTION:
        problems.append(f"cdfi_path: no Doppler colour at all in {name} (a B-mode image?)")
    if roi is not None:
        x, y, w, h = roi
        if x + w > image.shape[1] or y + h > image.shape[0]:
            problems.append(f"ROI {x:g},{y:g},{w:g},{h:g} lies outside the {column} image {name} "
                            f"({image.shape[1]}x{image.shape[0]} px)")
    return problems


def load_cases(path: str | Path, check_images: bool = True, min_size: int = DEFAULT_MIN_SIZE,
               max_pixels: int = MAX_PIXELS) -> list[Case]:
    """Validate a manifest and return its cases; raise ManifestError listing every problem."""
    path = Path(path)
    table = read_table(path)
    problems = validate_table(table, path.parent, min_size=min_size, check_images=check_images,
                              max_pixels=max_pixels)
    if problems:
        listing = "\n".join(f"  {p}" for p in problems)
        raise ManifestError(f"{path}: {len(problems)} problem(s); fix them or run `clafed validate {path}`:\n{listing}",
                            count=len(problems))
    return [row_to_case(row, path.parent) for row in table.to_dict("records")]
