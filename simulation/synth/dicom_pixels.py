"""Pixel side of the DICOM export: burned-in patient text, cine frames and JPEG frames.

Frames here are screens as `render_case` draws them: grey (H, W) or BGR (H, W, 3) uint8.
"""
from __future__ import annotations

import cv2
import numpy as np

from simulation.synth.layout import Layout
from simulation.synth.scanners import ScannerStyle

CINE_FRAMES = 5
BMODE_RENDERED_INDEX = 2  # a B-mode cine is centred on the frame the operator froze
JPEG_QUALITY = 95
# 4:2:2 chroma, as the YBR_FULL_422 the files declare (OpenCV's default would be 4:2:0).
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]
# common.imaging.CHROMA_THRESHOLD, not imported: that module loads torch into every render worker.
CHROMA_THRESHOLD = 40
_BURN_GREY = 200
_BURN_GAP = 12  # px kept free on each side of the burned text (after the title, before the date)


def burn_patient_text(screen: np.ndarray, style: ScannerStyle, layout: Layout, text: str) -> None:
    """Print `text` on the header line between the machine title and the date, in place.

    Drawn into the rows above the field only (a view of them), so not one field pixel can change;
    the font shrinks until the text fits the gap, as machines that print the patient do.
    """
    header_y = max(14, layout.field_y // 2)
    title_w = cv2.getTextSize(style.title, style.font, style.font_scale, 1)[0][0]
    left, right = 8 + title_w + _BURN_GAP, layout.screen_w // 2 - 40 - _BURN_GAP
    width = cv2.getTextSize(text, style.font, style.font_scale, 1)[0][0]
    scale = style.font_scale * min(1.0, (right - left) / width)
    band = screen[:layout.field_y]  # a view: drawing here writes the screen
    colour = (_BURN_GREY,) * (3 if screen.ndim == 3 else 1)
    cv2.putText(band, text, (left, header_y), style.font, scale, colour, 1, cv2.LINE_AA)


def as_bgr(screen: np.ndarray) -> np.ndarray:
    """A grey screen as three equal channels (BGR screens pass through)."""
    return screen if screen.ndim == 3 else cv2.cvtColor(screen, cv2.COLOR_GRAY2BGR)


def _field(frame: np.ndarray, layout: Layout) -> np.ndarray:
    """A view of the field rectangle of a screen."""
    return frame[layout.field_y:layout.field_y + layout.field_h, layout.field_x:layout.field_x + layout.field_w]


def _jittered(screen: np.ndarray, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """The same frame a moment apart: the field moved 1-2 px (the probe breathes) with fresh noise."""
    frame = screen.copy()
    dy, dx = rng.choice([-2, -1, 0, 1, 2], size=2)
    if dy == 0 and dx == 0:
        dx = 1
    field = _field(screen, layout).astype(np.float32)
    pad = np.pad(field, ((2, 2), (2, 2)) + ((0, 0),) * (field.ndim - 2), mode="edge")
    moved = pad[2 - dy:2 - dy + layout.field_h, 2 - dx:2 - dx + layout.field_w]
    noise = rng.normal(0.0, 2.0, moved.shape[:2])
    moved = moved + (noise[:, :, None] if moved.ndim == 3 else noise)
    _field(frame, layout)[...] = np.clip(np.round(moved), 0, 255).astype(np.uint8)
    return frame


def bmode_cine(screen: np.ndarray, layout: Layout, rng: np.random.Generator) -> list[np.ndarray]:
    """A B-mode cine: the rendered frame in the middle, jittered copies around it."""
    return [screen.copy() if i == BMODE_RENDERED_INDEX else _jittered(screen, layout, rng)
            for i in range(CINE_FRAMES)]


def colour_pixels(bgr: np.ndarray) -> np.ndarray:
    """Where channels differ enough to be Doppler colour (common.imaging.colour_fraction's rule)."""
    channels = bgr.astype(np.int16)
    return channels.max(axis=2) - channels.min(axis=2) > CHROMA_THRESHOLD


def _less_flow(cdfi: np.ndarray, bus: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A frame from another part of the heart cycle: 40-80 % of the colour pixels show grey."""
    frame = cdfi.copy()
    drop = colour_pixels(cdfi) & (rng.random(bus.shape) < rng.uniform(0.4, 0.8))
    frame[drop] = bus[drop][:, None]
    return frame


def cdfi_cine(cdfi: np.ndarray, bus: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """A CDFI cine and the 0-based index of the rendered frame, the one with most flow.

    The rendered frame sits anywhere in the clip, so an ingest has to find it by its colour (or by
    RepresentativeFrameNumber where the machine sets it); the grey B-mode value stands in for flow.
    """
    index = int(rng.integers(0, CINE_FRAMES))
    frames = [cdfi.copy() if i == index else _less_flow(cdfi, bus, rng) for i in range(CINE_FRAMES)]
    return frames, index


def jpeg_frames(frames: list[np.ndarray]) -> list[bytes]:
    """Baseline JPEG (YCbCr 4:2:2, quality 95) of each frame, grey frames as three channels."""
    encoded = []
    for frame in frames:
        ok, data = cv2.imencode(".jpg", as_bgr(frame), _JPEG_PARAMS)
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG frame")
        encoded.append(data.tobytes())
    return encoded
