"""Rendered cases: manifest, files, masks, ROI and the Doppler colour box."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from common.imaging import CHROMA_THRESHOLD
from common.labels import CLASSES
from common.validation import validate_manifest
from simulation.synth import MANIFEST_COLUMNS, SMALL, cohort_plan, render_case

SITES = SMALL.sites


def _read(path, flags=cv2.IMREAD_UNCHANGED):
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return image


def test_manifests_hold_the_small_plan(small_dataset):
    for site in SITES:
        table = pd.read_csv(small_dataset / site / "manifest.csv", dtype=str)
        assert tuple(table.columns) == MANIFEST_COLUMNS
        for spec in (s for s in SMALL.cohorts if s.site == site):
            part = table[table["cohort"] == spec.cohort]
            assert tuple((part["label"] == c).sum() for c in CLASSES) == spec.counts


@pytest.mark.parametrize("site", SITES)
def test_manifest_passes_the_project_validation(small_dataset, site):
    assert validate_manifest(small_dataset / site / "manifest.csv") == []


def test_images_and_masks_share_size_and_format(small_dataset):
    table = pd.read_csv(small_dataset / "hospital2" / "manifest.csv", dtype=str)
    for row in table.to_dict("records"):
        root = small_dataset / "hospital2"
        bus, cdfi = _read(root / row["bus_path"]), _read(root / row["cdfi_path"])
        node, vessel = _read(root / row["node_mask_path"]), _read(root / row["vessel_mask_path"])
        assert bus.ndim == 2 and bus.dtype == np.uint8
        assert cdfi.shape == bus.shape + (3,)
        assert node.shape == vessel.shape == bus.shape
        assert set(np.unique(node)) == {0, 255} and set(np.unique(vessel)) <= {0, 255}


def test_roi_is_inside_the_image_and_around_the_node(small_dataset):
    table = pd.read_csv(small_dataset / "hospital1" / "manifest.csv")
    for row in table.to_dict("records"):
        node = _read(small_dataset / "hospital1" / row["node_mask_path"]) > 0
        x, y, w, h = row["roi_x"], row["roi_y"], row["roi_w"], row["roi_h"]
        assert x >= 0 and y >= 0 and x + w <= node.shape[1] and y + h <= node.shape[0]
        assert node[y:y + h, x:x + w].sum() >= 0.9 * node.sum()  # the box holds the node
        assert node.sum() >= 0.4 * w * h  # and not much else


def _contrast(bus: np.ndarray, mask: np.ndarray) -> float:
    """|mean inside the mask - mean in a ring around it| in grey levels."""
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool) & ~mask
    return abs(float(bus[mask].mean()) - float(bus[ring].mean()))


def test_node_mask_outlines_the_drawn_node(small_dataset):
    table = pd.read_csv(small_dataset / "hospital1" / "manifest.csv", dtype=str)
    true, shifted = [], []
    for row in table.to_dict("records"):
        bus = _read(small_dataset / "hospital1" / row["bus_path"]).astype(np.float32)
        mask = _read(small_dataset / "hospital1" / row["node_mask_path"]) > 0
        width = int(np.ptp(np.nonzero(mask)[1]))
        true.append(_contrast(bus, mask))
        shifted.append(_contrast(bus, np.roll(mask, width // 2, axis=1)))
    assert np.median(true) > 10
    assert np.median(true) > 2 * np.median(shifted)


@pytest.fixture(scope="module")
def rendered():
    """A dozen cases rendered in memory (the colour box is not written to disk)."""
    return [render_case(plan, 0) for plan in cohort_plan("small", 0)[:12]]


def test_cdfi_colour_lies_inside_the_colour_box(rendered):
    for case in rendered:
        spread = case.cdfi.max(axis=2).astype(int) - case.cdfi.min(axis=2)
        coloured = spread > 0
        assert coloured.any()
        assert not (coloured & ~case.colour_box).any()  # grey outside the box is exactly grey
        assert (spread[coloured] > CHROMA_THRESHOLD).all()  # and colour is clearly colour


def test_vessel_mask_marks_shown_flow(rendered):
    with_vessels = [c for c in rendered if c.vessel_mask.any()]
    assert len(with_vessels) >= len(rendered) // 2
    for case in with_vessels:
        vessel = case.vessel_mask > 0
        coloured = case.cdfi.max(axis=2) != case.cdfi.min(axis=2)
        assert not (vessel & ~case.colour_box).any()
        assert coloured[vessel].mean() > 0.5
        assert coloured[vessel].mean() > 3 * coloured[~vessel & case.colour_box].mean()


def test_bus_and_cdfi_show_the_same_anatomy(rendered):
    for case in rendered:
        x, y, w, h = case.roi
        bus = case.bus[y:y + h, x:x + w].astype(np.float32)
        cdfi = case.cdfi[y:y + h, x:x + w]
        grey = cdfi.max(axis=2) == cdfi.min(axis=2)
        other = np.roll(bus, w // 2, axis=1)  # the same image, misaligned: the statistic's floor
        same = np.corrcoef(bus[grey], cdfi[:, :, 0][grey].astype(np.float32))[0, 1]
        assert same > 0.6
        assert same > np.corrcoef(other[grey], cdfi[:, :, 0][grey].astype(np.float32))[0, 1] + 0.3


def test_written_files_are_the_rendered_case(small_dataset):
    plan = cohort_plan("small", 0)[5]
    row = pd.read_csv(small_dataset / plan.site / "manifest.csv", dtype=str).set_index("case_id").loc[plan.case_id]

    case = render_case(plan, 0)

    root = small_dataset / plan.site
    assert np.array_equal(_read(root / row["bus_path"]), case.bus)
    assert np.array_equal(_read(root / row["cdfi_path"]), case.cdfi)  # BGR on disk, as cv2 writes
    assert np.array_equal(_read(root / row["vessel_mask_path"]), case.vessel_mask)
    assert [int(row[c]) for c in ("roi_x", "roi_y", "roi_w", "roi_h")] == list(case.roi)
