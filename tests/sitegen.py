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


def draw_spatial_case(label: str, rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A case whose class only its layout shows: global histograms are the same for every class.

    Malignant nodes are round, benign ones oval, at equal area and echo; tuberculous and
    metastatic nodes carry their flow around the rim, reactive and lymphoma ones through the
    centre, with the same amount of red and blue. A histogram model is at chance here.
    """
    k = CLASSES.index(label)
    bus = rng.integers(40, 80, (size, size), dtype=np.uint8)
    centre = (size // 2 + int(rng.integers(-6, 7)), size // 2 + int(rng.integers(-6, 7)))
    scale = rng.uniform(0.8, 1.2)  # sizes vary more than the classes' areas differ (484 vs 496 px^2 / pi)
    axes = tuple(int(round(a * scale)) for a in ((22, 22) if k >= 2 else (31, 16)))
    angle = float(rng.uniform(-20, 20))
    cv2.ellipse(bus, centre, axes, angle, 0, 360, int(rng.integers(150, 190)), -1)
    cdfi = cv2.cvtColor(bus, cv2.COLOR_GRAY2BGR)
    peripheral = k in (1, 3)
    for colour, start in (((0, 0, 255), 0), ((255, 0, 0), 180)):  # red half, blue half
        span = float(rng.uniform(100, 170))
        if peripheral:
            cv2.ellipse(cdfi, centre, axes, angle, start, start + span, colour, 2)
        else:
            inner = (int(axes[0] * 0.6), int(axes[1] * 0.6))  # as many coloured pixels as the rim's
            cv2.ellipse(cdfi, centre, inner, angle, start, start + span, colour, 3)
    return bus, cdfi


def write_site(root: Path, counts: dict[str, int], seed: int = 0, start: str = "2020-01-01",
               roi: bool = True, draw=draw_case, masks: bool = False) -> Path:
    """Write images and a manifest.csv under `root`; returns the manifest path. With `masks`, each
    case also gets its node's mask (the drawn blob: every BUS pixel brighter than the background)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, day = [], pd.Timestamp(start)
    for label, n in counts.items():
        for i in range(n):
            case_id = f"{label[:3]}-{i:03d}"
            bus, cdfi = draw(label, rng)
            cv2.imwrite(str(root / "images" / f"{case_id}_bus.png"), bus)
            cv2.imwrite(str(root / "images" / f"{case_id}_cdfi.png"), cdfi)
            row = {"case_id": case_id, "bus_path": f"images/{case_id}_bus.png",
                   "cdfi_path": f"images/{case_id}_cdfi.png", "label": label,
                   "exam_date": (day + pd.Timedelta(days=len(rows) * 7)).date().isoformat(),
                   "scanner": "test", "site_note": "kept"}
            if roi:
                row.update(roi_x=8, roi_y=8, roi_w=80, roi_h=80)
            if masks:
                cv2.imwrite(str(root / "images" / f"{case_id}_node.png"), np.uint8(bus > 120) * 255)
                row["node_mask_path"] = f"images/{case_id}_node.png"
            rows.append(row)
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
