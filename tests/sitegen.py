"""Small hand-made sites for unit tests: simple images whose class is visible, written as manifests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from common.labels import CLASSES


def draw_case(label: str, rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A grey BUS with a class-shaped blob and a CDFI whose colour layout depends on the class."""
    k = CLASSES.index(label)
    bus = rng.integers(40, 80, (size, size), dtype=np.uint8)
    centre = (size // 2 + int(rng.integers(-4, 5)), size // 2 + int(rng.integers(-4, 5)))
    axes = (size // 3, size // 3) if k >= 2 else (size // 3, size // 6)  # malignant nodes are round
    cv2.ellipse(bus, centre, axes, 0, 0, 360, int(200 - 40 * (k % 2)), -1)
    cdfi = cv2.cvtColor(bus, cv2.COLOR_GRAY2BGR)
    colour = (0, 0, 255) if k % 2 == 0 else (255, 0, 0)  # BGR: red or blue flow
    if k in (0, 2):
        cv2.line(cdfi, (centre[0], centre[1] - axes[1]), (centre[0], centre[1] + axes[1]), colour, 3)
    else:
        cv2.ellipse(cdfi, centre, axes, 0, 0, 360, colour, 3)
    return bus, cdfi


def write_site(root: Path, counts: dict[str, int], seed: int = 0, start: str = "2020-01-01",
               roi: bool = True) -> Path:
    """Write images and a manifest.csv under `root`; returns the manifest path."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, day = [], pd.Timestamp(start)
    for label, n in counts.items():
        for i in range(n):
            case_id = f"{label[:3]}-{i:03d}"
            bus, cdfi = draw_case(label, rng)
            cv2.imwrite(str(root / "images" / f"{case_id}_bus.png"), bus)
            cv2.imwrite(str(root / "images" / f"{case_id}_cdfi.png"), cdfi)
            row = {"case_id": case_id, "bus_path": f"images/{case_id}_bus.png",
                   "cdfi_path": f"images/{case_id}_cdfi.png", "label": label,
                   "exam_date": (day + pd.Timedelta(days=len(rows) * 7)).date().isoformat(),
                   "scanner": "test", "site_note": "kept"}
            if roi:
                row.update(roi_x=8, roi_y=8, roi_w=80, roi_h=80)
            rows.append(row)
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
