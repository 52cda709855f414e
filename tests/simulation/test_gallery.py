"""The gallery: one row per class, one column per scanner."""
from __future__ import annotations

import matplotlib.image

from simulation.synth.gallery import draw_gallery, gallery_cases


def test_gallery_covers_classes_and_scanners(tmp_path):
    cases = gallery_cases(0, ["orion-m", "pulsar-s"])
    assert len(cases) == 8 and {label for label, _ in cases} == {"reactive", "tuberculous", "lymphoma", "metastatic"}

    path = draw_gallery(0, tmp_path / "g.png", ["orion-m"])

    height, width = matplotlib.image.imread(path).shape[:2]
    assert height > width  # 4 rows x 1 column
