"""`clafed predict --dicom`: a structured report and a heatmap capture in the reference's study.

Two predictions in all (synthetic B-mode/CDFI instances, then pydicom's real ultrasound file);
the argument and reference checks stop before any model is loaded.
"""
from __future__ import annotations

import contextlib
import io
import json

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from client.dicom_results import read_references
from common.cli import main
from common.labels import CLASSES
from common.signing import checkpoint_digest
from common.validation import load_cases
from tests import dicomgen
from tests.sitegen import write_site

REAL_ULTRASOUND = get_testdata_file("examples_ybr_color.dcm", download=False)
NOTICE = "RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE"


def predict(*args) -> int:
    return main(["predict", *map(str, args)])


def predict_json(*args) -> dict:
    """Run `clafed predict ... --json` (module fixtures cannot use capsys) and return its result."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict(*args, "--json") == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return load_cases(write_site(tmp_path_factory.mktemp("site"), {"metastatic": 1}))[0]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A synthetic B-mode and CDFI instance of one study (no birth date or sex in their headers)."""
    return dicomgen.write_pair(tmp_path_factory.mktemp("dicom"), dicomgen.Study(), seed=1)


@pytest.fixture(scope="module")
def result(checkpoint, case, pair, tmp_path_factory):
    """The JSON of one `clafed predict --dicom` with both references and a given node box."""
    return predict_json("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path,
                        "--roi", ",".join(map(str, case.roi)), "--out", tmp_path_factory.mktemp("out"),
                        "--dicom", "--dicom-reference", *pair)


def content_items(ds):
    """Every content item of an SR tree, depth first."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def by_meaning(sr) -> dict:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in content_items(sr)}


def test_report_joins_the_reference_study_in_a_new_series(result, pair):
    bmode, cdfi = (pydicom.dcmread(p) for p in pair)
    sr = pydicom.dcmread(result["dicom"]["sr"])
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR"
    assert sr.StudyInstanceUID == bmode.StudyInstanceUID
    assert (sr.PatientID, str(sr.PatientName)) == (bmode.PatientID, str(bmode.PatientName))
    assert sr.SeriesInstanceUID not in (bmode.SeriesInstanceUID, cdfi.SeriesInstanceUID)
    assert sr.SOPInstanceUID not in (bmode.SOPInstanceUID, cdfi.SOPInstanceUID)
    assert "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription and sr.ContentQualification == "RESEARCH"
    assert sr.Manufacturer == "clafed" and sr.VerificationFlag == "UNVERIFIED"
    hd.sr.ComprehensiveSR.from_dataset(sr)  # highdicom can parse what it wrote


def test_report_holds_the_prediction(result, checkpoint):
    items = by_meaning(pydicom.dcmread(result["dicom"]["sr"]))
    assert items["Intended use notice"].TextValue == NOTICE
    assert items["Finding"].ConceptCodeSequence[0].CodeMeaning == result["diagnosis"]
    assert items["Finding Site"].ConceptCodeSequence[0].CodeMeaning == "Lymph Node"
    assert items["Diagnosis path"].TextValue == result["path"].replace("\u2192", "->")
    for c in CLASSES:
        value = items[f"Probability of {c}"].MeasuredValueSequence[0]
        assert abs(float(value.NumericValue) - result["probabilities"][c]) < 1e-6
        assert abs(value.FloatingPointValue - result["probabilities"][c]) < 1e-6
        assert value.MeasurementUnitsCodeSequence[0].CodeValue == "{probability}"
    box = next(v for k, v in items.items() if k.startswith("Node box x,y,w,h"))
    assert box.TextValue == ",".join(map(str, result["roi"])) and result["roi_source"] == "given"
    assert items["Node box source"].TextValue == "given"
    assert items["Model checkpoint file"].TextValue == checkpoint.name
    assert next(v for k, v in items.items() if k.startswith("Model digest")).TextValue == checkpoint_digest(checkpoint)
    assert items["Model signature verified"].ConceptCodeSequence[0].CodeMeaning == "No"  # no --public-key


def test_report_evidence_and_images_name_both_references(result, pair):
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in pair]
    sr = pydicom.dcmread(result["dicom"]["sr"])
    evidence = [ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence]
    assert sorted(evidence) == sorted(uids)
    items = by_meaning(sr)
    assert [items[m].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for m in ("B-mode source image", "Colour Doppler source image")] == uids
    schemes = [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence]
    private = {i.ConceptNameCodeSequence[0].CodingSchemeDesignator for i in content_items(sr)} - {"DCM", "SCT"}
    assert private <= set(schemes), "every private code's scheme is declared"


def test_heatmap_capture_is_the_picture_in_the_reference_study(result, pair):
    bmode = pydicom.dcmread(pair[0])
    capture = pydicom.dcmread(result["dicom"]["heatmap"])
    picture = cv2.cvtColor(cv2.imread(result["picture"]), cv2.COLOR_BGR2RGB)
    assert capture.SOPClassUID == SecondaryCaptureImageStorage
    assert capture.pixel_array.shape == picture.shape
    np.testing.assert_array_equal(capture.pixel_array, picture)
    assert capture.StudyInstanceUID == bmode.StudyInstanceUID and capture.PatientID == bmode.PatientID
    assert capture.SeriesInstanceUID != bmode.SeriesInstanceUID
    assert capture.SeriesInstanceUID != pydicom.dcmread(result["dicom"]["sr"]).SeriesInstanceUID
    assert capture.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSTIC USE" in capture.SeriesDescription
    assert {s.ReferencedSOPInstanceUID for s in capture.SourceImageSequence} == {
        pydicom.dcmread(p).SOPInstanceUID for p in pair}


def test_a_real_ultrasound_file_as_the_only_reference(checkpoint, case, tmp_path, capsys):
    rc = predict("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path, "--out", tmp_path,
                 "--dicom", "--dicom-reference", REAL_ULTRASOUND)
    out = capsys.readouterr().out
    assert rc == 0
    sr_path, heatmap_path = tmp_path / f"{case.case_id}_sr.dcm", tmp_path / f"{case.case_id}_heatmap.dcm"
    assert f"dicom:         {sr_path}, {heatmap_path}" in out
    reference = pydicom.dcmread(REAL_ULTRASOUND, stop_before_pixels=True)
    sr, capture = pydicom.dcmread(sr_path), pydicom.dcmread(heatmap_path)
    for ds in (sr, capture):
        assert (ds.StudyInstanceUID, ds.PatientID) == (reference.StudyInstanceUID, "204")
    items = by_meaning(sr)
    assert items["Source image"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == reference.SOPInstanceUID
    assert "diagnosis:" in out and items["Finding"].ConceptCodeSequence[0].CodeMeaning in out


@pytest.mark.parametrize("extra, words", [
    (["--dicom"], "--dicom needs --dicom-reference"),
    (["--dicom-reference", REAL_ULTRASOUND], "used with --dicom"),
    (["--dicom", "--dicom-reference", REAL_ULTRASOUND, REAL_ULTRASOUND, REAL_ULTRASOUND], "one or two files"),
])
def test_dicom_arguments_that_do_not_fit_exit_2(extra, words, checkpoint, case, tmp_path, capsys):
    rc = predict("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path, "--out", tmp_path, *extra)
    err = capsys.readouterr().err
    assert rc == 2 and words in err, err
    assert not list(tmp_path.iterdir())  # refused before anything was predicted


def test_dicom_needs_a_single_case(checkpoint, case, tmp_path, capsys):
    rc = predict("--model", checkpoint, "--folder", case.bus_path.parent, "--out", tmp_path, "--dicom",
                 "--dicom-reference", REAL_ULTRASOUND)
    assert rc == 2 and "single case given with --bus/--cdfi" in capsys.readouterr().err


def test_a_reference_that_is_not_dicom_is_refused_naming_it(checkpoint, case, tmp_path, capsys):
    notes = tmp_path / "notes.dcm"
    notes.write_text("this is not DICOM")
    rc = predict("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path, "--out", tmp_path / "out",
                 "--dicom", "--dicom-reference", notes)
    err = capsys.readouterr().err
    assert rc == 2 and str(notes) in err and "not a readable DICOM file" in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_references_without_uids_or_from_two_studies_are_refused(pair, tmp_path):
    no_uid = pydicom.dcmread(pair[0])
    del no_uid.SOPInstanceUID
    no_uid.save_as(tmp_path / "no_uid.dcm")
    with pytest.raises(ValueError, match=r"no_uid\.dcm: lacks SOPInstanceUID"):
        read_references([tmp_path / "no_uid.dcm"])
    other = dicomgen.write_pair(tmp_path / "other", dicomgen.Study(), seed=2)[1]
    with pytest.raises(ValueError, match=r"other study") as info:
        read_references([pair[0], other])
    assert str(other) in str(info.value)
    with pytest.raises(ValueError, match=r"missing\.dcm: file not found"):
        read_references([tmp_path / "missing.dcm"])
    assert [r.SOPInstanceUID for r in read_references(pair)] == [pydicom.dcmread(p).SOPInstanceUID for p in pair]
