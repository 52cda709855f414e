"""Node vessels as branching, tapering curves, laid out by vascular pattern.

Each vessel is a polyline in the order blood flows along it; the Doppler painter turns that
direction into red (towards the probe) or blue (away).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.synth.features import NodeFeatures
from simulation.synth.node import NodeShape


@dataclass(frozen=True)
class Vessel:
    """A polyline in flow order, with a width (px) and a speed (1 = the colour scale) per point."""

    points: np.ndarray  # (n, 2) field px
    widths: np.ndarray  # (n,)
    speeds: np.ndarray  # (n,)


@dataclass(frozen=True)
class TreeParams:
    """How a tree grows: step (px), curl (rad per step), branching chance, stop radius."""

    step: float
    curl: float
    p_branch: float
    max_depth: int
    rho_max: float


def _taper(n: int, width: float, speed: float) -> tuple[np.ndarray, np.ndarray]:
    frac = np.linspace(1.0, 0.6, n)
    return width * frac, speed * (0.5 + 0.5 * frac)


def grow(rng: np.random.Generator, shape: NodeShape, start: np.ndarray, heading: float, width: float,
         speed: float, params: TreeParams, out: list[Vessel], depth: int = 0) -> None:
    """Grow one branch by a curling walk inside the node, spawning thinner, slower children."""
    points = [np.asarray(start, np.float32)]
    for i in range(int(rng.integers(5, 14))):
        heading += rng.normal(0.0, params.curl)
        nxt = points[-1] + params.step * np.array([np.cos(heading), np.sin(heading)], np.float32)
        if shape.rho_at(float(nxt[0]), float(nxt[1])) > params.rho_max:
            break
        points.append(nxt)
        if depth < params.max_depth and i >= 1 and rng.random() < params.p_branch:
            side = float(rng.choice([-1.0, 1.0]))
            grow(rng, shape, nxt, heading + side * rng.uniform(0.45, 1.0), width * 0.7, speed * 0.8,
                 params, out, depth + 1)
            heading -= side * 0.25  # the parent bends away from its child, as at real bifurcations
    if len(points) >= 2:
        out.append(Vessel(np.stack(points), *_taper(len(points), width, speed)))


def _vein_twin(vessel: Vessel) -> Vessel:
    """The companion vein: alongside the artery, flowing back, slower."""
    pts = vessel.points
    d = np.gradient(pts, axis=0)
    normal = np.stack([-d[:, 1], d[:, 0]], 1) / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-6)
    shifted = pts + normal * (vessel.widths[:, None] * 1.1 + 0.8)
    return Vessel(shifted[::-1].copy(), vessel.widths[::-1] * 0.9, vessel.speeds[::-1] * 0.55)


def hilar(rng, shape: NodeShape, entry: float, centre: tuple[float, float], flow: float,
          px_mm: float, scale: float = 1.0) -> list[Vessel]:
    """A tree entering through the hilum and branching towards the cortex (artery + vein pairs)."""
    out: list[Vessel] = []
    root = shape.point(np.array([entry]), 1.25)[0]
    hub = shape.point(np.array([np.arctan2(centre[1], centre[0])]), float(np.hypot(*centre)))[0]
    width, speed = (0.26 + 0.12 * flow) * px_mm, 0.55 + 0.35 * flow
    trunk = np.linspace(root, hub, 6) + rng.normal(0, 0.3 * px_mm, (6, 2))
    out.append(Vessel(trunk.astype(np.float32), *_taper(6, width * 1.15, speed)))
    params = TreeParams(1.1 * px_mm, 0.2, 0.16 + 0.1 * flow * scale, 2 if scale < 1 else 3, 0.9)
    n_main = int(np.clip(round(rng.uniform(2, 4) * scale * (0.7 + 0.3 * flow)), 1, 5))
    for k in range(n_main):
        heading = shape.tilt + (0.0 if k % 2 == 0 else np.pi) + rng.normal(0, 0.6)
        grow(rng, shape, hub, heading, width, speed * 0.9, params, out)
    # Only the trunk and the main branches are wide enough to show their companion vein.
    main = [v for v in out if v.widths[0] >= 0.85 * width]
    return out + [_vein_twin(v) for v in main if rng.random() < 0.7]


def peripheral(rng, shape: NodeShape, flow: float, px_mm: float, scale: float = 1.0) -> list[Vessel]:
    """Capsular arcs hugging the boundary plus short vessels piercing the capsule."""
    out: list[Vessel] = []
    n_arcs = int(np.clip(round(rng.uniform(2, 5) * scale * (0.6 + 0.4 * flow)), 1, 7))
    for _ in range(n_arcs):
        start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.7) * rng.choice([-1, 1])
        thetas = start + np.linspace(0, span, 10)
        rho = rng.uniform(0.84, 1.05) + rng.normal(0, 0.025, 10)
        pts = shape.point(thetas, rho).astype(np.float32)
        out.append(Vessel(pts, *_taper(10, (0.22 + 0.08 * flow) * px_mm, 0.35 + 0.3 * flow)))
    for _ in range(int(rng.integers(1, 4))):
        theta = rng.uniform(0, 2 * np.pi)
        pts = shape.point(np.full(6, theta) + rng.normal(0, 0.05, 6), np.linspace(1.2, 0.6, 6))
        flow_in = pts if rng.random() < 0.6 else pts[::-1]
        out.append(Vessel(flow_in.astype(np.float32), *_taper(6, 0.24 * px_mm, 0.3 + 0.3 * flow)))
    return out


def displaced(rng, shape: NodeShape, entry: float, flow: float, px_mm: float) -> list[Vessel]:
    """A tree entering off the hilum and running along one side, pushed by the diseased tissue."""
    out: list[Vessel] = []
    theta = entry + np.pi + rng.normal(0, 0.8)
    root = shape.point(np.array([theta]), 1.15)[0]
    inward = np.arctan2(shape.cy - root[1], shape.cx - root[0])
    params = TreeParams(1.0 * px_mm, 0.28, 0.12 + 0.08 * flow, 2, 0.92)
    for side in (-1.0, 1.0):
        grow(rng, shape, root, inward + side * rng.uniform(0.9, 1.4), (0.24 + 0.1 * flow) * px_mm,
             0.45 + 0.3 * flow, params, out)
    return out


def sparse(rng, shape: NodeShape, flow: float, px_mm: float) -> list[Vessel]:
    """One to three short vessel fragments or dots."""
    out: list[Vessel] = []
    params = TreeParams(0.8 * px_mm, 0.4, 0.0, 0, 0.95)
    for _ in range(int(rng.integers(1, 4))):
        start = shape.point(np.array([rng.uniform(0, 2 * np.pi)]), rng.uniform(0.3, 0.9))[0]
        grow(rng, shape, start, rng.uniform(0, 2 * np.pi), 0.22 * px_mm, 0.25 + 0.25 * flow, params, out)
    return out


def vessels_for(f: NodeFeatures, rng: np.random.Generator, shape: NodeShape, entry: float,
                centre: tuple[float, float], px_mm: float) -> list[Vessel]:
    """The vessels of a node's vascular pattern."""
    if f.vascular == "hilar":
        return hilar(rng, shape, entry, centre, f.flow, px_mm)
    if f.vascular == "peripheral":
        return peripheral(rng, shape, f.flow, px_mm)
    if f.vascular == "mixed":
        return hilar(rng, shape, entry, centre, f.flow, px_mm, 0.7) + peripheral(rng, shape, f.flow, px_mm, 0.7)
    if f.vascular == "displaced":
        return displaced(rng, shape, entry, f.flow, px_mm)
    if f.vascular == "sparse":
        return sparse(rng, shape, f.flow, px_mm)
    return []
