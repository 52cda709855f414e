"""One DICOM image made ready for the site folder: classified as B-mode or CDFI, its frame chosen
and decoded, and cropped to the imaging region."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from client.ingest.frames import FrameError, choose_frame, decode_frame, frame_count, key_frame
from client.ingest.privacy import PrivacyInventory, text_like_marks
from client.ingest.regions import RegionError, colour_flow_region, fit_regions, read_regions, tissue_region
from client.ingest.scan import Instance
from common.imaging import colour_fraction, crop

BMODE, CDFI = "bmode", "cdfi"


@dataclass(frozen=True)
class ImageOptions:
    """How frames are chosen, classified and cropped (the `clafed ingest` flags)."""

    frame: str = "auto"
    rescale_regions: bool = False
    allow_uncropped: bool = False
    # Below this share of coloured pixels inside the imaging area, an image without a colour-flow
    # region is B-mode: scanners' coloured markers and logos stay well under it.
    min_colour_fraction: float = 0.002
    max_pixels: int = 50_000_000


@dataclass(frozen=True)
class ReadyImage:
    """An image ready to write: its cropped RGB frame and what was decided on the way."""

    instance: Instance | None  # None for a dataset read from memory (an upload to `clafed serve`)
    kind: str  # BMODE | CDFI
    rgb: np.ndarray  # cropped to the imaging region
    crop: tuple[int, int, int, int]  # (x, y, w, h) in the stored frame
    mm_per_px: tuple[float, float] | None
    frame_index: int
    frame_rule: str  # single | key | middle | most-flow
    regions_rescaled: int  # 1 when the regions fit as written
    encoding: str  # transfer syntax, photometric interpretation, frames: for the ingest report


def prepare_image(instance: Instance, options: ImageOptions, inventory: PrivacyInventory) -> ReadyImage:
    """Read, classify, choose the frame and crop; ValueError says why the file cannot be used."""
    import pydicom

    try:
        ds = pydicom.dcmread(instance.path)
    except Exception as err:
        raise ValueError(f"unreadable DICOM ({type(err).__name__}: {err})") from None
    return prepare_dataset(ds, options, inventory, instance)


def prepare_dataset(ds, options: ImageOptions, inventory: PrivacyInventory,
                    instance: Instance | None = None) -> ReadyImage:
    """`prepare_image` for a dataset already read; ValueError says why it cannot be used."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise ValueError("no Rows/Columns in the header")
    if rows * cols > options.max_pixels:
        raise ValueError(f"frame of {cols} x {rows} px is larger than {options.max_pixels:,} pixels")
    try:
        regions, factor = fit_regions(read_regions(ds), rows, cols, options.rescale_regions)
        tissue, flow = tissue_region(regions), colour_flow_region(regions)
        if tissue is None and not options.allow_uncropped:
            raise RegionError("no ultrasound region (SequenceOfUltrasoundRegions) to crop the screen's text "
                              "away; pass --allow-uncropped only if the frames hold no burned-in text")
        box = tissue.box if tissue is not None else (0, 0, cols, rows)
        decoded: dict[int, np.ndarray] = {}  # the frame looked at for colour is often the one kept
        kind = CDFI if flow is not None or _coloured(ds, box, options, decoded) else BMODE
        index, rule, frame = choose_frame(ds, options.frame, kind == CDFI, flow.box if flow else box, decoded)
    except (RegionError, FrameError) as err:
        raise ValueError(str(err)) from None
    if tissue is None:
        inventory.without_region += 1
    elif text_like_marks(frame, box):
        inventory.text_outside_region += 1
    syntax = ds.file_meta.get("TransferSyntaxUID")
    encoding = (f"{syntax.name if syntax else 'no transfer syntax'}, {ds.get('PhotometricInterpretation', '')}, "
                f"{'cine' if frame_count(ds) > 1 else 'single frame'}")
    return ReadyImage(instance, kind, np.ascontiguousarray(crop(frame, box)), box,
                      tissue.mm_per_px if tissue is not None else None, index, rule, factor, encoding)


def _coloured(ds, box: tuple[int, int, int, int], options: ImageOptions, decoded: dict[int, np.ndarray]) -> bool:
    """Colour content decides when no region says colour flow: the marked or middle frame."""
    marked = key_frame(ds)
    frame = decode_frame(ds, marked if marked is not None else frame_count(ds) // 2, decoded)
    return colour_fraction(crop(frame, box)) >= options.min_colour_fraction
