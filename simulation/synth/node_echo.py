"""Inside the node: cortex, hilum, reticulation, necrosis, calcifications, capsule and oedema.

Everything is painted on a window around the node (not the whole field) to keep rendering fast.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth.features import NodeFeatures
from simulation.synth.fields import sigmoid, signed_distance, smooth_noise
from simulation.synth.node import NodeShape

NECROSIS_ECHO = 0.004  # liquefied necrosis is anechoic apart from faint debris
HILUM_ECHO_DB = (3.0, 6.0)  # the fatty hilum is brighter than perinodal fat


@dataclass(frozen=True)
class Window:
    """A rectangle of the field: rows y0:y1, columns x0:x1."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index of the window in a field-sized array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


def node_window(shape: NodeShape, field_shape: tuple[int, int], margin_px: float) -> Window:
    """The node's bounding box grown by `margin_px`, clipped to the field."""
    x0, y0, x1, y1 = shape.bbox()
    return Window(int(max(0, y0 - margin_px)), int(min(field_shape[0], y1 + margin_px + 1)),
                  int(max(0, x0 - margin_px)), int(min(field_shape[1], x1 + margin_px + 1)))


@dataclass(frozen=True)
class NodeMaps:
    """The node's echo, attenuation and masks on its window."""

    window: Window
    echo: np.ndarray  # node tissue echo (meaningful where `soft` > 0)
    alpha: np.ndarray  # residual attenuation inside the node, dB/mm
    soft: np.ndarray  # 0..1 node membership (blurred for ill-defined margins)
    necrosis: np.ndarray  # 0..1
    halo: np.ndarray  # 0..1 oedema zone around the node
    capsule: np.ndarray  # echo added along a sharp capsule
    calcification: np.ndarray  # echo of calcified foci (0 elsewhere)
    hilum_entry: float  # node-frame angle where the hilum (and hilar vessels) open
    hilum_centre: tuple[float, float]  # node-normalised (u, v) of the hilum's centre


@dataclass(frozen=True)
class Grid:
    """Node-frame coordinates of every window pixel (boundary at rho = 1)."""

    u: np.ndarray  # along the long axis
    v: np.ndarray
    rho: np.ndarray


def node_grid(shape: NodeShape, window: Window) -> Grid:
    """Node-frame coordinates of the window's pixels."""
    ys, xs = np.mgrid[window.y0:window.y1, window.x0:window.x1].astype(np.float32)
    return Grid(*shape.frame(xs, ys))


def _hilum(f: NodeFeatures, grid: Grid, rng: np.random.Generator, px_mm: float):
    """Soft hilum mask, its opening angle and centre; an eccentric hilum is pushed to one side."""
    side = float(rng.choice([-1.0, 1.0]))
    entry = side * np.pi / 2 + rng.normal(0, 0.35)
    if f.hilum == "absent":
        return np.zeros_like(grid.rho), float(entry), (0.0, 0.0)
    if f.hilum == "present":
        u0, v0 = rng.uniform(-0.15, 0.15), side * rng.uniform(0.0, 0.12)
        hl, hw = rng.uniform(0.45, 0.7), rng.uniform(0.2, 0.34)
    else:
        u0, v0 = rng.uniform(-0.3, 0.3), side * rng.uniform(0.35, 0.55)
        hl, hw = rng.uniform(0.25, 0.45), rng.uniform(0.1, 0.2)
    wobble = 0.25 * smooth_noise(rng, grid.rho.shape, 1.2 * px_mm)
    body = ((grid.u - u0) / hl) ** 2 + ((grid.v - v0) / hw) ** 2 + wobble
    eu, ev = np.cos(entry), np.sin(entry)
    # Channel from the hilum's centre out to the capsule: the hilum opens to perinodal fat.
    t = np.clip((grid.u - u0) * eu + (grid.v - v0) * ev, 0.0, 1.5)
    off = np.hypot(grid.u - u0 - t * eu, grid.v - v0 - t * ev) / (hw * (0.3 + 0.3 * t))  # widens to the notch
    mask = np.maximum(sigmoid((1 - body) * 6.0), sigmoid((1 - off ** 2 - wobble) * 6.0))
    return mask, float(entry), (float(u0), float(v0))


def _necrosis(f: NodeFeatures, grid: Grid, rng: np.random.Generator, px_mm: float) -> np.ndarray:
    """Irregular anechoic areas; tuberculous caseation is ill-defined, cystic metastases sharper."""
    mask = np.zeros_like(grid.rho)
    edge = 0.2 if f.ill_defined or f.label == "tuberculous" else 0.07
    for _ in range(f.necrosis):
        ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.55)
        cu, cv = rad * np.cos(ang), rad * np.sin(ang)
        size = f.necrosis_size * rng.uniform(0.7, 1.3)
        wobble = 0.35 * smooth_noise(rng, grid.rho.shape, 1.0 * px_mm)
        dist = np.hypot(grid.u - cu, grid.v - cv) / size + wobble
        mask = np.maximum(mask, sigmoid((1 - dist) / edge))
    return mask * sigmoid((0.9 - grid.rho) / 0.05)


def _calcifications(f: NodeFeatures, shape: NodeShape, window: Window, rng, px_mm: float):
    """Echo of bright foci inside the node and the attenuation they cause (shadowing)."""
    echo = np.zeros(window.shape, np.float32)
    radius_mm = (0.6, 1.1) if f.coarse_calcification else (0.15, 0.35)
    thetas = rng.uniform(0, 2 * np.pi, f.calcifications)
    points = shape.point(thetas, rng.uniform(0.1, 0.8, f.calcifications) ** 0.7)
    points -= np.array([window.x0, window.y0], np.float32)
    for (x, y), r in zip(points, rng.uniform(*radius_mm, f.calcifications) * px_mm):
        axes = (max(16, int(r * 16)), max(16, int(r * 16 * rng.uniform(0.35, 1.0))))  # flakes, not balls
        cv2.ellipse(echo, (int(x * 16), int(y * 16)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1,
                    cv2.LINE_8, 4)
    strength = 40.0 if f.coarse_calcification else 25.0
    alpha = echo * (8.0 if f.coarse_calcification else 1.5)
    return echo * strength, alpha


def _cortex(f: NodeFeatures, grid: Grid, rng: np.random.Generator, px_mm: float) -> np.ndarray:
    """Cortex echo with patchy heterogeneity and, where present, a micronodular reticulation."""
    base = 10 ** (f.cortex_db / 10)
    echo = base * np.exp(1.1 * f.heterogeneity * smooth_noise(rng, grid.rho.shape, 1.6 * px_mm))
    if f.reticulation > 0:
        net = smooth_noise(rng, grid.rho.shape, 0.55 * px_mm)
        strands = np.exp(-(net / 0.3) ** 2)  # zero crossings of band-limited noise form a mesh
        echo = echo * (1 - 0.6 * f.reticulation) + f.reticulation * strands * max(4 * base, 0.35)
    return echo.astype(np.float32)


def _margin(f: NodeFeatures, shape: NodeShape, window: Window, rng, px_mm: float):
    """Signed distance to the boundary (mm), roughened where the margin is ill-defined."""
    poly = shape.polygon() - np.array([window.x0, window.y0], np.float32)
    mask = np.zeros(window.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    sd = signed_distance(mask) / px_mm
    if f.ill_defined:
        sd = sd + 0.7 * smooth_noise(rng, window.shape, 0.5 * px_mm)
    width = rng.uniform(0.5, 0.9) if f.ill_defined else rng.uniform(0.08, 0.15)
    return sd, width


def _halo(f: NodeFeatures, sd: np.ndarray, rng: np.random.Generator, px_mm: float) -> np.ndarray:
    """Oedema: a ragged zone of echogenic fat outside the node."""
    if f.edema <= 0:
        return np.zeros_like(sd)
    ragged = 1 + 0.4 * smooth_noise(rng, sd.shape, 1.5 * px_mm)
    return sigmoid((f.edema * ragged - sd) / 0.8) * sigmoid(sd / 0.4)


def node_maps(f: NodeFeatures, shape: NodeShape, field_shape: tuple[int, int],
              rng: np.random.Generator, px_mm: float) -> NodeMaps:
    """Paint the node's interior and surroundings on a window of the field."""
    window = node_window(shape, field_shape, (3.0 + 1.6 * f.edema) * px_mm)
    grid = node_grid(shape, window)
    sd, width = _margin(f, shape, window, rng, px_mm)
    hilum, entry, centre = _hilum(f, grid, rng, px_mm)
    necrosis = _necrosis(f, grid, rng, px_mm)
    hilum = hilum * (1 - necrosis)
    fat = 10 ** (rng.uniform(*HILUM_ECHO_DB) / 10)
    lines = smooth_noise(rng, window.shape, 1.5 * px_mm, 0.3 * px_mm)
    hilum_echo = fat * (1 + 1.5 * np.exp(-(lines / 0.3) ** 2))  # fatty hilum with linear echoes
    echo = _cortex(f, grid, rng, px_mm) * (1 - hilum) + hilum_echo * hilum
    echo = echo * (1 - necrosis) + NECROSIS_ECHO * necrosis
    # Less attenuating than fat: solid lymphoid tissue (most of all lymphoma) and fluid enhance below.
    cortex_alpha = -0.14 if f.label == "lymphoma" else -0.07
    calc_echo, calc_alpha = _calcifications(f, shape, window, rng, px_mm)
    alpha = cortex_alpha * (1 - hilum) - 0.28 * necrosis + calc_alpha
    capsule = (0.6 if f.ill_defined else 3.0) * np.exp(-(sd / 0.15) ** 2) * (sd > -0.5)
    return NodeMaps(window, echo, alpha.astype(np.float32), sigmoid(-sd / width), necrosis,
                    _halo(f, sd, rng, px_mm), capsule.astype(np.float32), calc_echo, entry, centre)
