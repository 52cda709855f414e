"""B-mode image formation: attenuation, speckle from a point-spread function, log compression."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from simulation.synth.fields import gaussian_blur, kernel_energy, smooth_noise
from simulation.synth.scanners import ScannerStyle

NOISE_FLOOR_DB = -36.0  # electronic noise relative to fat: what anechoic areas show


@dataclass(frozen=True)
class Acquisition:
    """Per-frame settings the operator chooses on top of the machine's style."""

    gain_db: float  # offset to the machine's display gain
    focus_row: int  # focal depth in field px: the lateral PSF is narrowest there


def attenuate(echo: np.ndarray, alpha: np.ndarray, px_mm: float, rng: np.random.Generator,
              beam_sigma: float) -> np.ndarray:
    """Apply the round-trip attenuation left over by TGC (shadowing, enhancement, depth falloff)."""
    loss = np.cumsum(alpha, axis=0, dtype=np.float32) / px_mm  # dB reached at each depth
    loss = gaussian_blur(loss, beam_sigma, 0.0)  # the beam is wider than one column
    depth_mm = np.arange(echo.shape[0], dtype=np.float32) / px_mm
    tgc = smooth_noise(rng, (echo.shape[0], 1), 6.0 * px_mm)[:, 0] * 1.5  # imperfect TGC sliders
    falloff = rng.uniform(0.05, 0.15) * np.maximum(depth_mm - 15.0, 0.0) + tgc
    return echo * 10 ** (-(loss + falloff[:, None]) / 10)


def complex_noise(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The random scatterer field (real, imaginary), unit variance each.

    Uniform draws are cheaper than Gaussian ones and the PSF's sum over many scatterers makes the
    filtered field Gaussian anyway (central limit), which is what gives Rayleigh speckle.
    """
    half = np.float32(np.sqrt(3.0))
    draw = lambda: (rng.random(shape, dtype=np.float32) * 2 - 1) * half  # noqa: E731
    return draw(), draw()


def speckle(echo: np.ndarray, noise: tuple[np.ndarray, np.ndarray], style: ScannerStyle,
            acq: Acquisition) -> np.ndarray:
    """Fully developed speckle: |PSF * (sqrt(echo) . scatterers)|^2, laterally wider off focus."""
    amp = np.sqrt(echo + 10 ** (NOISE_FLOOR_DB / 10))  # electronic noise adds like weak scatterers
    sx, sy = style.psf_lateral, style.psf_axial
    gain = np.float32(0.5 / (kernel_energy(sx) * kernel_energy(sy)))  # unit mean intensity
    re, im = gaussian_blur(noise[0] * amp, sx, sy), gaussian_blur(noise[1] * amp, sx, sy)
    intensity = (re * re + im * im) * gain
    # Away from the focus the beam widens: smear the grain sideways (cheaper than a second PSF).
    wide = gaussian_blur(intensity, 1.6 * sx, 0.0)
    rows = np.arange(echo.shape[0], dtype=np.float32)
    off_focus = np.clip(np.abs(rows - acq.focus_row) / (0.6 * echo.shape[0]), 0, 1)[:, None]
    return intensity + (wide - intensity) * off_focus


def compress(intensity: np.ndarray, style: ScannerStyle, acq: Acquisition) -> np.ndarray:
    """Log-compress to 8-bit grey with the machine's gain, dynamic range, grey map and smoothing."""
    db = cv2.log(intensity + np.float32(1e-12)) * np.float32(10 / np.log(10))
    db = gaussian_blur(db, style.smoothing)
    white = style.gain_db + acq.gain_db
    level = (db - (white - style.dynamic_range_db)) * np.float32(255.0 / style.dynamic_range_db)
    grey = np.clip(level, 0, 255).astype(np.uint8)
    curve = np.round(255 * (np.arange(256) / 255.0) ** style.gamma).astype(np.uint8)
    return cv2.LUT(grey, curve)
