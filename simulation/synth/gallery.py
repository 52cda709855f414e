"""A picture of the simulator's range: one row per class, one column per scanner, BUS|CDFI pairs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.labels import CLASSES
from simulation.synth.cohort import CasePlan
from simulation.synth.render import RenderedCase, render_case
from simulation.synth.scanners import SCANNERS, SITE_SCANNERS

# Gallery cases are seeded apart from any dataset's cases (site index 0 is never a real site).
_GALLERY_SITE = 0


def gallery_cases(seed: int, scanners: list[str] | None = None) -> dict[tuple[str, str], RenderedCase]:
    """Render one case per (class, scanner) pair."""
    names = scanners or list(SCANNERS)
    site_of = {s.name: site for site, styles in SITE_SCANNERS.items() for s in styles}
    cases = {}
    for i, label in enumerate(CLASSES):
        for name in names:
            number = i * len(SCANNERS) + list(SCANNERS).index(name) + 1
            plan = CasePlan(f"g-{number:04d}", site_of[name], _GALLERY_SITE, number, label, "gallery",
                            "2021-06-01", name)
            cases[(label, name)] = render_case(plan, seed)
    return cases


def pair_image(case: RenderedCase, crop: bool = False) -> np.ndarray:
    """BUS and CDFI side by side as one RGB image (optionally cut to the ROI with a margin)."""
    bus, cdfi = cv2.cvtColor(case.bus, cv2.COLOR_GRAY2RGB), cv2.cvtColor(case.cdfi, cv2.COLOR_BGR2RGB)
    if crop:
        x, y, w, h = case.roi
        x0, y0 = max(0, x - w // 4), max(0, y - h // 4)
        bus, cdfi = bus[y0:y + h + h // 4, x0:x + w + w // 4], cdfi[y0:y + h + h // 4, x0:x + w + w // 4]
    gap = np.full((bus.shape[0], 6, 3), 255, np.uint8)
    return np.hstack([bus, gap, cdfi])


def draw_gallery(seed: int, path: str | Path, scanners: list[str] | None = None, crop: bool = False) -> Path:
    """Write the gallery PNG with matplotlib (Agg) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = scanners or list(SCANNERS)
    cases = gallery_cases(seed, names)
    fig, axes = plt.subplots(len(CLASSES), len(names), figsize=(3.6 * len(names), 1.6 * len(CLASSES) + 0.6),
                             squeeze=False)
    for i, label in enumerate(CLASSES):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.imshow(pair_image(cases[(label, name)], crop))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(label, fontsize=11)
    fig.suptitle(f"clafed synthetic BUS | CDFI pairs (seed {seed})", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
