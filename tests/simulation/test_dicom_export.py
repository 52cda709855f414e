"""`clafed synth --format dicom`: a PACS-like export of the same cases the PNG path writes."""
from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import UID

from common.cli import build_parser, main
from common.errors import ClafedError
from common.imaging import CHROMA_THRESHOLD, colour_fraction
from simulation.synth import CohortSpec, Preset, cohort_plan, dicom_export, dicom_pixels, generate, render_case
from simulation.synth.dicom_export import LABEL_COLUMNS, SCANNER_ENCODING, generate_dicom, identity

# Seed 3 of this preset holds every encoding (mono, rgb, marked and unmarked cines) and burned-in
# text on an uncompressed study; test_the_tiny_export_covers_every_case_kind keeps that true.
TINY = Preset("tiny-dicom", (
    CohortSpec("hospital1", "train", (1, 1, 1, 1), "2019-01-01", "2020-12-31"),
    CohortSpec("hospital3", "external", (1, 1, 1, 0), "2018-01-01", "2021-12-31"),
))
SEED = 3
US_SINGLE, US_MULTI = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.3.1"
EXPLICIT_LE, JPEG_BASELINE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """The tiny preset written both ways: out/png and out/dicom."""
    root = tmp_path_factory.mktemp("dicom_export")
    generate(TINY, SEED, root / "png", workers=1)
    generate_dicom(TINY, SEED, root / "dicom", workers=1)
    return root


@pytest.fixture(scope="module")
def cases():
    """accession -> (plan, rendered case), with the accession the contract promises."""
    return {f"A{p.site_index}{p.case_index:06d}": (p, render_case(p, SEED)) for p in cohort_plan(TINY, SEED)}


@pytest.fixture(scope="module")
def studies(out):
    """accession -> {InstanceNumber: (path, dataset)} over every file below <site>/dicom."""
    found: dict[str, dict[int, tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted((out / "dicom").glob("*/dicom/**/*")):
        if path.is_file():
            ds = pydicom.dcmread(path)
            found.setdefault(ds.AccessionNumber, {})[int(ds.InstanceNumber)] = (path, ds)
    return found


def _png(out: Path, plan, modality: str) -> np.ndarray:
    """The PNG path's frame as stored pixels: grey for B-mode, RGB for CDFI."""
    image = cv2.imread(str(out / "png" / plan.site / "images" / f"{plan.case_id}_{modality}.png"), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else image[:, :, ::-1]


def _frames(ds) -> list[np.ndarray]:
    """Every frame decoded one by one, as RGB (or grey for MONOCHROME2)."""
    return [pixel_array(ds, index=i) for i in range(int(ds.get("NumberOfFrames", 1)))]


def _field(image: np.ndarray, region) -> np.ndarray:
    return image[region.RegionLocationMinY0:region.RegionLocationMaxY1 + 1,
                 region.RegionLocationMinX0:region.RegionLocationMaxX1 + 1]


def _as_rgb(grey_or_rgb: np.ndarray) -> np.ndarray:
    return grey_or_rgb if grey_or_rgb.ndim == 3 else np.repeat(grey_or_rgb[:, :, None], 3, axis=2)


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(_as_rgb(a).astype(np.int16) - _as_rgb(b).astype(np.int16)).mean())


def _rendered_index(frames: list[np.ndarray], reference: np.ndarray) -> int:
    """The frame closest to the PNG where the PNG shows colour (everywhere for grey frames).

    Not the whole frame: JPEG smears sparse colour dots, so a frame with less flow can sit
    closer to the PNG overall than the rendered frame does.
    """
    ref = _as_rgb(reference).astype(np.int16)
    colour = ref.max(axis=2) - ref.min(axis=2) > CHROMA_THRESHOLD
    where = colour if colour.any() else np.ones(colour.shape, bool)
    return int(np.argmin([np.abs(_as_rgb(f)[where].astype(np.int16) - ref[where]).mean() for f in frames]))


def test_the_tiny_export_covers_every_case_kind(cases):
    kinds = {(SCANNER_ENCODING[p.scanner].name, SCANNER_ENCODING[p.scanner].representative_frame)
             for p, _ in cases.values()}
    assert kinds == {("mono", False), ("rgb", False), ("jpeg-cine", True), ("jpeg-cine", False)}
    burned = {(identity(p, SEED).burned_in, SCANNER_ENCODING[p.scanner].cine) for p, _ in cases.values()}
    assert {(True, False), (False, False), (True, True)} <= burned


def test_every_file_is_part10_dicom_with_the_study_tags(out, studies, cases):
    files = [p for p in (out / "dicom").glob("*/dicom/**/*") if p.is_file()]
    assert len(files) == 2 * len(cases) and set(studies) == set(cases)
    for accession, instances in studies.items():
        plan, _ = cases[accession]
        assert sorted(instances) == [1, 2]
        (bus_path, bus), (cdfi_path, cdfi) = instances[1], instances[2]
        assert bus_path.parent == cdfi_path.parent and bus_path.parts[-5:-3] == (plan.site, "dicom")
        for path, ds in instances.values():
            assert path.read_bytes()[128:132] == b"DICM" and ds.preamble == b"\0" * 128
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert path.parts[-3] == ds.PatientID
            for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
                assert UID(uid).is_valid and len(uid) <= 64
            assert ds.Modality == "US" and ds.SeriesNumber == 1 and ds.InstitutionName == plan.site
            cine = SCANNER_ENCODING[plan.scanner].cine
            assert ds.SOPClassUID == (US_MULTI if cine else US_SINGLE)
            assert ds.StudyDate == plan.exam_date.replace("-", "") and len(ds.StudyTime) == 6
            assert re.fullmatch(r"[A-Z-]+\^[A-Z-]+", str(ds.PatientName)) and ds.PatientID.startswith("P")
            assert len(ds.PatientBirthDate) == 8 and ds.PatientSex in ("F", "M")
            assert ds.ReferringPhysicianName and ds.OperatorsName and ds.StudyID
            assert ds.Manufacturer and ds.ManufacturerModelName
            assert len(ds.AccessionNumber) <= 16
        assert bus.StudyInstanceUID == cdfi.StudyInstanceUID and bus.SeriesInstanceUID == cdfi.SeriesInstanceUID
        assert bus.SOPInstanceUID != cdfi.SOPInstanceUID
        assert (bus.UltrasoundColorDataPresent, cdfi.UltrasoundColorDataPresent) == (0, 1)
    study_uids = {i[1][1].StudyInstanceUID for i in studies.values()}
    patients = {i[1][1].PatientID for i in studies.values()}
    assert len(study_uids) == len(patients) == len(cases)  # one study, one patient a case


def test_labels_hold_the_png_manifests_label_date_cohort_and_roi(out, cases):
    for site in TINY.sites:
        with open(out / "dicom" / site / "labels.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames) == LABEL_COLUMNS
            labels = list(reader)
        with open(out / "png" / site / "manifest.csv", newline="") as handle:
            manifest = {r["case_id"]: r for r in csv.DictReader(handle)}
        accessions = [r["accession_number"] for r in labels]
        assert accessions == sorted(accessions) and len(accessions) == len(manifest)
        for row in labels:
            plan, _ = cases[row["accession_number"]]
            png = manifest[plan.case_id]
            for key in ("label", "exam_date", "cohort", "roi_x", "roi_y", "roi_w", "roi_h"):
                assert row[key] == png[key], (row, png)


def test_encodings_decode_to_the_png_pixels_in_the_tissue_region(out, studies, cases):
    for accession, instances in studies.items():
        plan, case = cases[accession]
        encoding = SCANNER_ENCODING[plan.scanner]
        for number, modality in ((1, "bus"), (2, "cdfi")):
            ds = instances[number][1]
            tissue = ds.SequenceOfUltrasoundRegions[0]
            layout = case.layout
            assert (tissue.RegionSpatialFormat, tissue.RegionDataType, tissue.RegionFlags) == (1, 1, 0)
            assert (tissue.RegionLocationMinX0, tissue.RegionLocationMinY0, tissue.RegionLocationMaxX1,
                    tissue.RegionLocationMaxY1) == (layout.field_x, layout.field_y, layout.field_x + layout.field_w - 1,
                                                    layout.field_y + layout.field_h - 1)
            assert tissue.PhysicalUnitsXDirection == tissue.PhysicalUnitsYDirection == 3
            assert tissue.PhysicalDeltaX == tissue.PhysicalDeltaY == pytest.approx(layout.mm_per_px / 10)
            frames, png = _frames(ds), _png(out, plan, modality)
            if encoding.cine:
                assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE and ds.PhotometricInterpretation == "YBR_FULL_422"
                assert len(frames) == ds.NumberOfFrames == 5 and float(ds.FrameTime) > 0
                assert all(f.shape == png.shape[:2] + (3,) for f in frames)  # pydicom hands back RGB
                rendered = frames[_rendered_index(frames, png)]
                assert _mae(_field(rendered, tissue), _field(png, tissue)) < 3.0
                if modality == "cdfi":  # RGB, not BGR: the colour pixels keep their hue
                    got, want = _field(rendered, tissue).astype(np.int16), _field(png, tissue).astype(np.int16)
                    colour = want.max(axis=2) - want.min(axis=2) > CHROMA_THRESHOLD
                    assert colour.any() and np.abs(got[colour] - want[colour]).mean() < 0.5 * np.abs(
                        got[colour][:, ::-1] - want[colour]).mean()
            else:
                assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE and len(frames) == 1
                stored_rgb = modality == "cdfi" or encoding.bmode_rgb
                assert ds.PhotometricInterpretation == ("RGB" if stored_rgb else "MONOCHROME2")
                assert frames[0].shape == png.shape[:2] + ((3,) if stored_rgb else ())
                assert np.array_equal(_field(frames[0], tissue), _field(_as_rgb(png) if stored_rgb else png, tissue))


def test_colour_flow_region_only_on_cdfi_around_the_colour(studies, cases):
    for accession, instances in studies.items():
        plan, case = cases[accession]
        bus, cdfi = instances[1][1], instances[2][1]
        assert [r.RegionDataType for r in bus.SequenceOfUltrasoundRegions] == [1]
        assert [r.RegionDataType for r in cdfi.SequenceOfUltrasoundRegions] == [1, 2]
        flow = cdfi.SequenceOfUltrasoundRegions[1]
        ys, xs = np.nonzero(case.colour_box)
        assert (flow.RegionLocationMinX0, flow.RegionLocationMinY0, flow.RegionLocationMaxX1,
                flow.RegionLocationMaxY1) == (xs.min(), ys.min(), xs.max(), ys.max())
        assert flow.PhysicalDeltaX == pytest.approx(case.layout.mm_per_px / 10) and flow.PhysicalUnitsXDirection == 3
        cdfi_frames = _frames(cdfi)
        best = max(colour_fraction(_field(f, flow)) for f in cdfi_frames)
        assert best > 0.002, accession
        assert max(colour_fraction(_as_rgb(f)) for f in _frames(bus)) == 0.0


def test_cdfi_cine_frame_with_most_flow_is_the_rendered_one(out, studies, cases):
    marked = set()
    for accession, instances in studies.items():
        plan, _ = cases[accession]
        if not SCANNER_ENCODING[plan.scanner].cine:
            continue
        bus, cdfi = instances[1][1], instances[2][1]
        flow = cdfi.SequenceOfUltrasoundRegions[1]
        frames = _frames(cdfi)
        rendered = _rendered_index(frames, _png(out, plan, "cdfi"))
        colour = [colour_fraction(_field(f, flow)) for f in frames]
        assert all(colour[rendered] > c for i, c in enumerate(colour) if i != rendered), (accession, colour)
        bus_frames = _frames(bus)
        assert _rendered_index(bus_frames, _png(out, plan, "bus")) == 2
        assert all(not np.array_equal(f, bus_frames[2]) for i, f in enumerate(bus_frames) if i != 2)
        marked.add("RepresentativeFrameNumber" in cdfi)
        if "RepresentativeFrameNumber" in cdfi:
            assert cdfi.RepresentativeFrameNumber == rendered + 1 and bus.RepresentativeFrameNumber == 3
        else:
            assert "RepresentativeFrameNumber" not in bus
    assert marked == {True, False}


def test_burned_in_text_lies_above_the_field_only(out, studies, cases):
    seen = set()
    for accession, instances in studies.items():
        plan, case = cases[accession]
        for number, modality in ((1, "bus"), (2, "cdfi")):
            ds = instances[number][1]
            burned = ds.BurnedInAnnotation == "YES"
            assert ds.BurnedInAnnotation in ("YES", "NO") and burned == identity(plan, SEED).burned_in
            if SCANNER_ENCODING[plan.scanner].cine:
                continue
            stored, png = _frames(ds)[0], _png(out, plan, modality)
            png = _as_rgb(png) if stored.ndim == 3 else png
            changed = np.nonzero((stored != png).reshape(stored.shape[:2] + (-1,)).any(axis=2))[0]
            if burned:
                assert changed.size > 50 and changed.max() < case.layout.field_y
            else:
                assert changed.size == 0
            seen.add(burned)
    assert seen == {True, False}


def test_the_export_counts_colour_as_the_project_does():
    assert dicom_pixels.CHROMA_THRESHOLD == CHROMA_THRESHOLD


def test_about_a_quarter_of_the_cases_carry_burned_in_names():
    plans = cohort_plan("paper", 0)
    share = np.mean([identity(p, 0).burned_in for p in plans])
    assert 0.18 < share < 0.32
    for site in {p.site for p in plans}:
        ids = [identity(p, 0).patient_id for p in plans if p.site == site]
        assert len(set(ids)) == len(ids)


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_the_same_bytes_and_names_hide_the_modality(out, studies):
    first = _digests(out / "dicom")
    generate_dicom(TINY, SEED, out / "dicom", workers=2)  # in place, with another worker count
    assert _digests(out / "dicom") == first
    names = {number: {path.name for path, _ in (i[number] for i in studies.values())} for number in (1, 2)}
    assert all(re.fullmatch(r"IM\d{6}", n) for n in names[1] | names[2])
    assert names[1] == names[2] == {"IM000001", "IM000002"}  # either file may be the B-mode one


def test_a_folder_of_another_export_is_refused(out):
    with pytest.raises(ClafedError, match="would not write"):
        generate_dicom(TINY, SEED + 1, out / "dicom", workers=1)


def test_cli_writes_dicom_with_one_line_per_site(tmp_path, monkeypatch, capsys):
    calls = []
    real = dicom_export.generate_dicom

    def tiny_instead(preset, seed, out_dir, workers=None):
        calls.append((preset, seed, workers))
        return real(TINY, seed, out_dir, workers=workers)

    monkeypatch.setattr(dicom_export, "generate_dicom", tiny_instead)
    target = tmp_path / "d"
    assert main(["synth", "--format", "dicom", "--preset", "small", "--seed", "3", "--out", str(target),
                 "--workers", "1"]) == 0
    assert calls == [("small", 3, 1)]
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"hospital1: 4 cases -> {target / 'hospital1' / 'labels.csv'}",
                         f"hospital3: 3 cases -> {target / 'hospital3' / 'labels.csv'}"]
    assert (target / "synth.json").read_text().count('"format": "dicom"') == 1


def test_format_defaults_to_png_and_takes_only_png_or_dicom():
    parser = build_parser()
    assert parser.parse_args(["synth", "--out", "x"]).format == "png"
    assert parser.parse_args(["synth", "--out", "x", "--format", "dicom"]).format == "dicom"
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--out", "x", "--format", "nifti"])
