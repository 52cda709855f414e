"""Neck soft tissue around the node: skin, subcutaneous fat, muscle, fascia and deep vessels.

Echo levels are linear backscatter relative to fat (1.0); attenuation is what the scanner's time-
gain compensation leaves over, in dB per mm (round trip), relative to fat.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth.fields import gaussian_blur, sigmoid, smooth_noise

MUSCLE_ECHO = 0.22  # the sternocleidomastoid is hypoechoic to fat, with echogenic fibrils


@dataclass(frozen=True)
class Tissue:
    """Echo and residual attenuation maps of the field without the nodes."""

    echo: np.ndarray
    alpha: np.ndarray


def _interface(rng: np.random.Generator, width: int, base_px: float, wobble_px: float) -> np.ndarray:
    """A gently wavy, slightly sloping interface depth (px) per column."""
    wobble = smooth_noise(rng, (1, width), sigma_x=width / 6.0)[0] * wobble_px
    slope = rng.uniform(-0.06, 0.06) * (np.arange(width) - width / 2)
    return (base_px + wobble + slope).astype(np.float32)


def _band(rows: np.ndarray, top: np.ndarray, bottom: np.ndarray, soft: float) -> np.ndarray:
    """Soft indicator (rows x cols) of top <= y < bottom."""
    return sigmoid((rows - top[None, :]) / soft) * sigmoid((bottom[None, :] - rows) / soft)


def _streaks(rng: np.random.Generator, shape: tuple[int, int], px_per_mm: float, length_mm: float,
             thickness_mm: float, density: float) -> np.ndarray:
    """Thin elongated echogenic lines (fat septa, muscle fibrils) as a 0..1 map."""
    noise = smooth_noise(rng, shape, length_mm * px_per_mm, thickness_mm * px_per_mm)
    return np.exp(-(noise / density) ** 2).astype(np.float32)


def _interfaces(rng: np.random.Generator, shape: tuple[int, int], px_mm: float,
                node_top: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depths (px per column) of skin end, fat end and muscle end, draped over the node."""
    w = shape[1]
    skin = _interface(rng, w, rng.uniform(1.3, 2.2) * px_mm, 0.15 * px_mm)
    fat = skin + _interface(rng, w, rng.uniform(2.0, 5.5) * px_mm, 0.8 * px_mm)
    muscle = fat + _interface(rng, w, rng.uniform(4.0, 9.0) * px_mm, 1.2 * px_mm)
    # A node pushes the muscle up: its lower border runs over the node's top.
    gap = 0.6 * px_mm
    muscle = np.minimum(muscle, gaussian_blur(node_top[None, :], 8.0, 0.1)[0] - gap)
    fat = np.minimum(fat, muscle - 1.0 * px_mm)
    fat = np.maximum(fat, skin + 0.8 * px_mm)
    muscle = np.maximum(muscle, fat + 0.8 * px_mm)
    return skin, fat, muscle


def tissue_maps(rng: np.random.Generator, shape: tuple[int, int], px_mm: float,
                node_top: np.ndarray) -> Tissue:
    """Layered neck tissue; `node_top` is each column's first node row (inf where no node).

    Painted at half resolution and upsampled: tissue varies slowly next to the speckle grain.
    """
    half = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    top = node_top[::2][: half[1]] / 2.0
    small = _tissue_maps(rng, half, px_mm / 2.0, top)
    size = (shape[1], shape[0])
    return Tissue(cv2.resize(small.echo, size, interpolation=cv2.INTER_LINEAR),
                  cv2.resize(small.alpha, size, interpolation=cv2.INTER_LINEAR))


def _tissue_maps(rng: np.random.Generator, shape: tuple[int, int], px_mm: float,
                 node_top: np.ndarray) -> Tissue:
    """tissue_maps at the given resolution."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    skin, fat, muscle = _interfaces(rng, shape, px_mm, node_top)
    soft = 0.25 * px_mm
    in_skin = _band(rows, np.full_like(skin, -10), skin, soft)
    in_fat = _band(rows, skin, fat, soft)
    in_muscle = _band(rows, fat, muscle, soft)
    deep = np.clip(1.0 - in_skin - in_fat - in_muscle, 0.0, 1.0)
    septa = _streaks(rng, shape, px_mm, rng.uniform(3, 6), 0.25, 0.25)
    fibrils = _streaks(rng, shape, px_mm, rng.uniform(4, 8), 0.2, 0.35)
    texture = np.exp(0.35 * smooth_noise(rng, shape, 2.5 * px_mm))
    echo = (in_skin * 2.2 + in_fat * 0.7 * (1 + 3.0 * septa)
            + in_muscle * MUSCLE_ECHO * (1 + 4.0 * fibrils) + deep * 0.9 * texture * (1 + 1.5 * septa))
    for depth_px, strength in ((fat, 5.0), (muscle, 4.0)):
        echo += strength * np.exp(-((rows - depth_px[None, :]) / (0.18 * px_mm)) ** 2)  # fascia
    echo += 8.0 * np.exp(-(rows / (0.25 * px_mm)) ** 2)  # transducer-skin entry echo
    alpha = (in_skin * 0.05 + in_muscle * 0.04).astype(np.float32)
    return Tissue(echo.astype(np.float32), alpha)


def add_deep_vessel(tissue: Tissue, rng: np.random.Generator, px_mm: float,
                    keep_out: np.ndarray) -> Tissue:
    """Add the carotid or jugular vein (anechoic, bright wall) where it overlaps nothing in `keep_out`."""
    h, w = keep_out.shape
    radius = rng.uniform(3.0, 4.5) * px_mm
    squash = rng.uniform(0.55, 1.0)  # the jugular is compressible and often oval
    for _ in range(6):
        cx, cy = rng.uniform(radius, w - radius), rng.uniform(0.55 * h, h - radius)
        y0, y1 = int(max(0, cy - 2 * radius)), int(min(h, cy + 2 * radius))
        x0, x1 = int(max(0, cx - 2 * radius)), int(min(w, cx + 2 * radius))
        if cy + radius < h and not keep_out[y0:y1, x0:x1].any():
            break
    else:
        return tissue
    win = (slice(y0, y1), slice(x0, x1))
    rows, cols = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dist = np.hypot((cols - cx) / radius, (rows - cy) / (radius * squash))
    lumen = sigmoid((1.0 - dist) * radius / (0.2 * px_mm))
    wall = np.exp(-((dist - 1.05) * radius / (0.3 * px_mm)) ** 2)
    echo, alpha = tissue.echo.copy(), tissue.alpha.copy()
    echo[win] = echo[win] * (1 - lumen) + 0.004 * lumen + 3.0 * wall
    alpha[win] = alpha[win] * (1 - lumen) - 0.3 * lumen  # blood attenuates less: enhancement below
    return Tissue(echo, alpha)
