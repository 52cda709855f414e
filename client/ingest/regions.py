"""Where the image is on an ultrasound frame: the DICOM `SequenceOfUltrasoundRegions`.

Scanners export the whole screen: the machine's header (often with the patient's name), a
parameter panel and a ruler around the imaging area. The regions say where the B-mode (tissue)
and colour-flow areas are and how many mm a pixel is; cropping to the tissue region is what keeps
burned-in text out of the site folder.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

# RegionDataType (DICOM PS3.3 C.8.5.5.1.2): what a region shows.
TISSUE, COLOUR_FLOW = 1, 2
SPECTRAL = {3, 4}  # PW / CW spectral Doppler: a trace, not an image of the node
# PhysicalUnitsX/YDirection: 3 = cm.
CM = 3
# Largest integer factor by which a frame may have been downscaled after its regions were written.
MAX_RESCALE = 4


class RegionError(ValueError):
    """The regions of a file cannot be used; the message says why (the caller names the file)."""


@dataclass(frozen=True)
class Region:
    """One region in stored-frame pixels; x1, y1 exclusive. mm_per_px is (x, y) when given in cm."""

    x0: int
    y0: int
    x1: int
    y1: int
    data_type: int
    mm_per_px: tuple[float, float] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h)."""
        return self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def fits(self, rows: int, cols: int) -> bool:
        return 0 <= self.x0 < self.x1 <= cols and 0 <= self.y0 < self.y1 <= rows


def read_regions(ds) -> list[Region]:
    """Every region of a dataset (empty when it has none)."""
    out = []
    for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1) + 1, int(item.RegionLocationMaxY1) + 1  # max is inclusive
            kind = int(item.get("RegionDataType", 0) or 0)
            spacing = None
            units = (item.get("PhysicalUnitsXDirection"), item.get("PhysicalUnitsYDirection"))
            if units == (CM, CM) and item.get("PhysicalDeltaX") and item.get("PhysicalDeltaY"):
                spacing = (10.0 * abs(float(item.PhysicalDeltaX)), 10.0 * abs(float(item.PhysicalDeltaY)))
        except (AttributeError, TypeError, ValueError) as err:
            raise RegionError(f"an ultrasound region lacks its location or has a malformed spacing ({err})") from None
        out.append(Region(x0, y0, x1, y1, kind, spacing))
    return out


def fit_regions(regions: list[Region], rows: int, cols: int, rescale: bool) -> tuple[list[Region], int]:
    """The regions on a `rows` x `cols` frame, and the factor they were divided by (1: as written).

    Regions that reach past the frame mean the file was resized after they were written. With
    `rescale`, the smallest integer factor (2..MAX_RESCALE) that brings every region inside is
    applied to locations and spacing; without it the file is refused rather than cropped wrongly.
    """
    if all(r.fits(rows, cols) for r in regions):
        return regions, 1
    where = "; ".join(f"{r.x0}..{r.x1 - 1} x {r.y0}..{r.y1 - 1}" for r in regions)
    if rescale:
        for k in range(2, MAX_RESCALE + 1):
            scaled = [_scaled(r, k) for r in regions]
            if all(s.fits(rows, cols) for s in scaled):
                return scaled, k
    hint = "" if rescale else " (pass --rescale-regions if the frame was downscaled after export)"
    raise RegionError(f"ultrasound region(s) {where} lie outside the {cols} x {rows} frame{hint}")


def _scaled(region: Region, k: int) -> Region:
    spacing = None if region.mm_per_px is None else (region.mm_per_px[0] * k, region.mm_per_px[1] * k)
    return replace(region, x0=region.x0 // k, y0=region.y0 // k, x1=-(-region.x1 // k), y1=-(-region.y1 // k),
                   mm_per_px=spacing)


def tissue_region(regions: list[Region]) -> Region | None:
    """The imaging area to crop to: the largest tissue region, else the largest region that is
    neither colour flow nor spectral (some scanners leave the type unset); None when there is none.
    A colour-flow box alone is not the image: the node usually reaches past it."""
    if any(r.data_type in SPECTRAL for r in regions):
        raise RegionError("the frame holds a spectral Doppler trace (PW/CW region), not a B-mode or CDFI image")
    pool = [r for r in regions if r.data_type == TISSUE] or [r for r in regions if r.data_type != COLOUR_FLOW]
    return max(pool, key=lambda r: r.area) if pool else None


def colour_flow_region(regions: list[Region]) -> Region | None:
    """The largest colour-flow region, or None."""
    flow = [r for r in regions if r.data_type == COLOUR_FLOW]
    return max(flow, key=lambda r: r.area) if flow else None
