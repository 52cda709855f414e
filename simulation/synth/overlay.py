"""Screen furniture burnt into exported frames: text panel, depth ruler, focus mark, grey bar.

All of it is drawn in grey (R=G=B), so it can never be mistaken for Doppler colour.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth.layout import Layout
from simulation.synth.scanners import ScannerStyle

TEXT_GREY = 215


@dataclass(frozen=True)
class ScreenText:
    """The per-frame values the machine prints."""

    exam_date: str
    clock: str  # HH:MM:SS
    gain: int  # the console's gain knob (B-mode or colour)
    frame_rate: int
    prf_khz: float  # colour pulse repetition frequency (velocity scale)
    focus_mm: float


def screen_text(rng: np.random.Generator, exam_date: str, focus_mm: float) -> ScreenText:
    """Draw the printed values of one exam."""
    clock = f"{rng.integers(8, 18):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    return ScreenText(exam_date, clock, int(rng.integers(40, 75)), int(rng.integers(12, 40)),
                      float(rng.choice([0.7, 0.9, 1.0, 1.2, 1.5])), focus_mm)


def _put(img: np.ndarray, text: str, org: tuple[int, int], style: ScannerStyle, grey: int = TEXT_GREY) -> None:
    colour = (grey,) * (3 if img.ndim == 3 else 1)
    cv2.putText(img, text, org, style.font, style.font_scale, colour, 1, cv2.LINE_AA)


def _panel_lines(style: ScannerStyle, layout: Layout, text: ScreenText, cdfi: bool) -> list[str]:
    lines = [style.probe, f"D {layout.depth_mm / 10:.1f}cm", f"FR {text.frame_rate}"]
    if cdfi:
        lines += ["CF", f"G {text.gain - 8}", f"PRF {text.prf_khz:.1f}k", "WF low"]
    else:
        lines += ["B", f"G {text.gain}", f"DR {style.dynamic_range_db:.0f}"]
    return lines


def draw_text(img: np.ndarray, style: ScannerStyle, layout: Layout, text: ScreenText, cdfi: bool) -> None:
    """Header (machine, date, anonymised id) and a parameter panel beside the field."""
    header_y = max(14, layout.field_y // 2)
    _put(img, style.title, (8, header_y), style)
    _put(img, f"{text.exam_date} {text.clock}", (layout.screen_w // 2 - 40, header_y), style)
    _put(img, "ID ********", (layout.screen_w - 130, header_y), style, 170)
    panel_left = style.ruler_side == "right"
    x = 6 if panel_left else layout.field_x + layout.field_w + 30
    for i, line in enumerate(_panel_lines(style, layout, text, cdfi)):
        _put(img, line, (x, layout.field_y + 30 + 20 * i), style, 190)


def draw_ruler(img: np.ndarray, style: ScannerStyle, layout: Layout, focus_mm: float) -> None:
    """Depth ticks every 5 mm (labelled every cm) and a focus mark on one side of the field."""
    colour = (TEXT_GREY,) * (3 if img.ndim == 3 else 1)
    right = style.ruler_side == "right"
    x = layout.field_x + layout.field_w + 4 if right else layout.field_x - 5
    sign = 1 if right else -1
    for mm in range(0, int(layout.depth_mm) + 1, 5):
        y = layout.field_y + int(round(mm / layout.mm_per_px))
        length = 7 if mm % 10 == 0 else 4
        cv2.line(img, (x, y), (x + sign * length, y), colour, 1)
        if mm % 10 == 0 and mm > 0:
            tx = x + 10 if right else x - 24
            _put(img, str(mm // 10), (tx, y + 4), style, 180)
    fy = layout.field_y + int(round(focus_mm / layout.mm_per_px))
    tip = x - sign * 1
    tri = np.array([[tip, fy], [tip + sign * 6, fy - 4], [tip + sign * 6, fy + 4]], np.int32)
    cv2.fillConvexPoly(img, tri, colour)


def draw_grey_bar(img: np.ndarray, layout: Layout) -> None:
    """The grey-scale bar most machines show at the bottom corner."""
    h = min(80, layout.field_h // 4)
    x0 = 8
    y0 = layout.screen_h - h - 10
    ramp = np.linspace(255, 0, h).astype(np.uint8)[:, None].repeat(8, axis=1)
    if img.ndim == 3:
        ramp = np.repeat(ramp[:, :, None], 3, axis=2)
    img[y0:y0 + h, x0:x0 + 8] = ramp


def compose(field: np.ndarray, style: ScannerStyle, layout: Layout) -> np.ndarray:
    """Place a field (grey or BGR) on the machine's background."""
    shape = (layout.screen_h, layout.screen_w) + field.shape[2:]
    screen = np.full(shape, style.background, np.uint8)
    screen[layout.field_y:layout.field_y + layout.field_h, layout.field_x:layout.field_x + layout.field_w] = field
    return screen
