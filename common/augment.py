"""Training augmentation that keeps CDFI hue intact (colour encodes flow direction)."""
from __future__ import annotations

import cv2
import numpy as np

from common.config import AugmentConfig
from common.imaging import expand_roi


def jitter_box(box: tuple[int, int, int, int], jitter: float, shape: tuple[int, ...],
               rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Randomly scale and shift an (x, y, w, h) box by up to `jitter` of its size, inside the image."""
    x, y, w, h = box
    scale = 1.0 + rng.uniform(-jitter, jitter)
    nw, nh = max(8, int(w * scale)), max(8, int(h * scale))
    cx = x + w / 2 + rng.uniform(-jitter, jitter) * w
    cy = y + h / 2 + rng.uniform(-jitter, jitter) * h
    nx = int(np.clip(cx - nw / 2, 0, max(0, shape[1] - nw)))
    ny = int(np.clip(cy - nh / 2, 0, max(0, shape[0] - nh)))
    return expand_roi((nx, ny, nw, nh), 0.0, shape)


def geometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
              mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Random horizontal flip and small rotation (neck ultrasound has no fixed left/right); a mask
    of the same image gets the same flip and rotation."""
    flip = cfg.hflip and rng.random() < 0.5
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if cfg.rotate_deg > 0 else 0.0
    return _flip_rotate(image, flip, angle), None if mask is None else _flip_rotate(mask, flip, angle)


def _flip_rotate(image: np.ndarray, flip: bool, angle: float) -> np.ndarray:
    if flip:
        image = image[:, ::-1]
    if angle:
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(image)


def bus_photometric(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Gain, contrast and gamma on a grey B-mode image; returns float32 in [0, 1]."""
    x = rgb.astype(np.float32) / 255.0
    x = x * (1.0 + rng.uniform(-cfg.gain, cfg.gain))
    mean = x.mean()
    x = (x - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    x = np.clip(x, 0.0, 1.0) ** np.exp(rng.uniform(-cfg.contrast, cfg.contrast))
    return x.astype(np.float32)


def cdfi_photometric(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Gain on a CDFI image that never changes hue; returns float32 in [0, 1].

    Each pixel's three channels are multiplied by the same factor, capped so the brightest channel
    cannot clip: channel ratios, and so hue and saturation, stay exactly as acquired.
    """
    x = rgb.astype(np.float32) / 255.0
    gain = 1.0 + rng.uniform(-cfg.gain, cfg.gain)
    peak = np.maximum(x.max(axis=2, keepdims=True), 1e-6)
    factor = np.minimum(gain, 1.0 / peak)
    return (x * factor).astype(np.float32)
