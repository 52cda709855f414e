"""Hand-made ultrasound DICOM files for the ingest's tests: a screen with a header band, an
imaging region, optional colour flow, burned-in text and cines, in the encodings scanners use."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, UltrasoundImageStorage, generate_uid

SCREEN = (160, 200)  # rows, cols
FIELD = (40, 30, 140, 120)  # x0, y0, x1, y1 (exclusive) of the imaging region
NAME = "DOE^JANE"


@dataclass
class Study:
    """One study's shared header values."""

    accession: str = "ACC0001"
    uid: str = field(default_factory=generate_uid)
    patient: str = NAME
    patient_id: str = "PID998877"
    date: str = "20200315"


def screen(seed: int, burn: str | None = None) -> np.ndarray:
    """A grey speckle field inside FIELD on a black screen (RGB), with a node-like dark ellipse."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros(SCREEN + (3,), np.uint8)
    x0, y0, x1, y1 = FIELD
    grey = rng.integers(60, 120, (y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.ellipse(grey, ((x1 - x0) // 2, (y1 - y0) // 2), (30, 18), 0, 0, 360, 30, -1)
    rgb[y0:y1, x0:x1] = grey[:, :, None]
    if burn:
        cv2.putText(rgb, burn, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 220, 220), 1, cv2.LINE_AA)
    return rgb


def add_flow(rgb: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Red and blue flow inside the imaging region (a share `amount` of a vessel pair)."""
    out = rgb.copy()
    x0, y0, x1, y1 = FIELD
    length = int(round(40 * amount))
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if length:
        cv2.line(out, (cx - 20, cy), (cx - 20 + length, cy), (220, 30, 30), 3)
        cv2.line(out, (cx - 20, cy + 8), (cx - 20 + length, cy + 8), (30, 30, 220), 3)
    return out


def region(box: tuple[int, int, int, int], data_type: int, mm: float = 0.1) -> Dataset:
    """A SequenceOfUltrasoundRegions item; box is (x0, y0, x1, y1) exclusive."""
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, data_type, 0
    item.RegionLocationMinX0, item.RegionLocationMinY0 = box[0], box[1]
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = box[2] - 1, box[3] - 1
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX = item.PhysicalDeltaY = mm / 10.0
    return item


def write_image(path: Path, study: Study, frames: list[np.ndarray] | np.ndarray, instance: int, *,
                series: int = 1, series_uid: str | None = None, flow_box: tuple[int, int, int, int] | None = None,
                regions: list[Dataset] | None = None, monochrome: bool = False, jpeg: bool = False,
                key_frame: int | None = None, burned_in: bool = False, modality: str = "US") -> Path:
    """Write one instance: `frames` is one RGB frame or a list (a cine); monochrome keeps channel 0."""
    frames = [frames] if isinstance(frames, np.ndarray) else list(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series_uid or generate_uid(entropy_srcs=[study.uid, str(series)])
    ds.PatientName, ds.PatientID, ds.AccessionNumber = study.patient, study.patient_id, study.accession
    ds.StudyDate, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = study.date, modality, series, instance
    ds.StudyTime, ds.StudyID = "101500", "1"
    ds.InstitutionName, ds.Manufacturer, ds.ManufacturerModelName = "St Elsewhere", "ACME", "Sono 5"
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    items = regions if regions is not None else [region(FIELD, 1)] + ([region(flow_box, 2)] if flow_box else [])
    if items:
        ds.SequenceOfUltrasoundRegions = items
    if key_frame is not None:
        ds.RepresentativeFrameNumber = key_frame + 1
    stack = np.stack(frames)
    if monochrome:
        ds.set_pixel_data(stack[..., 0] if len(frames) > 1 else stack[0, ..., 0], "MONOCHROME2", 8)
    elif jpeg:
        _set_jpeg(ds, frames)
    else:
        ds.set_pixel_data(stack if len(frames) > 1 else stack[0], "RGB", 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _set_jpeg(ds: Dataset, frames: list[np.ndarray]) -> None:
    """JPEG Baseline YBR_FULL_422, one OpenCV-encoded JPEG per frame."""
    from pydicom.encaps import encapsulate

    encoded = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
               for f in frames]
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"


def write_pair(folder: Path, study: Study, seed: int, *, burn: str | None = None, **kwargs) -> tuple[Path, Path]:
    """A B-mode and a CDFI instance of one node, file names that do not say which is which."""
    bus = screen(seed, burn)
    bmode = write_image(folder / f"{study.accession}-x1.dcm", study, bus, 1, monochrome=kwargs.pop("monochrome", False),
                        burned_in=bool(burn), **kwargs)
    flow_box = (FIELD[0] + 20, FIELD[1] + 20, FIELD[2] - 20, FIELD[3] - 20)
    cdfi = write_image(folder / f"{study.accession}-x2.dcm", study, add_flow(bus), 2, flow_box=flow_box,
                       burned_in=bool(burn), **kwargs)
    return bmode, cdfi


def labels_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    """A labels CSV from dict rows (columns of the first row)."""
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def iso(date: str) -> str:
    return dt.date(int(date[:4]), int(date[4:6]), int(date[6:])).isoformat()


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)
