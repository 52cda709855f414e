"""`clafed ingest`: DICOM export + diagnosis CSV -> validated site folder, nothing identifying in it."""
from __future__ import annotations

import copy
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from client.ingest.frames import choose_frame
from client.ingest.images import ImageOptions
from client.ingest.labels import LabelsError, read_labels
from client.ingest.privacy import PrivacyInventory, verify_output
from client.ingest.run import IngestError, IngestOptions, ingest
from common.cli import main
from common.validation import validate_manifest
from tests.dicomgen import FIELD, NAME, Study, add_flow, iso, labels_csv, region, screen, write_image, write_pair


def _real_file():
    from pydicom.data import get_testdata_file

    return get_testdata_file("examples_ybr_color.dcm", download=False)


def _read_png(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _manifest(out):
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def _reasons(summary):
    return {where: reason for where, reason in summary.refused}


@pytest.fixture
def real_study(tmp_path):
    """pydicom's SonoSite cine (B-mode, name in the header and burned in) and a CDFI derived from it."""
    src = _real_file()
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(src, folder / "a.dcm")
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array.copy()
    frames[:, 100:130, 140:180] = (200, 30, 30)  # colour flow inside the (rescaled) sector
    cdfi = copy.deepcopy(ds)
    cdfi.set_pixel_data(frames, "RGB", 8)
    cdfi.SOPInstanceUID = cdfi.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    cdfi.InstanceNumber = int(ds.InstanceNumber) + 1
    flow = copy.deepcopy(ds.SequenceOfUltrasoundRegions[0])
    flow.RegionDataType = 2
    flow.RegionLocationMinX0, flow.RegionLocationMinY0, flow.RegionLocationMaxX1, flow.RegionLocationMaxY1 = \
        260, 180, 380, 280
    cdfi.SequenceOfUltrasoundRegions.append(flow)
    cdfi.save_as(folder / "b.dcm", enforce_file_format=True)
    labels = labels_csv(tmp_path / "labels.csv", [{"study_instance_uid": ds.StudyInstanceUID, "label": "reactive"}])
    return folder, labels, ds


def test_real_sonosite_cine_refused_until_its_regions_are_rescaled_then_ingested(real_study, tmp_path):
    folder, labels, ds = real_study
    summary = ingest(folder, labels, tmp_path / "site")
    reasons = _reasons(summary)
    assert summary.cases == 0
    assert "84..595 x 31..414 lie outside the 320 x 240 frame" in reasons["a.dcm"]
    assert "--rescale-regions" in reasons["a.dcm"] and "b.dcm" in reasons
    assert "refused (above)" in reasons["labels row 1"]

    options = IngestOptions(ImageOptions(rescale_regions=True), force=True)
    summary = ingest(folder, labels, tmp_path / "site", options)
    assert summary.cases == 1 and summary.refused == []
    row = _manifest(tmp_path / "site").iloc[0]
    assert row["exam_date"] == iso(ds.StudyDate) and row["label"] == "reactive"
    assert float(row["mm_per_px_x"]) == pytest.approx(2 * 10 * ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX, rel=1e-5)
    bus = _read_png(tmp_path / "site" / row["bus_path"])
    # The region 84..595 x 31..414 halved: 42..297 x 15..207; the B-mode keeps the middle of 30 frames.
    assert bus.shape == (193, 256, 3)
    assert np.array_equal(bus, ds.pixel_array[15][15:208, 42:298])
    text = (tmp_path / "site" / "manifest.csv").read_text()
    assert str(ds.PatientName) not in text and ds.StudyInstanceUID not in text
    report = json.loads((tmp_path / "site" / "ingest" / "report.json").read_text())
    assert report["privacy"]["identifying_fields"]["PatientName"] == 2
    assert report["privacy"]["text_like_marks_outside_region"] == 2  # "PLA" top left, cropped away
    assert report["frame_rules"] == {"middle": 1, "most-flow": 1}
    assert report["files_with_rescaled_regions"] == 2
    assert validate_manifest(tmp_path / "site" / "manifest.csv") == []


def test_burned_in_name_outside_the_region_never_reaches_the_png(tmp_path):
    study = Study()
    write_pair(tmp_path / "in", study, 0, burn="DOE JANE PID998877")
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "metastatic"}])
    summary = ingest(tmp_path / "in", labels, tmp_path / "site")
    assert summary.cases == 1
    row = _manifest(tmp_path / "site").iloc[0]
    x0, y0, x1, y1 = FIELD
    full = screen(0, "DOE JANE PID998877")
    assert full[:20, :x0 + 60].max() > 200  # the name is on the screen ...
    bus = _read_png(tmp_path / "site" / row["bus_path"])
    assert np.array_equal(bus, full[y0:y1, x0:x1])  # ... and the PNG is exactly the region
    cdfi = _read_png(tmp_path / "site" / row["cdfi_path"])
    assert np.array_equal(cdfi, add_flow(full)[y0:y1, x0:x1])
    privacy = summary.privacy
    assert privacy["burned_in_annotation_yes"] == 2 and privacy["text_like_marks_outside_region"] == 2
    assert privacy["identifying_fields"]["PatientName"] == 2 and privacy["identifying_fields"]["AccessionNumber"] == 2
    text = (tmp_path / "site" / "manifest.csv").read_text().lower()
    assert "doe" not in text and "998877" not in text and study.accession.lower() not in text


def test_a_header_value_smuggled_into_the_output_fails_the_privacy_check(tmp_path):
    study = Study()
    write_pair(tmp_path / "in", study, 0)
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "reactive",
                                              "cohort": "jane"}])  # a name component as a cohort value
    with pytest.raises(IngestError, match="privacy check"):
        ingest(tmp_path / "in", labels, tmp_path / "site")
    assert not (tmp_path / "site" / "manifest.csv").exists()


def test_a_png_with_a_text_chunk_is_named(tmp_path):
    path = tmp_path / "x.png"
    data = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    import struct
    import zlib

    chunk = b"tEXt" + b"Author\x00DOE"
    text = struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(data[:33] + text + data[33:])  # after IHDR
    assert verify_output(tmp_path, [path], PrivacyInventory()) == ["x.png: PNG carries metadata chunk(s) tEXt"]


def test_case_ids_are_salted_hashes_stable_with_the_same_salt(tmp_path):
    study = Study()
    write_pair(tmp_path / "in", study, 0)
    labels = labels_csv(tmp_path / "l.csv", [{"study_instance_uid": study.uid, "label": "lymphoma"}])
    ingest(tmp_path / "in", labels, tmp_path / "a")
    first = _manifest(tmp_path / "a")["case_id"][0]
    assert (tmp_path / "a" / ".ingest-salt").stat().st_mode & 0o077 == 0  # owner only
    with pytest.raises(IngestError, match="--force"):
        ingest(tmp_path / "in", labels, tmp_path / "a")
    ingest(tmp_path / "in", labels, tmp_path / "a", IngestOptions(force=True))
    assert _manifest(tmp_path / "a")["case_id"][0] == first
    ingest(tmp_path / "in", labels, tmp_path / "b")  # another site folder, another salt
    assert _manifest(tmp_path / "b")["case_id"][0] != first
    assert study.uid not in first and len(first) == 17


def test_every_refused_file_gets_a_line_with_its_reason(tmp_path):
    good, ct, unlabelled, triple = Study("A1"), Study("A2"), Study("A3"), Study("A4")
    write_pair(tmp_path / "in", good, 0)
    write_image(tmp_path / "in" / "ct.dcm", ct, screen(1), 1, modality="CT")
    write_pair(tmp_path / "in", unlabelled, 2)
    write_pair(tmp_path / "in", triple, 3)
    write_image(tmp_path / "in" / "extra.dcm", triple, screen(4), 3)  # a second B-mode, one CDFI
    write_image(tmp_path / "in" / "noregion.dcm", good, screen(5), 9, regions=[])
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / "cut.dcm").write_bytes((tmp_path / "in" / "A1-x1.dcm").read_bytes()[:400])
    rows = [{"accession_number": a, "label": "reactive"} for a in ("A1", "A2", "A4", "A9")]
    summary = ingest(tmp_path / "in", labels_csv(tmp_path / "l.csv", rows), tmp_path / "site")
    reasons = _reasons(summary)
    assert summary.cases == 1
    assert reasons["notes.txt"] == "not a DICOM file (no DICM preamble)"
    assert reasons["ct.dcm"] == "modality CT, not ultrasound (US)"
    assert reasons["cut.dcm"].startswith("no pixel data (a truncated file")
    assert "no row in the labels CSV" in reasons["A3-x1.dcm"] and "no row" in reasons["A3-x2.dcm"]
    for name in ("A4-x1.dcm", "A4-x2.dcm", "extra.dcm"):
        assert "has 2 B-mode and 1 CDFI image(s)" in reasons[name]
    assert "no ultrasound region" in reasons["noregion.dcm"] and "--allow-uncropped" in reasons["noregion.dcm"]
    assert reasons["labels row 4"] == "accession_number 'A9' node 1: no DICOM study has it"
    logged = pd.read_csv(tmp_path / "site" / "ingest" / "refused.csv")
    assert "its study's images were refused" in reasons["labels row 3"]
    assert len(logged) == len(summary.refused) == 12


def test_pairing_by_series_makes_one_node_per_series_labelled_by_node(tmp_path):
    study = Study()
    for series in (1, 2):
        bus = screen(series)
        write_image(tmp_path / "in" / f"s{series}a.dcm", study, bus, 1, series=series)
        write_image(tmp_path / "in" / f"s{series}b.dcm", study, add_flow(bus), 2, series=series,
                    flow_box=(60, 50, 120, 100))
    rows = [{"accession_number": study.accession, "node": n, "label": label} for n, label in
            ((1, "tuberculous"), (2, "metastatic"))]
    labels = labels_csv(tmp_path / "l.csv", rows)
    summary = ingest(tmp_path / "in", labels, tmp_path / "s", IngestOptions(pair_by="series"))
    assert summary.cases == 2 and summary.labels == {"tuberculous": 1, "metastatic": 1}
    # By order the same study is two nodes as well: B, C, B, C in acquisition order.
    summary = ingest(tmp_path / "in", labels, tmp_path / "o")
    assert summary.cases == 2


def test_frame_choice_key_middle_most_flow(tmp_path):
    base = screen(0)
    amounts = [0.2, 0.4, 0.3, 1.0, 0.1]  # the most flow in frame 3
    frames = [add_flow(base, a) for a in amounts]
    path = write_image(tmp_path / "c.dcm", Study(), frames, 2, flow_box=FIELD)
    ds = pydicom.dcmread(path)
    assert choose_frame(ds, "auto", True, None)[:2] == (3, "most-flow")
    assert choose_frame(ds, "middle", True, None)[:2] == (2, "middle")
    assert choose_frame(ds, "auto", False, None)[:2] == (2, "middle")  # B-mode: no flow to look for
    with pytest.raises(ValueError, match="without a marked key frame"):
        choose_frame(ds, "key", True, None)
    marked = pydicom.dcmread(write_image(tmp_path / "k.dcm", Study(), frames, 2, key_frame=1))
    assert choose_frame(marked, "auto", True, None)[:2] == (1, "key")
    index, _, frame = choose_frame(ds, "most-flow", True, None)
    assert np.array_equal(frame, frames[3])


def test_jpeg_cine_and_monochrome_decode_to_the_frame_written(tmp_path):
    study = Study()
    bus = screen(7)
    write_image(tmp_path / "in" / "1.dcm", study, bus, 1, monochrome=True)
    frames = [add_flow(bus, a) for a in (0.3, 1.0, 0.5)]
    write_image(tmp_path / "in" / "2.dcm", study, frames, 2, jpeg=True, flow_box=FIELD)
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "reactive"}])
    summary = ingest(tmp_path / "in", labels, tmp_path / "s")
    assert summary.encodings == {"Explicit VR Little Endian, MONOCHROME2, single frame": 1,
                                 "JPEG Baseline (Process 1), YBR_FULL_422, cine": 1}
    row = _manifest(tmp_path / "s").iloc[0]
    x0, y0, x1, y1 = FIELD
    assert np.array_equal(_read_png(tmp_path / "s" / row["bus_path"]), bus[y0:y1, x0:x1])
    cdfi = _read_png(tmp_path / "s" / row["cdfi_path"]).astype(int)
    assert np.abs(cdfi - frames[1][y0:y1, x0:x1]).mean() < 4  # JPEG is lossy; RGB, not YCbCr
    assert summary.frame_rules == {"single": 1, "most-flow": 1}


def test_colour_content_tells_cdfi_from_bmode_without_a_flow_region(tmp_path):
    study = Study()
    bus = screen(3)
    bus[FIELD[1] + 2:FIELD[1] + 5, FIELD[0] + 2:FIELD[0] + 5] = (0, 255, 0)  # a coloured marker, 9 px
    write_image(tmp_path / "in" / "p.dcm", study, add_flow(bus), 1)  # CDFI first, no colour-flow region
    write_image(tmp_path / "in" / "q.dcm", study, bus, 2)
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "reactive"}])
    ingest(tmp_path / "in", labels, tmp_path / "s")
    row = _manifest(tmp_path / "s").iloc[0]
    x0, y0, x1, y1 = FIELD
    assert np.array_equal(_read_png(tmp_path / "s" / row["cdfi_path"]), add_flow(bus)[y0:y1, x0:x1])


def test_monochrome1_is_inverted_and_16_bit_scaled():
    from pydicom.dataset import Dataset

    from client.ingest.frames import to_rgb

    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored = "MONOCHROME1", 8
    assert to_rgb(ds, np.array([[0, 255]], np.uint8))[0, :, 0].tolist() == [255, 0]
    ds.PhotometricInterpretation, ds.BitsStored = "MONOCHROME2", 12
    assert to_rgb(ds, np.array([[0, 4095]], np.uint16))[0, :, 1].tolist() == [0, 255]


def test_roi_from_the_labels_csv_moves_into_the_cropped_images(tmp_path):
    study, outside = Study("A1"), Study("A2")
    write_pair(tmp_path / "in", study, 0)
    write_pair(tmp_path / "in", outside, 1)
    rows = [{"accession_number": "A1", "label": "reactive", "roi_x": 60, "roi_y": 50, "roi_w": 40, "roi_h": 30},
            {"accession_number": "A2", "label": "reactive", "roi_x": 10, "roi_y": 5, "roi_w": 40, "roi_h": 30}]
    summary = ingest(tmp_path / "in", labels_csv(tmp_path / "l.csv", rows), tmp_path / "s")
    row = _manifest(tmp_path / "s").iloc[0]
    assert [int(row[c]) for c in ("roi_x", "roi_y", "roi_w", "roi_h")] == [60 - FIELD[0], 50 - FIELD[1], 40, 30]
    assert "reaches outside the imaging region" in _reasons(summary)["A2-x1.dcm"]


def test_labels_csv_problems_are_listed_by_row(tmp_path):
    path = labels_csv(tmp_path / "l.csv", [{"accession_number": "A1", "label": "cancer", "exam_date": "2020-13-01"},
                                           {"accession_number": "A1", "label": "reactive", "exam_date": ""},
                                           {"accession_number": "", "label": "reactive", "exam_date": ""}])
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    text = str(err.value)
    assert "row 1: unknown label 'cancer'" in text and "row 3: empty accession_number" in text
    named = labels_csv(tmp_path / "n.csv", [{"accession_number": "A1", "label": "reactive", "patient_name": "X"}])
    with pytest.raises(LabelsError, match="unknown column.*patient_name"):
        read_labels(named)
    assert main(["ingest", str(tmp_path), "--labels", str(named), "--out", str(tmp_path / "s")]) == 2


def test_dicomdir_lists_the_files_and_a_missing_one_is_refused(tmp_path):
    from pydicom.fileset import FileSet

    study = Study()
    pair = write_pair(tmp_path / "raw", study, 0)
    fs = FileSet()
    for path in pair:
        fs.add(pydicom.dcmread(path))
    fs.write(tmp_path / "media")
    (tmp_path / "media" / "stray.txt").write_text("not listed, not read")
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "reactive"}])
    assert ingest(tmp_path / "media", labels, tmp_path / "s").cases == 1
    listed = sorted(p for p in (tmp_path / "media").rglob("*") if p.is_file() and p.name not in ("DICOMDIR", "stray.txt"))
    listed[0].unlink()
    summary = ingest(tmp_path / "media", labels, tmp_path / "t")
    assert any(reason == "listed in the DICOMDIR but missing" for _, reason in summary.refused)


def test_cli_exit_codes_and_validation(tmp_path, capsys):
    study = Study()
    write_pair(tmp_path / "in", study, 0)
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "reactive"}])
    assert main(["ingest", str(tmp_path / "in"), "--labels", str(labels), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "1 case(s) (1 reactive)" in out and "OK" in out and "PatientName 2" in out
    assert NAME not in out
    (tmp_path / "in" / "junk.bin").write_bytes(b"\x00" * 10)
    assert main(["ingest", str(tmp_path / "in"), "--labels", str(labels), "--out", str(tmp_path / "t")]) == 1
    assert "refused junk.bin: not a DICOM file" in capsys.readouterr().out
    assert main(["ingest", str(tmp_path / "nope"), "--labels", str(labels), "--out", str(tmp_path / "u")]) == 2


def test_a_spectral_doppler_frame_is_refused(tmp_path):
    study = Study()
    write_image(tmp_path / "in" / "pw.dcm", study, screen(0), 1, regions=[region(FIELD, 1), region((0, 120, 200, 160), 3)])
    labels = labels_csv(tmp_path / "l.csv", [{"accession_number": study.accession, "label": "reactive"}])
    summary = ingest(tmp_path / "in", labels, tmp_path / "s")
    assert "spectral Doppler" in _reasons(summary)["pw.dcm"]
