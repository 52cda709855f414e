"""`clafed validate` and dataset loading report every problem with its case id."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from common.cli import main
from common.manifest import ManifestError
from common.validation import load_cases, validate_manifest


def _break(manifest, edit):
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    edit(table, manifest.parent)
    table.to_csv(manifest, index=False)


def _all_problems(table, root):
    table.loc[0, "bus_path"] = "images/gone.png"  # missing file
    (root / "images" / "corrupt.png").write_bytes(b"not a png")
    table.loc[1, "cdfi_path"] = "images/corrupt.png"  # unreadable image
    table.loc[2, "cdfi_path"] = table.loc[2, "bus_path"]  # CDFI with no colour at all
    table.loc[3, "label"] = "sarcoidosis"  # unknown label
    table.loc[5, "case_id"] = table.loc[4, "case_id"]  # duplicate id
    table.loc[6, "exam_date"] = "2020-02-30"  # bad date
    table.loc[7, "roi_w"] = "500"  # ROI outside the image
    cv2.imwrite(str(root / "images" / "small.png"), np.zeros((20, 20), np.uint8))
    table.loc[8, "bus_path"] = "images/small.png"  # image too small




def test_every_problem_is_reported_with_its_case_id(site_manifest):
    _break(site_manifest, _all_problems)
    table = pd.read_csv(site_manifest, dtype=str, keep_default_na=False)
    ids = table["case_id"].tolist()
    lines = [str(p) for p in validate_manifest(site_manifest)]
    expected = {0: "missing file", 1: "unreadable image", 2: "no Doppler colour at all",
                3: "unknown label 'sarcoidosis'", 4: "duplicate case_id", 6: "bad exam_date",
                7: "lies outside the bus_path image", 8: "image too small"}
    for row, message in expected.items():
        assert any(line.startswith(f"case {ids[row]}:") and message in line for line in lines), (message, lines)
    assert sum("duplicate case_id" in line for line in lines) == 2
    assert not any(line.startswith(f"case {ids[9]}:") for line in lines)


def test_cli_exit_code_and_output(site_manifest, capsys):
    assert main(["validate", str(site_manifest)]) == 0
    assert "OK" in capsys.readouterr().out
    _break(site_manifest, lambda t, r: t.__setitem__("label", ["lymphomaa"] + list(t["label"][1:])))
    assert main(["validate", str(site_manifest)]) == 1
    assert "unknown label 'lymphomaa'" in capsys.readouterr().out


def test_cli_accepts_a_site_yaml(site_manifest, tmp_path, capsys):
    yaml_path = tmp_path / "site.yaml"
    yaml_path.write_text(f"name: h\nmanifest: {site_manifest}\n")
    assert main(["validate", str(yaml_path)]) == 0


def test_loading_fails_with_the_same_message(site_manifest):
    _break(site_manifest, _all_problems)
    lines = [str(p) for p in validate_manifest(site_manifest)]
    with pytest.raises(ManifestError) as err:
        load_cases(site_manifest)
    for line in lines:
        assert line in str(err.value)


def test_missing_column_and_missing_manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("case_id,bus_path\nx,y.png\n")
    assert "missing column(s) cdfi_path, label, exam_date" in str(validate_manifest(path)[0])
    assert "manifest not found" in str(validate_manifest(tmp_path / "none.csv")[0])
