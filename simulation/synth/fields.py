"""Random fields and small raster helpers shared by the B-mode and Doppler painters."""
from __future__ import annotations

import cv2
import numpy as np


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_x: float,
                 sigma_y: float | None = None) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation lengths sigma_x/y (px).

    Drawn on a coarse grid and upsampled, so long correlation lengths cost no more than short ones.
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    h, w = shape
    fx, fy = max(1.0, sigma_x / 2.0), max(1.0, sigma_y / 2.0)
    ch, cw = int(np.ceil(h / fy)) + 3, int(np.ceil(w / fx)) + 3
    coarse = rng.standard_normal((ch, cw), dtype=np.float32)
    coarse = cv2.GaussianBlur(coarse, (0, 0), sigmaX=sigma_x / fx, sigmaY=sigma_y / fy,
                              borderType=cv2.BORDER_REFLECT)
    field = cv2.resize(coarse, (int(cw * fx), int(ch * fy)), interpolation=cv2.INTER_LINEAR)[:h, :w]
    field = field - field.mean()
    return field / max(float(field.std()), 1e-6)


def gaussian_blur(image: np.ndarray, sigma_x: float, sigma_y: float | None = None) -> np.ndarray:
    """Gaussian blur (reflecting borders) that is a no-op for sigma <= 0."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if sigma_x <= 0 and sigma_y <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=max(sigma_x, 1e-3), sigmaY=max(sigma_y, 1e-3),
                            borderType=cv2.BORDER_REFLECT)


def kernel_energy(sigma: float) -> float:
    """Sum of squared taps of OpenCV's Gaussian kernel: the variance gain of white noise."""
    if sigma <= 0:
        return 1.0
    size = int(2 * round(4 * sigma) + 1)  # wide enough that the discrete kernel sums to 1
    taps = cv2.getGaussianKernel(size, sigma)
    return float((taps ** 2).sum())


def fill_polygon(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """Binary (0/1 uint8) mask of a polygon given in float px, drawn with sub-pixel precision."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance in px to the mask's boundary: negative inside, positive outside."""
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    return (outside - inside).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """A cheap logistic look-alike (smoothstep over |x| < 2.5), float32, exactly 0/1 beyond."""
    t = np.clip(0.5 + np.asarray(x, np.float32) * np.float32(0.2), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def lerp(a: np.ndarray, b: np.ndarray | float, t: np.ndarray) -> np.ndarray:
    """a + (b - a) * t."""
    return a + (b - a) * t
