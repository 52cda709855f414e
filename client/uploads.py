"""An image uploaded to `clafed serve`, decoded in memory the way the site's own files are read.

PNG/JPEG/BMP go through common.imaging (pixel limit from the header before decoding); DICOM
(the 'DICM' preamble) goes through the ingest's frame choice and crop to the ultrasound region, so
a case uploaded from PACS reaches the model exactly as `clafed ingest` would have written it. The
bytes are never written anywhere.
"""
from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

import numpy as np

from common.config import MAX_IMAGE_PIXELS
from common.errors import ClafedError
from common.imaging import ImageError, decode_image

SLOTS = {"bus": "B-mode (BUS)", "cdfi": "colour Doppler (CDFI)"}
# What a name may hold when it is echoed back in messages.
_NAME = re.compile(r"[^A-Za-z0-9 ._()-]")


class UploadError(ClafedError, ValueError):
    """An upload the model cannot use; the message names the slot and the file."""


@dataclass(frozen=True)
class Upload:
    slot: str  # bus | cdfi
    name: str  # the file's name, made printable
    rgb: np.ndarray  # (H, W, 3) uint8, what the model sees before the box is cut
    source: str  # how it was read: "PNG/JPEG" or the DICOM frame rule and crop


def safe_name(name: object) -> str:
    text = _NAME.sub("_", str(name or "upload"))[:120]
    return text or "upload"


def decode_upload(slot: str, name: object, data_b64: object, max_pixels: int = MAX_IMAGE_PIXELS) -> Upload:
    """Decode one upload (base64 text) for `slot`; UploadError says what is wrong with it."""
    if slot not in SLOTS:
        raise UploadError(f"unknown image slot {slot!r} (bus or cdfi)")
    name = safe_name(name)
    label = f"{SLOTS[slot]} image {name}"
    if not isinstance(data_b64, str) or not data_b64:
        raise UploadError(f"{label}: no file content was sent")
    try:
        data = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(f"{label}: the upload is not valid base64 (send the file again)") from None
    if len(data) > 132 and data[128:132] == b"DICM":
        rgb, source = _dicom_frame(data, slot, label, max_pixels)
    else:
        try:
            rgb, source = decode_image(data, label, max_pixels), "PNG/JPEG"
        except ImageError as err:
            raise UploadError(str(err)) from None
    return Upload(slot, name, rgb, source)


def _dicom_frame(data: bytes, slot: str, label: str, max_pixels: int) -> tuple[np.ndarray, str]:
    import pydicom

    from client.ingest.images import BMODE, CDFI, ImageOptions, prepare_dataset
    from client.ingest.privacy import PrivacyInventory

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as err:  # truncated or corrupt files raise assorted errors
        raise UploadError(f"{label}: unreadable DICOM ({type(err).__name__})") from None
    if "PixelData" not in ds:
        raise UploadError(f"{label}: the DICOM file holds no image")
    try:
        # Without an ultrasound region the whole frame is used: nothing of it leaves the site.
        ready = prepare_dataset(ds, ImageOptions(allow_uncropped=True, max_pixels=max_pixels), PrivacyInventory())
    except ValueError as err:
        raise UploadError(f"{label}: {err}") from None
    expected = BMODE if slot == "bus" else CDFI
    if ready.kind != expected:
        other = "colour-flow (CDFI)" if ready.kind == CDFI else "B-mode"
        raise UploadError(f"{label}: this DICOM frame is {other}; put it in the other slot")
    x, y, w, h = ready.crop
    return ready.rgb, f"DICOM, frame {ready.frame_index + 1} ({ready.frame_rule}), cropped to the region {w}x{h} at {x},{y}"
