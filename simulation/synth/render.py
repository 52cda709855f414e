"""Render one planned case: B-mode and CDFI frames of the same node, masks and the ROI box."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth import doppler, overlay
from simulation.synth.anatomy import Anatomy, build_anatomy, index_shape
from simulation.synth.bmode import Acquisition, attenuate, complex_noise, compress, speckle
from simulation.synth.cohort import CasePlan
from simulation.synth.features import NodeFeatures, sample_features
from simulation.synth.fields import gaussian_blur
from simulation.synth.layout import Layout, make_layout, place_node
from simulation.synth.scanners import SCANNERS, ScannerStyle
from simulation.synth.vessels import vessels_for

# Independent random streams per case, so changing one painter never reshuffles another's draws.
_STREAMS = ("features", "geometry", "anatomy", "speckle", "doppler", "screen")


@dataclass(frozen=True)
class RenderedCase:
    """Everything written for one case (images in screen px)."""

    bus: np.ndarray  # (H, W) uint8 grey
    cdfi: np.ndarray  # (H, W, 3) uint8 BGR
    node_mask: np.ndarray  # (H, W) uint8 0/255
    vessel_mask: np.ndarray  # (H, W) uint8 0/255
    colour_box: np.ndarray  # (H, W) bool: where Doppler colour may appear
    roi: tuple[int, int, int, int]  # x, y, w, h
    features: NodeFeatures
    layout: Layout  # field rectangle and pixel spacing (DICOM export's ultrasound regions)
    text: overlay.ScreenText  # the values printed on the screen (DICOM export's times)


def case_streams(seed: int, site_index: int, case_index: int) -> dict[str, np.random.Generator]:
    """The case's random generators, derived from (seed, site, case) only."""
    children = np.random.SeedSequence([seed, site_index, case_index]).spawn(len(_STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}


def _to_screen(field: np.ndarray, layout: Layout) -> np.ndarray:
    """A field-sized mask on a zero screen."""
    screen = np.zeros((layout.screen_h, layout.screen_w), field.dtype)
    screen[layout.field_y:layout.field_y + layout.field_h, layout.field_x:layout.field_x + layout.field_w] = field
    return screen


def clinician_roi(mask: np.ndarray, layout: Layout, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box drawn around the node by hand: a little loose, uneven, always inside the field."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = x1 - x0, y1 - y0
    pad = rng.uniform(-0.02, 0.12, 4)  # mostly outward; a hurried box may clip the node slightly
    x0, x1 = x0 - pad[0] * w, x1 + pad[1] * w
    y0, y1 = y0 - pad[2] * h, y1 + pad[3] * h
    fx0, fy0 = layout.field_x, layout.field_y
    x0, y0 = int(max(fx0, round(x0))), int(max(fy0, round(y0)))
    x1 = int(min(fx0 + layout.field_w, round(x1)))
    y1 = int(min(fy0 + layout.field_h, round(y1)))
    return x0, y0, x1 - x0, y1 - y0


def _bmode_pair(anatomy: Anatomy, style: ScannerStyle, layout: Layout,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The B-mode frame and the grey part of the CDFI frame of the same anatomy."""
    px_mm = 1.0 / layout.mm_per_px
    echo = attenuate(anatomy.echo, anatomy.alpha, px_mm, rng, 2.0 * style.psf_lateral)
    acq = Acquisition(rng.normal(0.0, 3.0), int(anatomy.shape.cy))  # gain knob turned per case
    intensity = speckle(echo, complex_noise(rng, layout.field_shape), style, acq)
    # Colour mode lowers B-mode gain and line density (a coarser lateral grain).
    colour_acq = Acquisition(acq.gain_db - rng.uniform(1.0, 4.0), acq.focus_row)
    grey = compress(gaussian_blur(intensity, 0.7 * style.psf_lateral, 0.0), style, colour_acq)
    return compress(intensity, style, acq), grey


def _colour(f: NodeFeatures, anatomy: Anatomy, box: doppler.ColourBox, inside: np.ndarray,
            style: ScannerStyle, grey: np.ndarray, rng: np.random.Generator,
            px_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The CDFI field (BGR) and the vessel mask (0/1) inside the colour box."""
    vessels = vessels_for(f, rng, anatomy.shape, anatomy.node.hilum_entry, anatomy.node.hilum_centre, px_mm)
    velocity, mask = doppler.paint_flow(vessels, grey.shape, box.beam)
    keep = anatomy.necrosis < 0.5  # no flow inside necrosis: vessels look displaced around it
    velocity = velocity * keep * rng.uniform(0.8, 1.25)  # the operator's velocity scale
    mask = mask * keep
    look = doppler.DopplerLook(bleed=rng.uniform(0.6, 1.8), speckle=rng.uniform(0.15, 0.35),
                               flash=rng.uniform(0.2, 0.8) if rng.random() < 0.2 else 0.0,
                               dots=rng.uniform(2e-4, 2e-3))
    shown, visible = doppler.colour_field(velocity, mask, inside, look, rng)
    field = doppler.apply_colour(grey, shown, visible, doppler.colour_lut(style.colour_map))
    return field, (mask & inside).astype(np.uint8)


def _finish(field: np.ndarray, style: ScannerStyle, layout: Layout, text: overlay.ScreenText,
            box: doppler.ColourBox | None = None) -> np.ndarray:
    """The saved frame: field on the machine's screen with its text, ruler and box outline."""
    screen = overlay.compose(field, style, layout)
    if box is not None:
        outline = box.polygon + np.array([layout.field_x, layout.field_y], np.float32)
        cv2.polylines(screen, [np.round(outline * 16).astype(np.int32)], True, (200, 200, 200), 1,
                      cv2.LINE_AA, 4)
    overlay.draw_text(screen, style, layout, text, cdfi=box is not None)
    overlay.draw_ruler(screen, style, layout, text.focus_mm)
    overlay.draw_grey_bar(screen, layout)
    return screen


def render_case(plan: CasePlan, seed: int) -> RenderedCase:
    """Render a case deterministically from (seed, site index, case index)."""
    rngs = case_streams(seed, plan.site_index, plan.case_index)
    style = SCANNERS[plan.scanner]
    f = sample_features(plan.label, rngs["features"])
    placement = place_node(f, style, rngs["geometry"])
    layout = make_layout(style, placement, rngs["geometry"])
    shape = index_shape(f, placement, layout, rngs["geometry"])
    px_mm = 1.0 / layout.mm_per_px
    box = doppler.colour_box(shape.bbox(), layout.field_shape, style.steer, rngs["doppler"], px_mm)
    inside = doppler.box_mask(box, layout.field_shape)
    anatomy = build_anatomy(f, shape, layout, inside, rngs["anatomy"])
    bus_field, grey = _bmode_pair(anatomy, style, layout, rngs["speckle"])
    cdfi_field, vessel_mask = _colour(f, anatomy, box, inside, style, grey, rngs["doppler"], px_mm)
    text = overlay.screen_text(rngs["screen"], plan.exam_date, placement.depth_mm)
    node_mask = _to_screen(anatomy.node_mask, layout) * 255
    return RenderedCase(_finish(bus_field, style, layout, text), _finish(cdfi_field, style, layout, text, box),
                        node_mask, _to_screen(vessel_mask, layout) * 255, _to_screen(inside, layout) > 0,
                        clinician_roi(node_mask, layout, rngs["screen"]), f, layout, text)
