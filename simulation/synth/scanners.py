"""Ultrasound machine styles: screen geometry, grey-scale processing and Doppler look.

The paper's images came from 14 machines in three hospitals; each virtual hospital here owns its
own machines (2-5 each, 14 in all), so a model meets a scanner shift between sites.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2


@dataclass(frozen=True)
class ScannerStyle:
    """How one machine shows a B-mode / CDFI frame."""

    name: str
    screen: tuple[int, int]  # saved image (width, height) in px
    field_top: int  # px from the image top to the skin line
    field_height: int  # px of displayed depth; width follows from the probe footprint
    field_center: float  # horizontal centre of the field, fraction of the screen width
    probe_width_mm: float  # linear-array footprint = field width in mm
    depths_mm: tuple[float, ...]  # depth presets; the operator picks one that fits the node
    gain_db: float  # echo level (dB re. fat) shown white; fat sits about 0.4 of the way up
    dynamic_range_db: float  # log-compression window: small = contrasty, large = flat
    gamma: float  # grey-map curve applied after compression
    psf_lateral: float  # lateral PSF sigma at focus (px): the speckle grain's length
    psf_axial: float  # axial PSF sigma (px), shorter than lateral: speckle is elongated sideways
    smoothing: float  # speckle-reduction blur sigma (px); 0 shows raw speckle
    colour_map: str  # key of simulation.synth.doppler.COLOUR_MAPS
    font: int  # cv2 Hershey font of the on-screen text
    font_scale: float
    ruler_side: str  # "left" | "right": where the depth ruler is drawn
    background: int  # grey level around the field (exactly grey, never coloured)
    title: str  # machine name burnt into the screen
    probe: str  # probe label burnt into the screen
    steer: bool  # whether operators steer the colour box (parallelogram box)
    weight: float  # share of the hospital's cases scanned on this machine


def _style(name, screen, field_top, field_height, center, probe_mm, depths, gain, dr, gamma,
           psf, smoothing, cmap, font, font_scale, ruler, background, title, probe, steer, weight):
    return ScannerStyle(name, screen, field_top, field_height, center, probe_mm, depths, gain, dr,
                        gamma, psf[0], psf[1], smoothing, cmap, font, font_scale, ruler, background,
                        title, probe, steer, weight)


_S, _P, _D, _C = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
                  cv2.FONT_HERSHEY_COMPLEX_SMALL)

# Hospital 1: a large centre, mostly high-end consoles, five machines.
_HOSPITAL1 = (
    _style("aurex-x7", (800, 600), 70, 470, 0.52, 40.0, (30, 35, 40, 45), 36, 60, 1.10,
           (2.2, 0.9), 0.7, "classic", _S, 0.42, "right", 0, "AUREX X7", "L12-4", True, 0.34),
    _style("meridian-9", (768, 576), 56, 480, 0.50, 38.0, (30, 40, 50), 31, 54, 1.00,
           (1.7, 0.8), 1.1, "bright", _D, 0.40, "left", 6, "Meridian 9", "ML6-15", False, 0.24),
    _style("kestrel-v8", (720, 540), 62, 440, 0.47, 44.0, (35, 40, 45, 50), 41, 66, 1.25,
           (2.6, 1.0), 0.0, "classic", _P, 1.00, "right", 0, "KESTREL V8", "LA523 13MHz", True, 0.18),
    _style("halcyon-p3", (800, 500), 48, 420, 0.55, 46.0, (30, 35, 40, 45, 50), 35, 58, 1.05,
           (2.0, 0.85), 0.5, "deep", _C, 0.55, "left", 12, "Halcyon P3", "HL12", False, 0.14),
    _style("aurex-e5", (640, 480), 52, 400, 0.50, 38.0, (30, 40, 50), 38, 62, 1.15,
           (2.9, 1.1), 0.0, "classic", _S, 0.36, "right", 0, "AUREX E5", "L10-5", False, 0.10),
)
# Hospital 2: a regional hospital, older and portable machines, five of them.
_HOSPITAL2 = (
    _style("tessera-l20", (720, 576), 60, 470, 0.50, 40.0, (30, 40, 50), 29, 50, 0.95,
           (1.9, 0.9), 1.4, "teal", _D, 0.45, "right", 0, "TESSERA L20", "L14-6", False, 0.30),
    _style("norvik-c1", (640, 512), 44, 440, 0.52, 38.0, (35, 45), 44, 70, 1.30,
           (3.2, 1.2), 0.0, "deep", _P, 0.95, "left", 0, "Norvik C1", "7L4", False, 0.22),
    _style("meridian-7", (768, 576), 56, 480, 0.50, 38.0, (30, 40, 50), 33, 56, 1.05,
           (2.0, 0.9), 0.9, "bright", _D, 0.40, "left", 6, "Meridian 7", "ML6-15", False, 0.20),
    _style("pulsar-s", (600, 480), 40, 420, 0.55, 42.0, (30, 40, 50), 37, 60, 1.20,
           (2.4, 1.0), 0.4, "classic", _S, 0.38, "right", 18, "PULSAR-S", "L38", True, 0.16),
    _style("aurex-x5", (800, 600), 70, 470, 0.52, 40.0, (30, 35, 40, 45), 37, 62, 1.10,
           (2.4, 0.95), 0.6, "classic", _S, 0.42, "right", 0, "AUREX X5", "L12-4", True, 0.12),
)
# Hospital 3: a smaller hospital with four machines.
_HOSPITAL3 = (
    _style("vireo-h9", (800, 560), 64, 460, 0.50, 45.0, (30, 40, 50), 38, 64, 1.00,
           (2.1, 0.9), 0.8, "warm", _C, 0.60, "right", 0, "VIREO H9", "L15-7", True, 0.40),
    _style("kestrel-v5", (720, 540), 62, 440, 0.47, 44.0, (35, 40, 45, 50), 36, 60, 1.20,
           (2.8, 1.05), 0.0, "classic", _P, 1.00, "right", 0, "KESTREL V5", "LA523 11MHz", True, 0.25),
    _style("tessera-l12", (720, 576), 60, 470, 0.50, 40.0, (30, 40, 50), 31, 52, 0.95,
           (2.0, 0.9), 1.2, "teal", _D, 0.45, "right", 0, "TESSERA L12", "L12-5", False, 0.20),
    _style("orion-m", (640, 480), 36, 420, 0.55, 38.0, (30, 40), 42, 68, 1.35,
           (3.0, 1.15), 0.3, "warm", _S, 0.35, "left", 10, "ORION-M", "L7.5", False, 0.15),
)

SITE_SCANNERS: dict[str, tuple[ScannerStyle, ...]] = {
    "hospital1": _HOSPITAL1, "hospital2": _HOSPITAL2, "hospital3": _HOSPITAL3,
}
SCANNERS: dict[str, ScannerStyle] = {s.name: s for styles in SITE_SCANNERS.values() for s in styles}


def scanners_of(site: str) -> tuple[ScannerStyle, ...]:
    """The machines of a virtual hospital (KeyError names the known sites)."""
    if site not in SITE_SCANNERS:
        raise KeyError(f"no scanners defined for site {site!r}; known: {', '.join(SITE_SCANNERS)}")
    return SITE_SCANNERS[site]
