"""`clafed predict`: one case, a manifest, a folder; clear one-line errors for bad images."""
from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.cli import main
from common.dataset import CaseDataset
from common.labels import CLASSES
from common.training import predict_clahdm
from common.validation import load_cases
from tests.sitegen import write_site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Four cases (one per class) with their manifest."""
    return write_site(tmp_path_factory.mktemp("site"), {c: 1 for c in CLASSES})


def reference_scores(checkpoint, cases) -> np.ndarray:
    """Soft probabilities from the training code's own path (CaseDataset + predict_clahdm)."""
    loaded = load_checkpoint(checkpoint)
    return predict_clahdm(loaded.model, CaseDataset(cases, loaded.data_config), device=torch.device("cpu")).scores


def predict(*args: str) -> int:
    return main(["predict", *map(str, args)])


def test_json_of_one_case_matches_the_models_probabilities(checkpoint, site, tmp_path, capsys):
    case = load_cases(site)[2]
    rc = predict("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path,
                 "--roi", ",".join(map(str, case.roi)), "--out", tmp_path, "--json")
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    expected = reference_scores(checkpoint, [case])[0]
    np.testing.assert_allclose([result["probabilities"][c] for c in CLASSES], expected, atol=1e-5)
    assert result["case_id"] == case.case_id  # the file name without _bus
    assert result["diagnosis"] in CLASSES and result["diagnosis"] in result["path"]
    assert [lv["level"] for lv in result["levels"]][0] == "submodel1" and len(result["levels"]) == 2
    picture = cv2.imread(result["picture"])
    assert picture is not None and picture.shape[0] > 300


def test_text_output_shows_diagnosis_path_and_probabilities(checkpoint, site, tmp_path, capsys):
    case = load_cases(site)[0]
    assert predict("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path, "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "diagnosis:" in out and "\u2192" in out and all(c in out for c in CLASSES)
    assert (tmp_path / f"{case.case_id}_heatmap.png").is_file()


def test_manifest_writes_predictions_csv_matching_the_model(checkpoint, site, tmp_path, capsys):
    assert predict("--model", checkpoint, "--manifest", site, "--out", tmp_path) == 0
    with open(tmp_path / "predictions.csv", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    from client.evaluation import PREDICTION_COLUMNS

    assert tuple(reader.fieldnames[:len(PREDICTION_COLUMNS)]) == PREDICTION_COLUMNS  # evaluate's format first
    cases = load_cases(site)
    assert [r["case_id"] for r in rows] == [c.case_id for c in cases]
    assert [r["label"] for r in rows] == [c.label for c in cases]
    got = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, reference_scores(checkpoint, cases), atol=1e-5)
    assert all((tmp_path / f"{c.case_id}_heatmap.png").is_file() for c in cases)
    assert "4 case(s) predicted" in capsys.readouterr().out


def test_folder_pairs_cases_and_names_an_unpaired_file(checkpoint, site, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for case in load_cases(site)[:2]:
        shutil.copy(case.bus_path, folder / f"{case.case_id}_bus.png")
        shutil.copy(case.cdfi_path, folder / f"{case.case_id}_CDFI.png")
    shutil.copy(case.bus_path, folder / "lonely_bus.png")
    (folder / "notes.txt").write_text("ignored")
    rc = predict("--model", checkpoint, "--folder", folder, "--out", tmp_path / "out", "--json")
    captured = capsys.readouterr()
    assert rc == 1
    assert [r["case_id"] for r in json.loads(captured.out)] == [c.case_id for c in load_cases(site)[:2]]
    assert "lonely_bus.png" in captured.err and "CDFI" in captured.err
    with open(tmp_path / "out" / "predictions.csv", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 2


def _bad_pair(kind: str, site, tmp_path):
    case = load_cases(site)[0]
    bus, cdfi = case.bus_path, tmp_path / "x_cdfi.png"
    if kind == "missing":
        pass
    elif kind == "unreadable":
        cdfi.write_bytes(b"not a png at all")
    elif kind == "no colour":
        shutil.copy(case.bus_path, cdfi)  # a B-mode image in the CDFI slot
    return bus, cdfi


@pytest.mark.parametrize("kind, words", [("missing", "missing file"), ("unreadable", "unreadable image"),
                                         ("no colour", "no Doppler colour")])
def test_bad_cdfi_gives_one_line_naming_the_file(kind, words, checkpoint, site, tmp_path, capsys):
    bus, cdfi = _bad_pair(kind, site, tmp_path)
    rc = predict("--model", checkpoint, "--bus", bus, "--cdfi", cdfi, "--out", tmp_path / "out", "--json")
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    lines = [line for line in captured.err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(cdfi) in lines[0] and words in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_missing_checkpoint_and_half_a_pair_are_one_line_errors(checkpoint, site, tmp_path, capsys):
    case = load_cases(site)[0]
    assert predict("--model", tmp_path / "none.pt", "--bus", case.bus_path, "--cdfi", case.cdfi_path,
                   "--out", tmp_path) == 2
    assert str(tmp_path / "none.pt") in capsys.readouterr().err
    assert predict("--model", checkpoint, "--bus", case.bus_path, "--out", tmp_path) == 2
    assert "--cdfi" in capsys.readouterr().err


def test_bad_roi_is_a_usage_error(checkpoint, site, tmp_path, capsys):
    case = load_cases(site)[0]
    with pytest.raises(SystemExit) as exit_info:
        predict("--model", checkpoint, "--bus", case.bus_path, "--cdfi", case.cdfi_path,
                "--roi", "1,2,3", "--out", tmp_path)
    assert exit_info.value.code == 2 and "--roi" in capsys.readouterr().err
