"""Where the ultrasound field lies on a scanner's screen and how many mm one pixel is."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.synth.features import NodeFeatures
from simulation.synth.scanners import ScannerStyle

# Lateral room kept for the text panel and the depth ruler on each side of the field.
_SIDE_MARGIN = 56


@dataclass(frozen=True)
class Layout:
    """One frame's geometry: screen size, field rectangle, depth and pixel spacing."""

    screen_w: int
    screen_h: int
    field_x: int
    field_y: int
    field_w: int
    field_h: int
    depth_mm: float
    mm_per_px: float

    @property
    def field_shape(self) -> tuple[int, int]:
        """(rows, cols) of the field."""
        return self.field_h, self.field_w

    def px(self, mm: float) -> float:
        """Millimetres to field pixels."""
        return mm / self.mm_per_px


@dataclass(frozen=True)
class Placement:
    """The index node's position and size in mm (depth of centre, lateral offset, semi-axes)."""

    depth_mm: float
    lateral: float  # centre offset from the field centre, fraction of the field width
    semi_long_mm: float
    semi_short_mm: float


def place_node(features: NodeFeatures, style: ScannerStyle, rng: np.random.Generator) -> Placement:
    """Choose the node's depth and lateral position; the long axis fits the probe footprint."""
    semi_long = min(features.long_axis_mm / 2.0, 0.38 * style.probe_width_mm)
    semi_short = semi_long / features.axis_ratio
    depth = float(rng.uniform(semi_short + 5.0, semi_short + 13.0))
    return Placement(depth, float(rng.uniform(-0.12, 0.12)), semi_long, semi_short)


def make_layout(style: ScannerStyle, placement: Placement, rng: np.random.Generator) -> Layout:
    """Pick the shallowest depth preset that shows the node with room below it (or the deepest)."""
    needed = placement.depth_mm + placement.semi_short_mm + 6.0
    fitting = [d for d in style.depths_mm if d >= needed] or [max(style.depths_mm)]
    # Most operators take the first preset that fits; some keep a deeper favourite.
    depth = float(fitting[0] if len(fitting) == 1 or rng.random() < 0.7 else fitting[1])
    mm_per_px = depth / style.field_height
    width = min(int(round(style.probe_width_mm / mm_per_px)), style.screen[0] - 2 * _SIDE_MARGIN)
    left = int(round(style.screen[0] * style.field_center - width / 2))
    left = int(np.clip(left, _SIDE_MARGIN // 2, style.screen[0] - width - _SIDE_MARGIN // 2))
    return Layout(style.screen[0], style.screen[1], left, style.field_top, width, style.field_height,
                  depth, mm_per_px)
