"""Reading ultrasound images with OpenCV, ROI cropping and conversion to normalised tensors."""
from __future__ import annotations

import io
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from common.config import MAX_IMAGE_PIXELS as MAX_PIXELS
from common.errors import ClafedError

# ImageNet statistics: the extractors are ImageNet-initialised in the paper.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# A pixel counts as Doppler colour when its channels differ by more than this (grey is R=G=B;
# JPEG noise stays well below it).
CHROMA_THRESHOLD = 40
# Fewer coloured pixels than this fraction means "no colour at all": a B-mode image in the CDFI slot.
MIN_COLOUR_FRACTION = 1e-4


class ImageError(ClafedError, ValueError):
    """An image is missing, unreadable or unsuitable; the message names the file."""


def image_size(path: Path | io.BytesIO) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding it; None when Pillow cannot tell."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # lazy: reads the header only
            return image.size
    except Image.DecompressionBombError as err:  # beyond Pillow's own limit: size from its message
        numbers = [int(n) for n in re.findall(r"\d+", str(err))]
        return (numbers[0], 1) if numbers else (2 ** 31, 1)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3); grayscale files are replicated to three channels.

    More than `max_pixels` (from the header) is refused before decoding; None skips the check,
    for files the site's validation already checked against the site's own limit.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"missing file {path}")
    if max_pixels is not None:
        _check_pixels(str(path), image_size(path), max_pixels)
    data = np.fromfile(path, dtype=np.uint8)  # imread cannot report why it failed; decode can't either
    return _decode(data, str(path))


def decode_image(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """`read_image` for bytes held in memory (an upload), `name` naming them in errors."""
    _check_pixels(name, image_size(io.BytesIO(data)), max_pixels)
    return _decode(np.frombuffer(data, dtype=np.uint8), name)


def _check_pixels(name: str, size: tuple[int, int] | None, max_pixels: int) -> None:
    """Refuse, from the header's size, an image too large to decode."""
    if size is not None and size[0] * size[1] > max_pixels:
        shape = f"{size[0]}x{size[1]} px" if size[1] > 1 else f"{size[0]:,} pixels"
        raise ImageError(f"image too large: {name} is {shape}, more than {max_pixels:,} pixels "
                         "(raise max_image_pixels in the site YAML if this is a real frame)")


def _decode(data: np.ndarray, name: str) -> np.ndarray:
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageError(f"unreadable image {name} (not a PNG/JPEG/BMP, or corrupt)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def colour_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels whose channels differ enough to be Doppler colour."""
    # Channel-wise maximum/minimum on planes: several times faster than reducing over axis 2.
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return float((spread > CHROMA_THRESHOLD).mean())


def expand_roi(roi: tuple[int, int, int, int], margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Grow an (x, y, w, h) box by `margin` of its size on each side, clipped to the image."""
    x, y, w, h = roi
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(shape[1], x + w + dx), min(shape[0], y + h + dy)
    return x0, y0, x1 - x0, y1 - y0


def crop(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Crop to an (x, y, w, h) box; None keeps the whole image."""
    if box is None:
        return image
    x, y, w, h = box
    return image[y:y + h, x:x + w]


def crop_padded(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop to an (x, y, w, h) box that may reach past the image; the outside is black."""
    x, y, w, h = box
    out = np.zeros((h, w) + image.shape[2:], dtype=image.dtype)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(image.shape[1], x + w), min(image.shape[0], y + h)
    if x1 > x0 and y1 > y0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = image[y0:y1, x0:x1]
    return out


def to_tensor(rgb: np.ndarray, size: int) -> torch.Tensor:
    """Resize to (size, size), scale to [0, 1] and normalise with ImageNet statistics -> (3, S, S)."""
    if rgb.shape[0] != size or rgb.shape[1] != size:
        interp = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    scaled = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    normalised = (scaled - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))
