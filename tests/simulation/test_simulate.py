"""`clafed simulate` end to end on Flower's simulation engine (tiny profile, small synthetic data)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server import run_dir as rd
from tests.simulation.test_flower_runtime import NOISE, processes_of

pytestmark = pytest.mark.slow
SITES = ("hospital1", "hospital2", "hospital3")


def simulate(cache: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, CLAFED_CACHE=str(cache))
    args = [sys.executable, "-m", "common.cli", "simulate", "--profile", "tiny", "--preset", "small",
            "--rounds", "2", "--bootstrap", "50", "--out", str(out), *extra]
    # Own session: a kill reaches Ray's worker processes too.
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 400) -> str:
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, out[-4000:]
    return out


def assert_complete(run: Path, resumed: bool = False) -> None:
    state = rd.read_json(run / rd.STATE_FILE)
    assert state["completed"] == {"shared": 1, "submodel1": 2, "submodel2": 2, "submodel3": 2, "localiser": 1}
    classifiers = [("shared", 1)] + [(f"submodel{k}", r) for k in (1, 2, 3) for r in (1, 2)]
    expected = classifiers + [("localiser", 1)]  # the tiny profile's one localiser round, not validated
    rounds = [(r["level"], r["round"]) for r in rd.read_jsonl(run / rd.METRICS_FILE)]
    assert sorted(rounds) == sorted(expected)
    # Every round was validated at the sites (aggregate histograms, pooled at the server); a kill
    # between a round's commit and its validation loses that one validation line, nothing else.
    validated = set((r["level"], r["round"]) for r in rd.read_jsonl(run / rd.VALIDATION_FILE))
    missing = set(classifiers) - validated
    assert validated <= set(classifiers) and len(missing) <= (1 if resumed else 0), missing
    thresholds = rd.read_json(run / rd.RUN_FILE)["decision_thresholds"]
    assert set(thresholds) == {"submodel1", "submodel2", "submodel3"} and all(0 < t < 1 for t in thresholds.values())
    ledger = rd.read_jsonl(run / rd.LEDGER_FILE)
    assert len(ledger) == 8 and all(len(entry["sha256"]) == 64 and entry["sites"] for entry in ledger)
    assert (run / rd.CHECKPOINT_FILE).is_file() and (run / rd.MODEL_FILE).is_file()
    assert (run / rd.SHARED_CHECKPOINT_FILE).is_file()
    evaluations = rd.read_evaluations(run)
    assert set(evaluations) == set(SITES)
    for site, record in evaluations.items():
        metrics = record["metrics"]
        assert 0.0 <= metrics["clahdm.auc_micro"] <= 1.0 and record["n_cases"] > 0
        # Per-case predictions stay at the site: in its output folder, not in the run's records.
        assert (run / "site_outputs" / site / run.name / "evaluation" / "predictions.csv").is_file()
        assert not any(isinstance(v, (list, dict)) for v in metrics.values())
        assert 0.0 <= metrics["calib.clahdm.ece"] <= 1.0 and metrics["dca.n"] == record["n_cases"]
        assert (run / "site_outputs" / site / run.name / "evaluation" / "calibration.png").is_file()
    # What a clinical study reads: the preflight before round 1, which model was evaluated, its card.
    preflight = rd.read_json(run / rd.PREFLIGHT_FILE)["sites"]
    assert set(preflight) == set(SITES) and all(f["pre.duplicates"] == 0 for f in preflight.values())
    info = rd.read_json(run / rd.RUN_FILE)
    assert info["evaluated_model"] in info["models"] and set(info["temperatures"]) == set(thresholds)
    report_md = (run / rd.REPORT_MD).read_text()
    assert all(s in report_md for s in ("## Preflight", "## Model evaluated", "## Calibration", "## Decision curve"))
    card = rd.read_json(run / rd.MODEL_CARD_JSON)
    assert card["model"]["evaluated"] == info["evaluated_model"] and set(card["evaluation"]) == set(SITES)


def test_two_round_simulation_writes_checkpoints_metrics_and_site_results(cache, tmp_path):
    run = tmp_path / "run"
    out = finish(simulate(cache, run, "--heatmaps", "1"))
    assert_complete(run)
    # The quiet terminal: our progress and round lines, none of Flower's or its dependencies' noise,
    # no line twice, and nothing left running; Flower's own log and state stay in the run folder.
    assert "submodel3 round 2: loss" in out and "progress: 8/8 rounds" in out and "final evaluation" in out
    assert not [marker for marker in NOISE if marker in out], out[:3000]
    logged = [line for line in out.splitlines() if " clafed." in line]
    assert len(logged) == len(set(logged)) > 5
    assert not processes_of(run)
    flower_log = (run / "flower" / "run.log").read_text()
    assert "Starting Flower Simulation" in flower_log and "submodel3 round 1: loss" in flower_log
    assert any((run / "flower" / "home" / "apps").iterdir())
    assert "hospital2" in out and "micro AUC" in out  # the per-site table
    assert "histogram floor" in out and "of the headroom closed" in out
    references = rd.read_json(run / rd.REFERENCES_FILE)
    # Sites whose held-out cases hold a single class have no macro AUC, so no reference either.
    assert "hospital1" in references and set(references) <= set(SITES)
    assert all(0 <= r["histogram"] <= 1 and 0 <= r["drawn_feature"] <= 1 for r in references.values())
    assert "Learning against the references" in (run / "report.md").read_text()
    pictures = list((run / "site_outputs" / "hospital1" / run.name / "heatmaps").glob("*.png"))
    assert pictures, "the site should have written heatmap pictures locally"


def test_killed_run_resumes_from_the_last_completed_round(cache, tmp_path):
    run = tmp_path / "run"
    process = simulate(cache, run, "--heatmaps", "0")
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            state = rd.read_json(run / rd.STATE_FILE) or {"completed": {}}
            if state["completed"].get("submodel1", 0) >= 1:  # after the shared phase
                break
            assert process.poll() is None, process.communicate()[0][-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("round 1 never completed")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    killed_at = json.loads((run / rd.STATE_FILE).read_text())["completed"]
    assert killed_at["submodel3"] == 0  # it really died mid-run
    refused = finish_expecting_error(simulate(cache, run, "--heatmaps", "0"))
    assert "already holds a run" in refused
    finish(simulate(cache, run, "--heatmaps", "0", "--resume"))
    assert_complete(run, resumed=True)
    resumed = rd.read_json(run / rd.RUN_FILE)["resumed"]
    assert len(resumed) == 1


def finish_expecting_error(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    return out


def test_pooled_and_local_baselines_evaluate_on_the_same_cohorts(cache, tmp_path):
    run = tmp_path / "run"
    # One round per phase and no localiser: the cohorts and records are the point, not the training.
    finish(simulate(cache, run, "--heatmaps", "0", "--mode", "pooled,local", "--rounds", "1", "--localiser-rounds", "0"))
    pooled, local = rd.read_evaluations(run / "pooled"), rd.read_evaluations(run / "local")
    assert set(pooled) == set(local) == set(SITES)  # every site trains under --protocol federated
    for site in SITES:
        assert pooled[site]["n_cases"] == local[site]["n_cases"] > 0
    assert rd.read_jsonl(run / "pooled" / rd.METRICS_FILE)[0]["sites"].keys() == {"pooled"}
    assert (run / "local" / "models" / "hospital2" / rd.MODEL_FILE).is_file()
    assert "Federated vs pooled vs local" in (run / "report.md").read_text()
