"""The lymph node's geometry: an irregular closed contour and node-centred coordinates."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth.fields import fill_polygon

_TABLE = 1024  # angular resolution of the boundary look-up in `frame`


@dataclass(frozen=True)
class NodeShape:
    """An ellipse whose radius is modulated by a few boundary harmonics (lobulation)."""

    cx: float  # centre, field px
    cy: float
    a: float  # semi long axis, px
    b: float  # semi short axis, px
    tilt: float  # radians, long axis against the skin line
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k = 1..K

    def radius(self, theta: np.ndarray) -> np.ndarray:
        """Boundary radius multiplier r(theta) in node-normalised units (1 = the ellipse)."""
        theta = np.asarray(theta, np.float32)
        r = np.ones_like(theta)
        for k, (amp, phase) in enumerate(self.harmonics, start=1):
            r += np.float32(amp) * np.cos(k * theta + np.float32(phase))
        return np.clip(r, 0.6, 1.5)

    def point(self, theta: np.ndarray, rho: np.ndarray | float) -> np.ndarray:
        """Field px (n, 2) of node-frame polar coordinates (rho = 1 on the boundary)."""
        theta = np.asarray(theta, np.float32)
        scale = np.asarray(rho, np.float32) * self.radius(theta)
        u, v = self.a * scale * np.cos(theta), self.b * scale * np.sin(theta)
        c, s = np.cos(self.tilt), np.sin(self.tilt)
        return np.stack([self.cx + u * c - v * s, self.cy + u * s + v * c], axis=-1)

    def polygon(self, n: int = 256) -> np.ndarray:
        """The boundary as an (n, 2) float polygon in field px."""
        return self.point(np.linspace(0, 2 * np.pi, n, endpoint=False), 1.0)

    def frame(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node-normalised coordinates (u, v, rho) of field points: the boundary is at rho = 1."""
        c, s = np.float32(np.cos(self.tilt)), np.float32(np.sin(self.tilt))
        dx, dy = xs - np.float32(self.cx), ys - np.float32(self.cy)
        u, v = (dx * c + dy * s) / np.float32(self.a), (dy * c - dx * s) / np.float32(self.b)
        # r(theta) from a table of 1024 angles: one arctan per pixel instead of K cosines.
        table = self.radius(np.linspace(0.0, 2 * np.pi, _TABLE + 1, dtype=np.float32))
        length, angle = cv2.cartToPolar(u, v)  # angle in [0, 2 pi)
        inv_r = 1.0 / table[(angle * np.float32(_TABLE / (2 * np.pi))).astype(np.int32)]
        return u * inv_r, v * inv_r, length * inv_r

    def rho_at(self, x: float, y: float) -> float:
        """rho of a single point (plain floats: fast inside the vessel-growing loop)."""
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        u, v = ((x - self.cx) * c + (y - self.cy) * s) / self.a, (-(x - self.cx) * s + (y - self.cy) * c) / self.b
        theta = math.atan2(v, u)
        r = 1.0 + sum(amp * math.cos(k * theta + phase) for k, (amp, phase) in enumerate(self.harmonics, 1))
        return math.hypot(u, v) / min(max(r, 0.6), 1.5)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Binary mask (0/1 uint8) of the node on a field of `shape`."""
        return fill_polygon(shape, self.polygon())

    def bbox(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the boundary in field px."""
        poly = self.polygon(128)
        return (float(poly[:, 0].min()), float(poly[:, 1].min()),
                float(poly[:, 0].max()), float(poly[:, 1].max()))


def random_shape(rng: np.random.Generator, cx: float, cy: float, a: float, b: float, tilt: float,
                 irregularity: float, n_harmonics: int = 9) -> NodeShape:
    """A node contour: low harmonics bend it into an egg, higher ones lobulate it."""
    ks = np.arange(1, n_harmonics + 1)
    amps = irregularity * rng.normal(0.0, 1.0, n_harmonics) / ks ** 0.9
    amps[0] *= 0.5  # k = 1 shifts the centre more than it deforms: keep it small
    phases = rng.uniform(0, 2 * np.pi, n_harmonics)
    return NodeShape(cx, cy, a, b, tilt, tuple((float(x), float(p)) for x, p in zip(amps, phases)))
