"""The report's clinical sections (preflight, model evaluated, calibration, decision curve) and the
model card, from a run directory's saved aggregate records."""
from __future__ import annotations

import json

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from client.clinical_figures import clinical_figures
from common.checkpoint import save_checkpoint
from common.decision_curve import net_benefit
from common.model import CLAHDM
from common.signing import checkpoint_digest, sign_checkpoint
from server import report
from server import run_dir as rd
from tests.server.test_report import SITES, make_run

MODELS = {"best": {"rounds": {"submodel1": 2, "submodel2": 3, "submodel3": 3}, "thresholds_chosen_by": "x",
                   "decision_thresholds": {"submodel1": 0.41, "submodel2": 0.5, "submodel3": 0.6},
                   "temperatures": {"submodel1": 1.5, "submodel2": 1.0, "submodel3": 0.8}, "best_by_validation": True},
          "final": {"rounds": {"submodel1": 3, "submodel2": 3, "submodel3": 3}, "thresholds_chosen_by": "x",
                    "decision_thresholds": {"submodel1": 0.45, "submodel2": 0.5, "submodel3": 0.6},
                    "temperatures": {"submodel1": 1.0, "submodel2": 1.0, "submodel3": 1.0}, "best_by_validation": False}}


def cohort(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n // 4)
    levels = np.clip(np.stack([(y >= 2) * 0.6 + 0.2, (y == 1) * 0.5 + 0.25, (y == 3) * 0.5 + 0.25], 1)
                     + rng.normal(scale=0.15, size=(n, 3)), 0.01, 0.99)
    return y, levels


def clinical_run(tmp_path, tiny_profile):
    run = make_run(tmp_path / "run")
    for k, (name, _) in enumerate(SITES):  # each site's evaluation also holds its clinical figures
        record = rd.read_json(rd.evaluation_path(run, name))
        record["metrics"] |= clinical_figures(*cohort(k), temperatures=(1.5, 1.0, 0.8))
        rd.write_json(rd.evaluation_path(run, name), record)
    rd.update_run_info(run, models=MODELS, evaluated_model="best", temperatures=MODELS["best"]["temperatures"],
                       decision_thresholds=MODELS["best"]["decision_thresholds"], thresholds_chosen_by="x",
                       profile_config={"model": {"backbone": "resnet10", "pretrained": "none"}, "data": {"input_size": 64}})
    rd.write_json(run / rd.PREFLIGHT_FILE, {"sites": {"hospital1": {
        "pre.train.n": 30, "pre.heldout.n": 12, "pre.train.class.reactive": 10, "pre.train.class.tuberculous": 0,
        "pre.train.class.lymphoma": 8, "pre.train.class.metastatic": 12, "pre.train.suppressed": 0,
        "pre.heldout.suppressed": 1, "pre.duplicates": 2, "pre.duplicates_cross_cohort": 1, "pre.unreadable": 0}}})
    (run / rd.LEDGER_FILE).write_text(json.dumps({"level": "submodel1", "round": 1, "sha256": "ab" * 32}) + "\n")
    save_checkpoint(run / rd.MODEL_FILE, CLAHDM(tiny_profile.model), tiny_profile.data)
    return run


def test_the_report_shows_the_preflight_the_model_chosen_calibration_and_decision_curves(tmp_path, tiny_profile):
    run = clinical_run(tmp_path, tiny_profile)
    md = report.write_report(run)[0].read_text()
    for section in ("## Preflight", "## Model evaluated", "## Calibration", "## Decision curve"):
        assert section in md, section
    assert "| hospital1 | 30 | 12 | 10 | 0 | 8 | 12 |" in md  # counts per class of the training cohort
    assert "evaluated the **best** model" in md and "model_final.pt" in md and "| **best** | 2 | 3 | 3 |" in md
    metrics = rd.read_evaluations(run)["hospital2"]["metrics"]
    assert f"{metrics['calib.clahdm.ece']:.3f} ({metrics['calib.clahdm.ece_uncalibrated']:.3f})" in md
    assert "submodel1 1.50" in md  # the fitted temperatures
    y, levels = cohort(1)
    at_20 = net_benefit((y >= 2).astype(int), levels[:, 0], (0.2,))[0]
    assert f"{at_20:.3f} vs" in md  # hospital2's net benefit at 20 %
    assert "| all sites |" in md
    for name in ("calibration_pooled.png", "decision_curve.png"):
        assert (run / rd.PLOTS_DIR / name).read_bytes()[:4] == b"\x89PNG"
    rd.update_run_info(run, temperatures={"submodel1": 1.0, "submodel2": 1.0, "submodel3": 1.0})
    md = report.write_report(run)[0].read_text()  # without temperature scaling: one ECE per cell
    assert "No temperature scaling was applied" in md and f"| {metrics['calib.clahdm.ece']:.3f} |" in md


def test_the_model_card_describes_the_model_and_proves_which_file_it_is(tmp_path, tiny_profile):
    run = clinical_run(tmp_path, tiny_profile)
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "k.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    sign_checkpoint(run / rd.MODEL_FILE, tmp_path / "k.key")
    report.write_report(run)
    card = json.loads((run / rd.MODEL_CARD_JSON).read_text())
    assert card["schema"] == "clafed-model-card/1" and card["not_for_diagnostic_use"] is True
    assert "Not for diagnosis" in card["intended_use"] and card["model"]["evaluated"] == "best"
    assert card["model"]["rounds"] == MODELS["best"]["rounds"] and card["model"]["temperatures"]["submodel1"] == 1.5
    assert card["integrity"]["weights_digest_sha256"] == checkpoint_digest(run / rd.MODEL_FILE)
    assert card["integrity"]["signed"] and card["integrity"]["ledger_rounds"] == 1
    assert [s["name"] for s in card["training"]["sites"]] == [name for name, _ in SITES]
    metrics = rd.read_evaluations(run)["hospital1"]["metrics"]
    macro = card["evaluation"]["hospital1"]["clahdm.auc_macro"]
    assert macro == {"value": metrics["clahdm.auc_macro"], "low": metrics["clahdm.auc_macro.low"],
                     "high": metrics["clahdm.auc_macro.high"]}
    assert card["calibration"]["hospital1"]["clahdm"]["ece"] == metrics["calib.clahdm.ece"]
    md = (run / rd.MODEL_CARD_MD).read_text()
    assert "NOT FOR DIAGNOSTIC USE" in md and card["integrity"]["weights_digest_sha256"] in md
    assert "signature (Ed25519, model.sig): present" in md
