"""Finding a DICOM export's files and reading their headers, grouped by study.

Headers are read with large values deferred (`defer_size`), so a folder of cines is scanned
without decoding any pixel; pixels are decoded study by study later.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from client.ingest.privacy import PrivacyInventory

DICOMDIR = "DICOMDIR"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR


@dataclass(frozen=True)
class Instance:
    """One image file's header facts (no pixel data)."""

    path: Path
    rel: str  # relative to the input folder: how refusal lines name it
    study_uid: str
    series_uid: str
    series_number: int
    instance_number: int
    acquired: str  # AcquisitionDateTime, else ContentDate + ContentTime ('' when absent)
    accession: str
    study_date: str | None  # ISO
    scanner: str

    @property
    def order(self) -> tuple:
        """Acquisition order within a study."""
        return self.series_number, self.instance_number, self.acquired, self.rel


def find_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Every file to look at, and refusals met on the way.

    With a DICOMDIR at the top, the files its image records reference (missing ones are refused);
    otherwise every file under the folder, hidden ones included.
    """
    index = folder / DICOMDIR
    if not index.is_file():
        return sorted(p for p in folder.rglob("*") if p.is_file()), []
    import pydicom

    try:
        directory = pydicom.dcmread(index)
    except Exception as err:
        return [], [(DICOMDIR, f"unreadable DICOMDIR ({type(err).__name__}: {err})")]
    files, refused = [], []
    for record in directory.get("DirectoryRecordSequence", []):
        parts = record.get("ReferencedFileID")
        if not parts:
            continue
        parts = [parts] if isinstance(parts, str) else list(parts)
        path = folder.joinpath(*parts)
        if path.is_file():
            files.append(path)
        else:
            refused.append(("/".join(parts), "listed in the DICOMDIR but missing"))
    return sorted(set(files)), refused


def _iso(date: str | None) -> str | None:
    date = (date or "").strip()
    if not re.fullmatch(r"\d{8}", date):
        return None
    try:
        return dt.date(int(date[:4]), int(date[4:6]), int(date[6:])).isoformat()
    except ValueError:
        return None


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def scanner_name(ds) -> str:
    """Manufacturer and model as one plain string (no serial numbers)."""
    name = f"{ds.get('Manufacturer', '') or ''} {ds.get('ManufacturerModelName', '') or ''}"
    return re.sub(r"[^A-Za-z0-9 ._-]+", "", name).strip()[:64]


def read_header(path: Path, rel: str, inventory: PrivacyInventory) -> Instance:
    """An image file's Instance; ValueError names what makes it unusable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        raise ValueError("not a DICOM file (no DICM preamble)") from None
    except Exception as err:  # truncated or corrupt files raise assorted errors
        raise ValueError(f"unreadable DICOM ({type(err).__name__}: {err})") from None
    inventory.add_header(ds)
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY:
        raise ValueError("a DICOMDIR index below the top folder: ingest the folder that holds it")
    if "PixelData" not in ds:
        raise ValueError("no pixel data (a truncated file, a report or a structured document?)")
    modality = str(ds.get("Modality", "")).strip()
    if modality != "US":
        raise ValueError(f"modality {modality or 'missing'}, not ultrasound (US)")
    if not ds.get("StudyInstanceUID"):
        raise ValueError("no StudyInstanceUID: the file cannot be paired with its study")
    acquired = str(ds.get("AcquisitionDateTime", "") or f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}")
    return Instance(path, rel, str(ds.StudyInstanceUID), str(ds.get("SeriesInstanceUID", "")),
                    _int(ds.get("SeriesNumber")), _int(ds.get("InstanceNumber")), acquired,
                    str(ds.get("AccessionNumber", "") or "").strip(), _iso(ds.get("StudyDate")), scanner_name(ds))


def scan(folder: Path, inventory: PrivacyInventory) -> tuple[dict[str, list[Instance]], list[tuple[str, str]]]:
    """({study uid: its instances}, [(file, reason refused)]) for every file under `folder`."""
    files, refused = find_files(folder)
    studies: dict[str, list[Instance]] = {}
    for path in files:
        rel = path.relative_to(folder).as_posix()
        try:
            instance = read_header(path, rel, inventory)
        except ValueError as err:
            refused.append((rel, str(err)))
            continue
        studies.setdefault(instance.study_uid, []).append(instance)
    return studies, refused
