"""Colour Doppler: the colour box, flow painted from vessels, colour maps, blooming and flashes.

Colour appears only inside the box; everything else in a CDFI frame stays exactly grey (R=G=B).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth.fields import fill_polygon, gaussian_blur, smooth_noise
from simulation.synth.vessels import Vessel

# BGR anchors from slow to fast flow: (towards the probe, away from it). Every anchor has channels
# at least 60 apart, so displayed colour is always "coloured" to a chroma test.
COLOUR_MAPS: dict[str, tuple[tuple[tuple[int, int, int], ...], tuple[tuple[int, int, int], ...]]] = {
    "classic": (((0, 0, 100), (0, 0, 230), (40, 210, 255)), ((110, 0, 0), (240, 70, 0), (255, 230, 110))),
    "bright": (((10, 20, 140), (0, 40, 255), (90, 235, 255)), ((140, 20, 10), (255, 110, 20), (255, 250, 160))),
    "deep": (((0, 0, 80), (20, 20, 200), (0, 160, 255)), ((80, 0, 0), (200, 40, 20), (255, 180, 60))),
    "teal": (((0, 0, 110), (0, 30, 235), (60, 190, 255)), ((100, 60, 0), (220, 160, 0), (240, 255, 120))),
    "warm": (((0, 10, 120), (10, 60, 240), (70, 240, 255)), ((120, 10, 30), (250, 60, 60), (255, 200, 200))),
}
WALL_FILTER = 0.07  # slower flow than this fraction of the scale is filtered out (not shown)


@dataclass(frozen=True)
class ColourBox:
    """The Doppler region of interest: a rectangle, or a parallelogram when the beam is steered."""

    polygon: np.ndarray  # (4, 2) field px: top-left, top-right, bottom-right, bottom-left
    steer: float  # beam angle from vertical, radians

    @property
    def beam(self) -> np.ndarray:
        """Unit vector of the beam (pointing into the body)."""
        return np.array([np.sin(self.steer), np.cos(self.steer)], np.float32)


def colour_box(bbox: tuple[float, float, float, float], field_shape: tuple[int, int], steerable: bool,
               rng: np.random.Generator, px_mm: float) -> ColourBox:
    """Place the box around the node with an operator's loose margins, inside the field."""
    x0, y0, x1, y1 = bbox
    w, h = x1 - x0, y1 - y0
    grow = rng.uniform(0.12, 0.55, 4)
    top = max(1.0 * px_mm, y0 - grow[0] * h)
    bottom = min(field_shape[0] - 2.0, y1 + grow[1] * h)
    left, right = max(1.0, x0 - grow[2] * w), min(field_shape[1] - 2.0, x1 + grow[3] * w)
    steer = float(np.deg2rad(rng.choice([-20, 20]))) if steerable and rng.random() < 0.5 else 0.0
    shift = (bottom - top) * np.tan(steer)
    left = max(left, 1.0 - min(shift, 0.0))
    right = min(right, field_shape[1] - 2.0 - max(shift, 0.0))
    poly = np.array([[left, top], [right, top], [right + shift, bottom], [left + shift, bottom]], np.float32)
    return ColourBox(poly, steer)


def colour_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 BGR table for signed velocity -1..1 (index 0 = -1, 255 = +1)."""
    towards, away = COLOUR_MAPS[name]
    lut = np.zeros((256, 3), np.float32)
    v = np.linspace(-1.0, 1.0, 256)
    for anchors, sel in ((towards, v >= 0), (away, v < 0)):
        xs = np.linspace(0.0, 1.0, len(anchors))
        for c in range(3):
            lut[sel, c] = np.interp(np.abs(v[sel]), xs, [a[c] for a in anchors])
    return np.round(lut).astype(np.uint8)


def paint_flow(vessels: list[Vessel], field_shape: tuple[int, int], beam: np.ndarray):
    """Rasterise vessels: signed Doppler velocity (towards the probe > 0) and a 0/1 vessel mask."""
    velocity = np.zeros(field_shape, np.float32)
    mask = np.zeros(field_shape, np.uint8)
    for vessel in vessels:
        pts = vessel.points
        seg = np.diff(pts, axis=0)
        cosine = -(seg @ beam) / (np.linalg.norm(seg, axis=1) + 1e-6)
        # Perpendicular segments still show some colour: real vessels curve within the beam width.
        doppler = vessel.speeds[1:] * np.sign(cosine) * np.maximum(np.abs(cosine), 0.3)
        for p0, p1, value, width in zip(pts[:-1], pts[1:], doppler, vessel.widths[1:]):
            a, b = tuple(np.round(p0 * 16).astype(int)), tuple(np.round(p1 * 16).astype(int))
            thick = max(1, int(round(width)))
            cv2.line(velocity, a, b, float(value), thick, cv2.LINE_8, 4)
            cv2.line(mask, a, b, 1, thick, cv2.LINE_8, 4)
    return velocity, mask


@dataclass(frozen=True)
class DopplerLook:
    """Per-frame colour settings: blooming, noise and flash artefacts."""

    bleed: float  # px of colour blooming beyond the vessel wall
    speckle: float  # relative velocity noise
    flash: float  # 0..1 chance-weighted amount of motion flash in the box
    dots: float  # density of isolated noise specks


def _flash(shape: tuple[int, int], look: DopplerLook, rng: np.random.Generator):
    """Motion flash: a faint patch of low-velocity colour (tissue or patient movement)."""
    patch = smooth_noise(rng, shape, 14.0) > 2.2 - look.flash
    tint = 0.12 * np.sign(rng.normal()) * (1 + 0.5 * smooth_noise(rng, shape, 3.0))
    return patch, tint


def _specks(shape: tuple[int, int], density: float, rng: np.random.Generator):
    """Isolated colour noise pixels (clutter that passes the wall filter) and their velocities."""
    # At least a few dozen: real frames always show some clutter, and a CDFI frame without any
    # colour would be taken for a B-mode image by `clafed validate`.
    count = int(rng.poisson(density * shape[0] * shape[1])) + 60
    mask = np.zeros(shape, np.uint8)
    values = np.zeros(shape, np.float32)
    ys, xs = rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)
    speeds = rng.uniform(0.1, 0.4, count) * rng.choice([-1.0, 1.0], count)  # above the wall filter
    for x, y, v in zip(xs, ys, speeds):
        size = int(rng.integers(0, 2))
        cv2.rectangle(mask, (int(x), int(y)), (int(x) + size, int(y) + size), 1, -1)
        cv2.rectangle(values, (int(x), int(y)), (int(x) + size, int(y) + size), float(v), -1)
    return mask.astype(bool), values


def _colour_window(velocity, mask, inside, look: DopplerLook, rng: np.random.Generator):
    """Displayed velocity and visibility on the box's bounding window."""
    presence = gaussian_blur(mask.astype(np.float32), look.bleed)
    shown = gaussian_blur(velocity, look.bleed) / np.maximum(presence, 0.5)
    shown *= 1 + look.speckle * smooth_noise(rng, velocity.shape, 1.2)
    visible = presence > 0.22  # blooming: colour spills a little past the vessel wall
    visible &= smooth_noise(rng, velocity.shape, 2.5) > -1.3  # slow segments drop out: gaps
    if look.flash > 0:
        patch, tint = _flash(velocity.shape, look, rng)
        shown = np.where(patch & ~visible, tint, shown)
        visible |= patch
    specks, values = _specks(velocity.shape, look.dots, rng)
    shown = np.where(specks & ~visible, values, shown)
    visible |= specks
    shown = np.mod(shown + 1.0, 2.0) - 1.0  # aliasing: faster than the scale wraps round
    return shown, visible & (np.abs(shown) > WALL_FILTER) & inside.astype(bool)


def colour_field(velocity: np.ndarray, mask: np.ndarray, inside: np.ndarray, look: DopplerLook,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Displayed signed velocity and where colour shows (bool), clipped to the colour box."""
    x, y, w, h = cv2.boundingRect(inside.astype(np.uint8))
    win = (slice(y, y + h), slice(x, x + w))
    shown = np.zeros(velocity.shape, np.float32)
    visible = np.zeros(velocity.shape, bool)
    shown[win], visible[win] = _colour_window(velocity[win], mask[win], inside[win], look, rng)
    return shown, visible


def box_mask(box: ColourBox, field_shape: tuple[int, int]) -> np.ndarray:
    """0/1 mask strictly inside the box outline (the outline itself is drawn grey)."""
    inner = fill_polygon(field_shape, box.polygon)
    return cv2.erode(inner, np.ones((5, 5), np.uint8))


def apply_colour(grey: np.ndarray, shown: np.ndarray, visible: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """BGR frame: grey everywhere, LUT colour where `visible`."""
    frame = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    index = np.clip(np.round((shown + 1.0) * 127.5), 0, 255).astype(np.uint8)
    frame[visible] = lut[index[visible]]
    return frame
