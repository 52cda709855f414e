"""A hospital with only a DICOM export and a diagnosis CSV, end to end:
synth (as DICOM) -> ingest -> validate -> simulate -> predict without a box."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from common.checkpoint import load_checkpoint
from common.cli import main
from server import run_dir as rd

pytestmark = pytest.mark.slow
SITES = ("hospital1", "hospital2", "hospital3")


def test_dicom_export_to_a_trained_model_that_finds_the_node_itself(tmp_path, capsys):
    export, sites = tmp_path / "pacs", tmp_path / "sites"
    assert main(["synth", "--format", "dicom", "--preset", "small", "--out", str(export), "--workers", "2"]) == 0
    for site in SITES:
        labels = export / site / "labels.csv"
        if site == "hospital3":  # a site that never drew a box: its nodes are found by the localiser
            table = pd.read_csv(labels, dtype=str)
            table.drop(columns=["roi_x", "roi_y", "roi_w", "roi_h"]).to_csv(labels, index=False)
        code = main(["ingest", str(export / site / "dicom"), "--labels", str(labels), "--out", str(sites / site)])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "OK" in out and "0 refused" in out and "BurnedInAnnotation YES" in out
        manifest = pd.read_csv(sites / site / "manifest.csv", dtype=str, keep_default_na=False)
        assert len(manifest) == len(pd.read_csv(labels))
        assert ("roi_x" in manifest.columns) == (site != "hospital3")
        assert main(["validate", str(sites / site / "manifest.csv")]) == 0
        text = (sites / site / "manifest.csv").read_text()
        assert "^" not in text and "A1000" not in text  # no person name, no accession number
    run = tmp_path / "run"
    process = subprocess.run([sys.executable, "-m", "common.cli", "simulate", "--data", str(sites), "--profile", "tiny",
                              "--rounds", "1", "--bootstrap", "50", "--heatmaps", "0", "--out", str(run)],
                             capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert process.returncode == 0, (process.stdout + process.stderr)[-4000:]
    assert set(rd.read_evaluations(run)) == set(SITES)
    model = load_checkpoint(run / rd.MODEL_FILE).model
    assert model.has_localiser  # trained on hospital1's and hospital2's boxes
    case = pd.read_csv(sites / "hospital3" / "manifest.csv", dtype=str).iloc[0]
    capsys.readouterr()
    code = main(["predict", "--model", str(run / rd.MODEL_FILE), "--bus", str(sites / "hospital3" / case["bus_path"]),
                 "--cdfi", str(sites / "hospital3" / case["cdfi_path"]), "--out", str(tmp_path / "pred"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["roi_source"] == "proposed by the localiser" and len(result["roi"]) == 4
