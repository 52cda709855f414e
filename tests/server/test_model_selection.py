"""Best and final model: the best rounds by federated validation, both kept, one evaluated; the
temperatures fitted on pooled validation move the thresholds so every call stays the same."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common import calibration as cal
from common import federated_validation as fv
from common.checkpoint import load_checkpoint
from common.model import CLAHDM, SubModel
from server import run_dir as rd
from server.federation import candidate_models, with_thresholds
from server.recorder import RunRecorder
from server.settings import Settings

KEY = "submodel2"  # not the gate: its replies need no per-label histograms


def two_class(p):
    p = np.asarray(p, dtype=float)
    return np.stack([1 - p, p], axis=1)


# Pooled validation of three rounds: AUC 0.75, 1.0, 0.75, and round 2's probabilities also have the
# lowest NLL at their best temperature (round 2 is the best, round 3 the last).
ROUND_SCORES = {1: [0.9, 0.3, 0.4, 0.1], 2: [0.9, 0.8, 0.2, 0.1], 3: [0.9, 0.3, 0.4, 0.1]}
TARGETS = np.array([1, 1, 0, 0])


def filled(profile, value: float) -> SubModel:
    network = SubModel(profile.model)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(value)
    return network


def validated_run(tmp_path, profile, **settings) -> tuple[RunRecorder, CLAHDM, Settings]:
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"), **settings)
    recorder = RunRecorder.open(settings)
    recorder.state["completed"][KEY] = 3
    for server_round, scores in ROUND_SCORES.items():
        figures = fv.site_figures(TARGETS, two_class(scores), loss_sum=1.0)
        recorder.validation_completed(KEY, server_round, 2, {"hospital1": figures},
                                      network=filled(profile, float(server_round)))
    final = CLAHDM(profile.model)
    final.submodel(KEY).load_state_dict(filled(profile, 3.0).state_dict())
    return recorder, final, settings


def first_weight(model: CLAHDM) -> float:
    return float(next(model.submodel(KEY).parameters()).flatten()[0])


def test_the_best_validated_round_is_kept_and_assembled_into_the_best_model(tmp_path, tiny_profile):
    recorder, final, settings = validated_run(tmp_path, tiny_profile)
    assert recorder.best_rounds() == {KEY: 2}
    run = tmp_path / "run"
    # One best file per sub-model: round 1's was replaced by round 2's, round 3 did not beat it.
    assert sorted(p.name for p in (run / "checkpoints").glob("best_*")) == [f"best_{KEY}_round2.pt"]
    best = recorder.best_model(final)
    assert first_weight(best) == 2.0 and first_weight(final) == 3.0  # the final model is untouched

    evaluated, candidates = candidate_models(settings, tiny_profile, final, recorder)
    assert evaluated == "best" and set(candidates) == {"best", "final"}
    info = rd.read_json(run / rd.RUN_FILE)
    assert info["evaluated_model"] == "best"
    assert info["models"]["best"]["rounds"][KEY] == 2 and info["models"]["final"]["rounds"][KEY] == 3
    # The other candidate is saved beside model.pt; its weights are the last round's.
    assert first_weight(load_checkpoint(run / rd.ALTERNATIVE_MODEL_FILES["final"]).model) == 3.0
    assert not (run / rd.ALTERNATIVE_MODEL_FILES["best"]).exists()


def test_final_can_be_chosen_and_a_best_equal_to_final_is_not_saved_twice(tmp_path, tiny_profile):
    recorder, final, settings = validated_run(tmp_path, tiny_profile, evaluate_model="final")
    evaluated, _ = candidate_models(settings, tiny_profile, final, recorder)
    assert evaluated == "final"
    assert first_weight(load_checkpoint(tmp_path / "run" / rd.ALTERNATIVE_MODEL_FILES["best"]).model) == 2.0

    settings = Settings(profile="tiny", run_dir=str(tmp_path / "other"))
    recorder = RunRecorder.open(settings)
    recorder.state["completed"][KEY] = 1
    recorder.validation_completed(KEY, 1, 2, {"h": fv.site_figures(TARGETS, two_class(ROUND_SCORES[2]), 1.0)},
                                  network=filled(tiny_profile, 1.0))
    evaluated, candidates = candidate_models(settings, tiny_profile, CLAHDM(tiny_profile.model), recorder)
    assert evaluated == "final" and set(candidates) == {"final"}
    assert rd.read_json(tmp_path / "other" / rd.RUN_FILE)["models"]["final"]["best_by_validation"] is True
    assert not any((tmp_path / "other" / name).exists() for name in rd.ALTERNATIVE_MODEL_FILES.values())


def test_the_temperature_scaled_nll_decides_not_the_binned_auc(tmp_path, tiny_profile):
    # Round 1 orders every case right but barely apart (AUC 1.0); round 2 misorders one pair (AUC
    # 0.75) yet its probabilities say far more: its NLL at the best temperature is lower.
    recorder = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run")))
    for server_round, scores in ((1, [0.51, 0.51, 0.49, 0.49]), (2, [0.99, 0.6, 0.7, 0.01])):
        figures = fv.site_figures(TARGETS, two_class(scores), loss_sum=1.0)
        recorder.validation_completed(KEY, server_round, 2, {"h": figures}, network=filled(tiny_profile, 0.0))
    assert recorder.best_rounds() == {KEY: 2}


def test_records_without_the_calibrated_nll_compare_aucs_then_losses(tmp_path):
    recorder = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run")))
    recorder.state["best"] = {KEY: {"round": 1, "auc": 0.9, "loss": 1.0}}  # kept before temperature scaling
    assert not recorder._improves(KEY, {"auc": 0.85, "loss": 0.2, "loss_calibrated": 0.1})
    assert recorder._improves(KEY, {"auc": 0.95, "loss": 2.0})
    assert recorder._improves(KEY, {"auc": 0.9, "loss": 0.5}) and not recorder._improves(KEY, {"auc": 0.9, "loss": 1.5})


def test_fitted_temperatures_reach_the_model_and_move_its_thresholds(tmp_path, tiny_profile):
    rng = np.random.default_rng(0)
    z = rng.normal(scale=1.5, size=600)
    y = (rng.random(600) < 1 / (1 + np.exp(-z))).astype(int)
    overconfident = two_class(1 / (1 + np.exp(-2.0 * z)))
    recorder = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run"), thresholds="youden"))
    recorder.validation_completed(KEY, 1, 2, {"h": fv.site_figures(y, overconfident, 1.0)})
    (_, threshold, _), _ = recorder.decision_thresholds((0.5, 0.5, 0.5))
    model = CLAHDM(tiny_profile.model)
    sent = with_thresholds(tiny_profile, model, recorder, temperature_scaling=True)
    temperature = sent.model.temperatures[1]
    assert temperature == pytest.approx(2.0, rel=0.15) and sent.model.temperatures[::2] == (1.0, 1.0)
    assert model.temperatures == sent.model.temperatures
    assert model.subtype_thresholds[0] == pytest.approx(cal.threshold_at(threshold, temperature))
    unscaled = with_thresholds(tiny_profile, CLAHDM(tiny_profile.model), recorder)  # temperature_scaling off
    assert unscaled.model.temperatures == (1.0, 1.0, 1.0)
    assert unscaled.model.subtype_thresholds[0] == pytest.approx(threshold)


def test_lost_best_weights_leave_the_final_model_to_evaluate(tmp_path, tiny_profile, caplog):
    recorder, final, settings = validated_run(tmp_path, tiny_profile)
    (tmp_path / "run" / rd.best_checkpoint(KEY, 2)).unlink()
    with caplog.at_level("ERROR", logger="clafed.server"):
        evaluated, candidates = candidate_models(settings, tiny_profile, final, recorder)
    assert evaluated == "final" and set(candidates) == {"final"} and "weights are gone" in caplog.text
    assert rd.read_json(tmp_path / "run" / rd.RUN_FILE)["models"]["final"]["best_by_validation"] is False
