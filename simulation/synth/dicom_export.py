"""Write a preset's cases as a PACS export would: one DICOM study per case plus a labels.csv per site.

The same hospitals as `writer.generate` (same plans, same rendered frames), so a DICOM ingest can be
tested end to end against the PNG path. Per site:

    <out>/<site>/labels.csv                         accession_number,label,exam_date,cohort,roi_x..roi_h
    <out>/<site>/dicom/<PatientID>/ST<date>/IM00000k   two files a study, B-mode and CDFI in shuffled order

File names never say which image is which: the headers do (InstanceNumber 1 = B-mode, 2 = CDFI;
UltrasoundColorDataPresent 0/1; ImageType value 4 0001/0011; a colour-flow region only on CDFI).

How each machine exports its pixels (chosen per scanner, so every site holds a mix):

    mono       uncompressed Explicit VR Little Endian, one frame; B-mode MONOCHROME2, CDFI RGB
               meridian-9, halcyon-p3, tessera-l20, meridian-7, tessera-l12, orion-m
    rgb        as mono, but B-mode is stored RGB too (three equal channels)
               kestrel-v8, aurex-e5, norvik-c1, kestrel-v5
    jpeg-cine  JPEG Baseline (1.2.840.10008.1.2.4.50) cine, YBR_FULL_422, 5 frames an instance;
               the B-mode's rendered frame is frame 3, the CDFI's anywhere (the one with most flow)
               aurex-x7 and aurex-x5 (set RepresentativeFrameNumber), vireo-h9 and pulsar-s (do not)

Every coordinate (ultrasound regions, labels.csv ROI) is in stored-frame pixels, which are the PNG
path's screen pixels. About a quarter of the cases have the patient's name and ID burned into the
header line above the field (BurnedInAnnotation YES); no field pixel ever changes for it.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from common.errors import ClafedError
from simulation.synth.cohort import CasePlan, Preset, cohort_plan, get_preset
from simulation.synth.dicom_pixels import (
    BMODE_RENDERED_INDEX,
    as_bgr,
    bmode_cine,
    burn_patient_text,
    cdfi_cine,
    jpeg_frames,
)
from simulation.synth.layout import Layout
from simulation.synth.render import RenderedCase, render_case
from simulation.synth.scanners import SCANNERS, ScannerStyle
from simulation.synth.writer import run_cases, write_rows, write_settings

LABEL_COLUMNS = ("accession_number", "label", "exam_date", "cohort", "roi_x", "roi_y", "roi_w", "roi_h")
BURNED_IN_SHARE = 0.25
# Distinguishes the export's random streams from the render's (seed, site, case) streams.
_DICOM_STREAM = 0x4449434F
_ID_STREAM = 0x50494453
_ID_STEP = 104729  # prime to 10**6: patient numbers step through all six-digit values, never twice
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=["clafed synth dicom implementation"])


@dataclass(frozen=True)
class Encoding:
    """How a machine stores its pixels."""

    name: str
    cine: bool  # JPEG Baseline multi-frame instead of one uncompressed frame
    bmode_rgb: bool  # B-mode stored as three channels
    representative_frame: bool  # sets RepresentativeFrameNumber (cines only)


MONO = Encoding("mono", False, False, False)
RGB = Encoding("rgb", False, True, False)
CINE = Encoding("jpeg-cine", True, True, False)
CINE_MARKED = Encoding("jpeg-cine", True, True, True)
SCANNER_ENCODING: dict[str, Encoding] = {
    "aurex-x7": CINE_MARKED, "meridian-9": MONO, "kestrel-v8": RGB, "halcyon-p3": MONO, "aurex-e5": RGB,
    "tessera-l20": MONO, "norvik-c1": RGB, "meridian-7": MONO, "pulsar-s": CINE, "aurex-x5": CINE_MARKED,
    "vireo-h9": CINE, "kestrel-v5": RGB, "tessera-l12": MONO, "orion-m": MONO,
}

# Small built-in name lists: fake, but shaped like what a privacy check must find.
_SURNAMES = ("NOVAK", "OKAFOR", "LINDQVIST", "MORENO", "TANAKA", "BRENNAN", "KOWALSKI", "HUANG",
             "PETROV", "DUBOIS", "SILVA", "MEYER", "ADEYEMI", "RASK", "CHEN", "ORTEGA")
_GIVEN = {"F": ("ANNA", "MEI", "SOFIA", "GRACE", "LENA", "AMARA", "ELIF", "CLARA"),
          "M": ("JONAS", "WEI", "MARCO", "DAVID", "OMAR", "PAVEL", "LUCAS", "HIRO")}
_STAFF = ("RIVERA^ELENA", "STEIN^MARKUS", "OSEI^KOFI", "LAURENT^CLAIRE", "PARK^JI-HO", "FISCHER^ANJA")


@dataclass(frozen=True)
class Identity:
    """Who and what a study is about, drawn without rendering (so its file paths are known early)."""

    patient_name: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str
    age: str  # DICOM AS, e.g. 054Y
    referring: str
    operator: str
    accession: str
    study_id: str
    study_date: str  # YYYYMMDD
    cdfi_delay_s: int  # the CDFI image was taken this long after the B-mode one
    burned_in: bool
    file_names: tuple[str, str]  # B-mode's, CDFI's

    @property
    def study_dir(self) -> str:
        """The study's folder below the site's dicom/ folder."""
        return f"{self.patient_id}/ST{self.study_date}"


def _streams(plan: CasePlan, seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence([seed, plan.site_index, plan.case_index, _DICOM_STREAM]).spawn(2)
    return {"identity": np.random.default_rng(children[0]), "cine": np.random.default_rng(children[1])}


def _patient_id(plan: CasePlan, seed: int) -> str:
    """Unique within a site (a step prime to 10**6 from a seeded start), the site's digit in front."""
    start = int(np.random.default_rng([seed, plan.site_index, _ID_STREAM]).integers(0, 10**6))
    return f"P{plan.site_index}{(start + _ID_STEP * plan.case_index) % 10**6:06d}"


def _birth(exam: dt.date, rng: np.random.Generator) -> tuple[dt.date, int]:
    """A birth date 18-85 years before the exam, and the age on the exam day."""
    birth = exam - dt.timedelta(days=int(rng.integers(18 * 366, 86 * 365)))
    return birth, exam.year - birth.year - ((exam.month, exam.day) < (birth.month, birth.day))


def identity(plan: CasePlan, seed: int) -> Identity:
    """The case's patient, staff, numbers, burned-in decision and file names, from the seed alone."""
    rng = _streams(plan, seed)["identity"]
    sex = str(rng.choice(["F", "M"]))
    name = f"{rng.choice(_SURNAMES)}^{rng.choice(_GIVEN[sex])}"
    exam = dt.date.fromisoformat(plan.exam_date)
    birth, age = _birth(exam, rng)
    referring, operator = (str(s) for s in rng.choice(_STAFF, size=2, replace=False))
    order = rng.permutation(2) + 1
    return Identity(name, _patient_id(plan, seed), birth.strftime("%Y%m%d"), sex, f"{age:03d}Y",
                    referring, operator, f"A{plan.site_index}{plan.case_index:06d}", f"E{plan.case_index:05d}",
                    exam.strftime("%Y%m%d"), int(rng.integers(20, 120)), bool(rng.random() < BURNED_IN_SHARE),
                    (f"IM{order[0]:06d}", f"IM{order[1]:06d}"))


def study_files(plan: CasePlan, seed: int) -> tuple[str, str]:
    """Paths of the B-mode and CDFI files below the site folder."""
    ident = identity(plan, seed)
    return tuple(f"dicom/{ident.study_dir}/{name}" for name in ident.file_names)


def _uid(preset: str, seed: int, plan: CasePlan, what: str) -> str:
    """A UID that is the same for the same case and seed, and differs for anything else."""
    parts = ("clafed synth dicom", preset, str(seed), plan.site, plan.case_id, plan.scanner, plan.label,
             plan.exam_date, what)
    return generate_uid(entropy_srcs=["|".join(parts)])  # pydicom's root; prefix=None would ignore entropy


def manufacturer(style: ScannerStyle) -> str:
    """The maker's name as the title's first word says it (AUREX X7 -> Aurex, PULSAR-S -> Pulsar)."""
    return style.title.split()[0].split("-")[0].capitalize()


def _clock(text_clock: str, delay_s: int = 0) -> str:
    """HH:MM:SS (+ a delay) as DICOM TM."""
    moment = dt.datetime.strptime(text_clock, "%H:%M:%S") + dt.timedelta(seconds=delay_s)
    return moment.strftime("%H%M%S")


def _study_attributes(ds: Dataset, plan: CasePlan, ident: Identity, style: ScannerStyle,
                      case: RenderedCase, uids: dict[str, str]) -> None:
    """Patient, study, series and equipment: the same in both instances of a study."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = ident.patient_name, ident.patient_id
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = ident.birth_date, ident.sex, ident.age
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = _clock(case.text.clock)
    ds.AccessionNumber, ds.StudyID = ident.accession, ident.study_id
    ds.ReferringPhysicianName, ds.OperatorsName = ident.referring, ident.operator
    ds.StudyDescription, ds.SeriesDescription, ds.BodyPartExamined = "US NECK", "NECK LYMPH NODES", "NECK"
    ds.Modality, ds.SeriesNumber = "US", 1
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer(style), style.title
    ds.InstitutionName = plan.site
    ds.TransducerData = style.probe


def _region(box: tuple[int, int, int, int], data_type: int, layout: Layout) -> Dataset:
    """One calibrated region, (x0, y0, x1, y1) inclusive in stored pixels, cm per pixel both ways."""
    item = Dataset()
    item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, data_type, 0
    (item.RegionLocationMinX0, item.RegionLocationMinY0,
     item.RegionLocationMaxX1, item.RegionLocationMaxY1) = (int(v) for v in box)
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
    item.PhysicalDeltaX = item.PhysicalDeltaY = float(layout.mm_per_px) / 10.0
    return item


def tissue_box(layout: Layout) -> tuple[int, int, int, int]:
    """The field rectangle, inclusive."""
    return (layout.field_x, layout.field_y, layout.field_x + layout.field_w - 1,
            layout.field_y + layout.field_h - 1)


def colour_flow_box(colour_box: np.ndarray, layout: Layout) -> tuple[int, int, int, int]:
    """Bounding box (inclusive) of where Doppler colour may appear, clipped to the field."""
    ys, xs = np.nonzero(colour_box)
    fx0, fy0, fx1, fy1 = tissue_box(layout)
    return (max(fx0, int(xs.min())), max(fy0, int(ys.min())), min(fx1, int(xs.max())), min(fy1, int(ys.max())))


def _regions(case: RenderedCase, cdfi: bool) -> Sequence:
    """Tissue region on both instances; the colour-flow region on the CDFI one only."""
    tissue = _region(tissue_box(case.layout), 1, case.layout)
    tissue.ReferencePixelX0, tissue.ReferencePixelY0 = case.layout.field_w // 2, 0  # skin line, centre
    tissue.ReferencePixelPhysicalValueX = tissue.ReferencePixelPhysicalValueY = 0.0
    items = [tissue]
    if cdfi:
        items.append(_region(colour_flow_box(case.colour_box, case.layout), 2, case.layout))
    return Sequence(items)


def _uncompressed(ds: Dataset, frame: np.ndarray, rgb: bool) -> str:
    """One frame as stored bytes: grey MONOCHROME2 or RGB (planar configuration 0)."""
    if rgb:
        pixels = as_bgr(frame)[:, :, ::-1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        pixels = frame
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.LossyImageCompression = "00"
    return ExplicitVRLittleEndian


def _cine(ds: Dataset, frames: list[np.ndarray], frame_rate: int, representative: int | None) -> str:
    """Frames as JPEG Baseline YBR_FULL_422, encapsulated with a basic offset table."""
    encoded = jpeg_frames(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.NumberOfFrames, ds.FrameIncrementPointer = len(frames), 0x00181063  # FrameTime
    ds.FrameTime, ds.CineRate = f"{1000.0 / frame_rate:.1f}", frame_rate
    if representative is not None:
        ds.RepresentativeFrameNumber = representative
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ratio = sum(f.shape[0] * f.shape[1] * 3 for f in frames) / sum(len(e) for e in encoded)
    ds.LossyImageCompressionRatio = f"{ratio:.2f}"
    ds.PixelData = encapsulate(encoded, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return JPEGBaseline8Bit


def _image(ds: Dataset, frames: list[np.ndarray], rendered: int, encoding: Encoding, cdfi: bool,
           frame_rate: int) -> str:
    """Image pixel, US image and cine attributes; returns the transfer syntax to write with."""
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.UltrasoundColorDataPresent = int(cdfi)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SMALL PARTS", "0011" if cdfi else "0001"]
    if encoding.cine:
        return _cine(ds, frames, frame_rate, rendered + 1 if encoding.representative_frame else None)
    return _uncompressed(ds, frames[0], rgb=cdfi or encoding.bmode_rgb)


def _save(path: Path, ds: Dataset, sop_class: str, syntax: str) -> None:
    """A Part 10 file: preamble, file meta with a fixed implementation, then the dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID, meta.ImplementationVersionName = _IMPLEMENTATION_UID, "CLAFED_SYNTH"
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _frames(case: RenderedCase, style: ScannerStyle, encoding: Encoding, burned: str | None,
            rng: np.random.Generator) -> tuple[tuple[list[np.ndarray], int], tuple[list[np.ndarray], int]]:
    """(frames, rendered index) of the B-mode and the CDFI instance, patient text burned in if asked."""
    bus, cdfi = case.bus.copy(), case.cdfi.copy()
    if burned:
        burn_patient_text(bus, style, case.layout, burned)
        burn_patient_text(cdfi, style, case.layout, burned)
    if not encoding.cine:
        return ([bus], 0), ([cdfi], 0)
    return (bmode_cine(bus, case.layout, rng), BMODE_RENDERED_INDEX), cdfi_cine(cdfi, case.bus, rng)


def write_study(plan: CasePlan, seed: int, preset: str, out_dir: str) -> dict[str, str]:
    """Render one case, write its study (B-mode and CDFI instance) and return its labels row."""
    case = render_case(plan, seed)
    style, encoding = SCANNERS[plan.scanner], SCANNER_ENCODING[plan.scanner]
    ident = identity(plan, seed)
    uids = {what: _uid(preset, seed, plan, what) for what in ("study", "series", "bmode", "cdfi")}
    burned = f"{ident.patient_name.replace('^', ' ')} {ident.patient_id}" if ident.burned_in else None
    instances = _frames(case, style, encoding, burned, _streams(plan, seed)["cine"])
    site = Path(out_dir) / plan.site
    for number, ((frames, rendered), rel) in enumerate(zip(instances, study_files(plan, seed)), start=1):
        cdfi = number == 2
        ds = Dataset()
        _study_attributes(ds, plan, ident, style, case, uids)
        sop_class = UltrasoundMultiFrameImageStorage if encoding.cine else UltrasoundImageStorage
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uids["cdfi" if cdfi else "bmode"]
        ds.InstanceNumber = number
        ds.ContentTime = _clock(case.text.clock, ident.cdfi_delay_s if cdfi else 0)
        ds.BurnedInAnnotation = "YES" if ident.burned_in else "NO"
        ds.SequenceOfUltrasoundRegions = _regions(case, cdfi)
        syntax = _image(ds, frames, rendered, encoding, cdfi, case.text.frame_rate)
        _save(site / rel, ds, sop_class, syntax)
    x, y, w, h = case.roi
    return {"accession_number": ident.accession, "label": plan.label, "exam_date": plan.exam_date,
            "cohort": plan.cohort, "roi_x": str(x), "roi_y": str(y), "roi_w": str(w), "roi_h": str(h)}


def _refuse_stale(site_dir: Path, plans: list[CasePlan], seed: int) -> None:
    """Stop before writing if the site's dicom/ folder holds files this export would not write.

    An ingest reads every file below dicom/, so studies left by another seed or preset would be
    mixed in (with clashing accession numbers); rewriting the same export in place is fine.
    """
    dicom = site_dir / "dicom"
    if not dicom.exists():
        return
    planned = {site_dir / rel for plan in plans for rel in study_files(plan, seed)}
    stale = sorted(p for p in dicom.rglob("*") if p.is_file() and p not in planned)
    if stale:
        raise ClafedError(f"{dicom} holds {len(stale)} file(s) this export would not write (another seed or "
                          f"preset?), e.g. {stale[0]}; write to an empty folder or remove {dicom}")


def write_labels(path: Path, rows: list[dict[str, str]]) -> None:
    """Write labels rows in accession-number order with the fixed column order."""
    write_rows(path, rows, LABEL_COLUMNS, "accession_number")


def generate_dicom(preset: str | Preset, seed: int, out_dir: str | Path, workers: int | None = None) -> dict[str, Path]:
    """Write a preset as DICOM studies into `out_dir/<site>/` and return each site's labels.csv.

    The arguments are `writer.generate`'s (the same cases it writes as PNG), except that the same
    export is overwritten in place but a site's dicom/ folder holding other files is refused
    (ClafedError): studies of another seed would mix with these under the same accessions.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    preset = get_preset(preset)
    out_dir = Path(out_dir)
    plans = cohort_plan(preset, seed)
    for site in preset.sites:
        _refuse_stale(out_dir / site, [p for p in plans if p.site == site], seed)
        (out_dir / site / "dicom").mkdir(parents=True, exist_ok=True)
    jobs = [(plan, seed, preset.name, str(out_dir)) for plan in plans]
    rows = run_cases(write_study, jobs, workers or os.cpu_count() or 1)
    labels = {}
    for site in preset.sites:
        labels[site] = out_dir / site / "labels.csv"
        accessions = {identity(p, seed).accession for p in plans if p.site == site}
        write_labels(labels[site], [r for r in rows if r["accession_number"] in accessions])
    write_settings(out_dir / "synth.json", preset, seed, format="dicom")
    return labels


