"""Decoding an ultrasound DICOM frame as 8-bit RGB and choosing which frame of a cine to keep.

pydicom decodes the pixel data (JPEG, JPEG-LS and JPEG 2000 through the pylibjpeg plugins) and
converts YBR to RGB; what is left here is what pydicom leaves to the caller: MONOCHROME1's
inverted grey, palette colour, and more than 8 bits per sample.
"""
from __future__ import annotations

import numpy as np

from common.imaging import colour_fraction, crop

FRAME_RULES = ("auto", "key", "middle", "most-flow")


class FrameError(ValueError):
    """A frame cannot be decoded or chosen; the message says why (the caller names the file)."""


def frame_count(ds) -> int:
    """Frames in the pixel data (1 for a single-frame image)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        raise FrameError(f"NumberOfFrames {ds.get('NumberOfFrames')!r} is not a number") from None


def to_rgb(ds, pixels: np.ndarray) -> np.ndarray:
    """One decoded frame (as pydicom returns it) as RGB uint8 (H, W, 3)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, ds)
    elif pixels.ndim == 2:
        if photometric == "MONOCHROME1":  # 0 is white
            pixels = pixels.max() - pixels if pixels.dtype.kind == "f" else np.iinfo(pixels.dtype).max - pixels
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise FrameError(f"unexpected pixel layout {pixels.shape} for {photometric or 'no photometric interpretation'}")
    return _to_uint8(ds, pixels, photometric)


def _to_uint8(ds, pixels: np.ndarray, photometric: str) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    if photometric == "PALETTE COLOR":  # LUT entries are 16 bit
        bits = 16
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
    if pixels.dtype.kind == "i":  # signed grey: shift into the positive range first
        pixels = pixels.astype(np.int64) + (1 << (bits - 1))
    scaled = np.clip(pixels.astype(np.float64) * (255.0 / ((1 << bits) - 1)), 0, 255)
    return np.round(scaled).astype(np.uint8)


def decode_frame(ds, index: int, decoded: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Frame `index` (0-based) as RGB uint8; `decoded` keeps frames already decoded from `ds`."""
    from pydicom.pixels import pixel_array

    if decoded is not None and index in decoded:
        return decoded[index]
    try:
        pixels = pixel_array(ds, index=index if frame_count(ds) > 1 else None)
    except Exception as err:  # pydicom raises many kinds (missing decoder, truncated data, bad JPEG)
        raise FrameError(f"pixel data cannot be decoded ({type(err).__name__}: {err})") from None
    rgb = to_rgb(ds, pixels)
    if decoded is not None:
        decoded[index] = rgb
    return rgb


def key_frame(ds) -> int | None:
    """The frame the scanner or sonographer marked (RepresentativeFrameNumber, 1-based), 0-based."""
    marked = ds.get("RepresentativeFrameNumber")
    if marked in (None, ""):
        return None
    try:
        index = int(marked) - 1
    except (TypeError, ValueError):
        raise FrameError(f"RepresentativeFrameNumber {marked!r} is not a frame number") from None
    if not 0 <= index < frame_count(ds):
        raise FrameError(f"RepresentativeFrameNumber {marked} is outside the {frame_count(ds)} frames")
    return index


def most_flow_frame(ds, box: tuple[int, int, int, int] | None) -> tuple[int, np.ndarray]:
    """The frame with the largest share of Doppler colour inside `box` (all frames when None).

    Frames are decoded one at a time, so a long cine never sits in memory whole.
    """
    from pydicom.pixels import iter_pixels

    best, best_index, best_frame = -1.0, 0, None
    try:
        for index, pixels in enumerate(iter_pixels(ds)):
            rgb = to_rgb(ds, pixels)
            share = colour_fraction(crop(rgb, box))
            if share > best:
                best, best_index, best_frame = share, index, rgb
    except FrameError:
        raise
    except Exception as err:
        raise FrameError(f"pixel data cannot be decoded ({type(err).__name__}: {err})") from None
    if best_frame is None:
        raise FrameError("the pixel data holds no frame")
    return best_index, best_frame


def choose_frame(ds, rule: str, cdfi: bool, flow_box: tuple[int, int, int, int] | None,
                 decoded: dict[int, np.ndarray] | None = None) -> tuple[int, str, np.ndarray]:
    """(0-based index, how it was chosen, RGB frame) of the frame to keep.

    Rules: `key` the marked frame (refused when none is marked); `middle`; `most-flow` the frame
    with most colour (CDFI; for B-mode it is the middle frame); `auto` the marked frame when there is
    one, else most-flow for CDFI and middle for B-mode. `decoded`: frames already decoded.
    """
    if rule not in FRAME_RULES:
        raise FrameError(f"unknown frame rule {rule!r}; choose one of {', '.join(FRAME_RULES)}")
    n = frame_count(ds)
    if n == 1:
        return 0, "single", decode_frame(ds, 0, decoded)
    marked = key_frame(ds)
    if rule == "key" and marked is None:
        raise FrameError(f"cine of {n} frames without a marked key frame (RepresentativeFrameNumber); "
                         "choose --frame middle or most-flow")
    if rule in ("key", "auto") and marked is not None:
        return marked, "key", decode_frame(ds, marked, decoded)
    if cdfi and rule in ("most-flow", "auto"):
        index, frame = most_flow_frame(ds, flow_box)
        return index, "most-flow", frame
    return n // 2, "middle", decode_frame(ds, n // 2, decoded)

