"""One case's anatomy: the index node, its neighbours and the tissue around them, as echo maps."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.synth.features import NodeFeatures
from simulation.synth.fields import sigmoid, signed_distance, smooth_noise
from simulation.synth.layout import Layout, Placement
from simulation.synth.node import NodeShape, random_shape
from simulation.synth.node_echo import NodeMaps, node_maps
from simulation.synth.tissue import add_deep_vessel, tissue_maps


@dataclass(frozen=True)
class Anatomy:
    """Echo and attenuation of the whole field, with the index node's shape and maps."""

    echo: np.ndarray
    alpha: np.ndarray
    shape: NodeShape
    node: NodeMaps
    node_mask: np.ndarray  # 0/1 uint8, the index node only
    necrosis: np.ndarray  # 0..1 on the whole field (no flow is shown there)


def index_shape(f: NodeFeatures, placement: Placement, layout: Layout, rng: np.random.Generator) -> NodeShape:
    """The index node's contour in field px."""
    px_mm = 1.0 / layout.mm_per_px
    cx = layout.field_w * (0.5 + placement.lateral)
    return random_shape(rng, cx, placement.depth_mm * px_mm, placement.semi_long_mm * px_mm,
                        placement.semi_short_mm * px_mm, np.deg2rad(f.tilt_deg), f.irregularity)


def neighbour_shapes(f: NodeFeatures, main: NodeShape, layout: Layout, rng: np.random.Generator) -> list[NodeShape]:
    """Other nodes in view: fused to the index node when matted, a few mm apart otherwise."""
    shapes = []
    for _ in range(f.neighbours):
        size = rng.uniform(0.45, 0.85) if f.matted else rng.uniform(0.3, 0.55)
        a, b = main.a * size, main.a * size / rng.uniform(1.2, 2.2)
        side = rng.choice([-1.0, 1.0])
        gap = -0.25 * a if f.matted else rng.uniform(2.0, 6.0) / layout.mm_per_px
        cx = main.cx + side * (main.a + a + gap) * rng.uniform(0.9, 1.05)
        cy = main.cy + rng.uniform(-0.5, 0.5) * main.b
        if a < cx < layout.field_w - a and b + 4 < cy < layout.field_h - b:
            shapes.append(random_shape(rng, cx, cy, a, b, rng.normal(0, 0.2), f.irregularity))
    return shapes


def _top_rows(mask: np.ndarray) -> np.ndarray:
    """First masked row per column (inf where the column has none)."""
    has = mask.any(axis=0)
    return np.where(has, mask.argmax(axis=0), np.inf).astype(np.float32)


def _neighbour_echo(f: NodeFeatures, shapes: list[NodeShape], field_shape, rng, px_mm: float):
    """Blend weight and echo of the neighbouring nodes (cortex-like, no hilum)."""
    weight = np.zeros(field_shape, np.float32)
    for shape in shapes:
        edge = 0.6 if f.matted else 0.15
        weight = np.maximum(weight, sigmoid(-signed_distance(shape.mask(field_shape)) / px_mm / edge))
    level = 10 ** (f.cortex_db / 10) if f.matted else 10 ** (rng.uniform(-8, -4) / 10)
    echo = level * np.exp(0.6 * smooth_noise(rng, field_shape, 1.5 * px_mm))
    return weight, echo


def build_anatomy(f: NodeFeatures, shape: NodeShape, layout: Layout, keep_clear: np.ndarray,
                  rng: np.random.Generator) -> Anatomy:
    """Tissue, neighbours and the index node composited into echo and attenuation maps."""
    px_mm, field_shape = 1.0 / layout.mm_per_px, layout.field_shape
    neighbours = neighbour_shapes(f, shape, layout, rng)
    index_mask = shape.mask(field_shape)
    all_nodes = index_mask.copy()
    for other in neighbours:
        all_nodes |= other.mask(field_shape)
    tissue = tissue_maps(rng, field_shape, px_mm, _top_rows(all_nodes))
    if rng.random() < 0.5:
        tissue = add_deep_vessel(tissue, rng, px_mm, keep_clear | all_nodes)
    echo, alpha = tissue.echo, tissue.alpha
    if neighbours:
        weight, nb_echo = _neighbour_echo(f, neighbours, field_shape, rng, px_mm)
        echo = echo * (1 - weight) + nb_echo * weight
        alpha = alpha - 0.07 * weight
    maps = node_maps(f, shape, field_shape, rng, px_mm)
    win = maps.window.slices
    local = echo[win] * (1 + 1.6 * maps.halo)  # inflamed perinodal fat turns echogenic
    local = local * (1 - maps.soft) + maps.echo * maps.soft + maps.capsule
    echo[win] = np.maximum(local, maps.calcification)
    alpha[win] = alpha[win] * (1 - maps.soft) + maps.alpha * maps.soft
    necrosis = np.zeros(field_shape, np.float32)
    necrosis[win] = maps.necrosis
    return Anatomy(echo, alpha, shape, maps, index_mask, necrosis)
