"""The server's round logic against a fake grid: minimum sites, failures named, nothing half-saved."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Error, Message, RecordDict

from common import federated_validation as fv
from common import messages as msg
from common.labels import GATE_PHASE, LEVELS, SHARED
from common.model import CLAHDM
from server import run_dir as rd
from server.federation import FederationError, train_all, train_phase, with_thresholds
from server.recorder import RunRecorder
from server.records import SiteInfo
from server.settings import Settings
from server.strategy import short_reason

LEVEL = LEVELS[0]


class FakeGrid:
    """Two sites: node 1 trains (echoes the weights with 10 cases), node 2 fails or stays silent."""

    def __init__(self, second: str) -> None:
        self.second = second
        self.sent: list[tuple[str, int, str]] = []  # (message type, node, phase)

    def get_node_ids(self):
        return [1, 2]

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for request in messages:
            node = request.metadata.dst_node_id
            self.sent.append((request.metadata.message_type, node, str(request.content[msg.CONFIG]["phase"])))
            if request.metadata.message_type == msg.VALIDATE and node == 2 and self.second == "lies":
                figures = fv.site_figures(np.array([1, 0]), np.array([[0.0, 1.0], [1.0, 0.0]]), loss_sum=0.0)
                figures[fv.hist_key(1, True, 0)] = 10 ** 9  # a billion positives scored 0: drags the gate to 0
                replies.append(Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=request))
            if request.metadata.message_type == msg.VALIDATE and node == 1:
                # Node 1 scores 4 positives high and 4 negatives low: a perfectly separating network.
                targets = np.array([1, 1, 1, 1, 0, 0, 0, 0])
                p = np.array([0.9, 0.8, 0.7, 0.65, 0.3, 0.2, 0.1, 0.05])
                figures = fv.site_figures(targets, np.stack([1 - p, p], 1), loss_sum=2.0)
                if request.content[msg.CONFIG]["phase"] == GATE_PHASE:  # the gate's per-label histograms
                    figures |= fv.gate_figures(np.array([3, 3, 2, 3, 0, 1, 0, 0]), p)
                replies.append(Message(RecordDict({msg.METRICS: msg.metric_record(figures)}), reply_to=request))
            elif node == 1 and request.metadata.message_type == msg.TRAIN:
                declared = sites()[0].counts[msg.train_count(str(request.content[msg.CONFIG]['phase']))]
                figures = {msg.NUM_EXAMPLES: declared, "loss": 0.5, "accuracy": 0.8, "train_seconds": 1.0}
                replies.append(Message(msg.train_reply(request.content[msg.ARRAYS], figures), reply_to=request))
            elif self.second == "fails":
                replies.append(Message(Error(code=0, reason="Message: case h2-003: image unreadable"), reply_to=request))
        return replies


def sites(validation: int = 0):
    counts = {f"train.{lv.key}": 10 for lv in LEVELS} | {f"validation.{lv.key}": validation for lv in LEVELS}
    counts |= {f"train.{SHARED}": 20, f"validation.{SHARED}": validation}
    return [SiteInfo(1, "hospital1", "train", "c", counts), SiteInfo(2, "hospital2", "train", "c", dict(counts))]


def one_round(profile, shared_rounds: int = 0):
    return replace(profile, train=replace(profile.train, rounds=1, shared_rounds=shared_rounds))


@pytest.mark.parametrize("second, named", [("fails", "failed: hospital2"), ("silent", "silent: hospital2")])
def test_a_round_below_the_minimum_stops_the_run_and_saves_nothing(tmp_path, tiny_profile, second, named):
    settings = Settings(profile="tiny", rounds=1, min_train_sites=2, run_dir=str(tmp_path / "run"))
    recorder = RunRecorder.open(settings)
    model = CLAHDM(tiny_profile.model)
    with pytest.raises(FederationError, match=f"1 site\\(s\\) contributed, 2 required.*{named}.*resume"):
        train_phase(FakeGrid(second), settings, one_round(tiny_profile), LEVEL.key, model.submodels[LEVEL.key], model,
                    sites(), recorder)
    assert not (tmp_path / "run" / rd.STATE_FILE).exists() and not (tmp_path / "run" / rd.METRICS_FILE).exists()


def test_a_round_that_meets_the_minimum_is_recorded(tmp_path, tiny_profile):
    settings = Settings(profile="tiny", rounds=1, min_train_sites=1, run_dir=str(tmp_path / "run"))
    recorder = RunRecorder.open(settings)
    model = CLAHDM(tiny_profile.model)
    train_phase(FakeGrid("fails"), settings, one_round(tiny_profile), LEVEL.key, model.submodels[LEVEL.key], model,
                sites(), recorder)
    [record] = rd.read_jsonl(tmp_path / "run" / rd.METRICS_FILE)
    assert record["failed_sites"] == {"hospital2": "case h2-003: image unreadable"}
    assert set(record["sites"]) == {"hospital1"} and record["num_examples"] == 10
    [entry] = rd.read_jsonl(tmp_path / "run" / rd.LEDGER_FILE)
    assert entry["sites"] == {"hospital1": 10} and len(entry["sha256"]) == 64
    assert rd.read_json(tmp_path / "run" / rd.STATE_FILE)["completed"][LEVEL.key] == 1


def test_site_errors_are_shown_without_the_transport_traceback():
    wrapped = "<class 'RayTaskError'>:<'Traceback ...\n  File x\nException ... Message: case h1-7: missing file'>"
    assert short_reason(wrapped) == "case h1-7: missing file"


def test_the_shared_phase_runs_first_and_initialises_every_sub_model(tmp_path, tiny_profile):
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"))
    recorder = RunRecorder.open(settings)
    model, grid = CLAHDM(tiny_profile.model), FakeGrid("silent")
    train_all(grid, settings, one_round(tiny_profile, shared_rounds=1), model, sites(), recorder)
    phases = [phase for kind, _, phase in grid.sent if kind == msg.TRAIN]
    assert phases == [SHARED, SHARED] + [lv.key for lv in LEVELS for _ in (1, 2)]
    assert (tmp_path / "run" / rd.SHARED_CHECKPOINT_FILE).is_file()
    shared = recorder.shared_network(tiny_profile)  # a fresh network: the run is not resuming
    assert shared.n_classes == 4
    # The fake site echoes weights, so each sub-model still holds the shared extractors exactly.
    saved = __import__("torch").load(tmp_path / "run" / rd.SHARED_CHECKPOINT_FILE, weights_only=True)
    for level in LEVELS:
        sub = model.submodels[level.key].state_dict()
        assert all(np.array_equal(sub[k].numpy(), v.numpy()) for k, v in saved.items() if k.startswith("bus."))


@pytest.mark.parametrize("second", ["silent", "lies"])
def test_validation_rounds_are_recorded_and_choose_the_gate(tmp_path, tiny_profile, second):
    """A silent site and one whose histograms do not add up are both left out of the pool."""
    settings = Settings(profile="tiny", run_dir=str(tmp_path / "run"), thresholds="joint")
    recorder = RunRecorder.open(settings)
    model, grid = CLAHDM(tiny_profile.model), FakeGrid(second)
    train_all(grid, settings, one_round(tiny_profile), model, sites(validation=8), recorder)
    # Only nodes with validation cases get the evaluate round, the silent one included.
    validations = [(kind, node) for kind, node, _ in grid.sent if kind == msg.VALIDATE]
    assert validations == [(msg.VALIDATE, 1), (msg.VALIDATE, 2)] * 3
    records = rd.read_jsonl(tmp_path / "run" / rd.VALIDATION_FILE)
    assert [r["level"] for r in records] == [lv.key for lv in LEVELS]
    assert all(r["auc"] == 1.0 and r["n"] == 8 and r["loss"] == pytest.approx(0.25) for r in records)
    assert records[0]["sites"] == {"hospital1": 8}
    # Perfect separation between 0.3 and 0.65: the best edges span that gap; the one nearest 0.5 wins.
    thresholds, how = recorder.decision_thresholds((0.5, 0.5, 0.5))
    assert thresholds == pytest.approx((0.5, 0.5, 0.5))
    assert how.startswith("chosen by the balanced accuracy of the gated answer")


def test_the_chosen_thresholds_reach_the_model_and_the_profile_the_sites_receive(tmp_path, tiny_profile):
    recorder = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run"), thresholds="youden"))
    # Pooled counts that separate at 0.3 (sub-model 1) and 0.625 (sub-model 3); sub-model 2 was never validated.
    recorder.state["validation_totals"] = {
        "submodel1": fv.site_figures(np.array([0, 0, 1, 1]), two_class([0.05, 0.1, 0.3, 0.35]), 1.0),
        "submodel3": fv.site_figures(np.array([0, 0, 1, 1]), two_class([0.6, 0.62, 0.66, 0.7]), 1.0)}
    model = CLAHDM(tiny_profile.model)
    sent = with_thresholds(tiny_profile, model, recorder)
    assert model.decision_thresholds == sent.model.decision_thresholds == pytest.approx((0.3, 0.5, 0.625))
    assert msg.profile_from_json(msg.profile_to_json(sent)).model.subtype_thresholds == pytest.approx((0.5, 0.625))


def two_class(p_positive: list[float]) -> np.ndarray:
    p = np.array(p_positive)
    return np.stack([1 - p, p], axis=1)


def test_cases_without_an_roi_and_no_localiser_are_named_in_a_warning(caplog):
    from common.config import get_profile
    from server.federation import warn_unboxed

    sites = [SiteInfo(1, "hospital1", "train", "c", {"train.total": 10, "train.localiser": 10}),
             SiteInfo(2, "hospital2", "train", "c", {"train.total": 8, "train.localiser": 0})]
    with caplog.at_level("WARNING", logger="clafed.server"):
        warn_unboxed(sites, get_profile("tiny", {"train": {"localiser_rounds": 0}}))
    assert "hospital2: 8" in caplog.text and "hospital1" not in caplog.text and "--localiser-rounds" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="clafed.server"):
        warn_unboxed(sites, get_profile("tiny"))  # one localiser round: those nodes will be found
    assert caplog.text == ""


def validated_levels(per_class: int) -> dict[str, dict]:
    """Pooled validation totals of all three levels: `per_class` cases of each 4-class label whose
    scores separate only with the gate at 0.3 and sub-model 3 at 0.7 (sub-model 2 at 0.475-0.525)."""
    labels = np.repeat(np.arange(4), per_class)
    malignant = labels >= 2

    def spread(low: float, high: float, chosen: np.ndarray) -> np.ndarray:
        return np.resize(np.linspace(low, high, per_class), int(chosen.sum()))

    p_gate = np.zeros(labels.size)
    p_gate[malignant], p_gate[~malignant] = spread(0.305, 0.9, malignant), spread(0.02, 0.28, ~malignant)
    gate = fv.site_figures(malignant.astype(int), two_class(p_gate), 1.0) | fv.gate_figures(labels, p_gate)
    tb, met = labels[~malignant] == 1, labels[malignant] == 3
    p_tb, p_met = np.zeros(tb.size), np.zeros(met.size)
    p_tb[tb], p_tb[~tb] = spread(0.55, 0.95, tb), spread(0.05, 0.45, ~tb)
    p_met[met], p_met[~met] = spread(0.705, 0.98, met), spread(0.3, 0.68, ~met)
    return {GATE_PHASE: gate, "submodel2": fv.site_figures(tb.astype(int), two_class(p_tb), 1.0),
            "submodel3": fv.site_figures(met.astype(int), two_class(p_met), 1.0)}


@pytest.mark.parametrize("rule, per_class, expected, how", [
    ("auto", 5, (0.5, 0.5, 0.5), "kept at the trained values: too few pooled validation cases"),
    ("auto", fv.MIN_CLASS_CASES, (0.3, 0.5, 0.7), "chosen by the balanced accuracy of the gated answer"),
    ("joint", 5, (0.3, 0.5, 0.7), "chosen by the balanced accuracy of the gated answer"),
    ("fixed", fv.MIN_CLASS_CASES, (0.5, 0.5, 0.5), "kept at the trained values (thresholds=fixed)")])
def test_the_thresholds_rule_keeps_the_trained_values_unless_validation_can_carry_the_choice(
        tmp_path, rule, per_class, expected, how):
    recorder = RunRecorder.open(Settings(profile="tiny", run_dir=str(tmp_path / "run"), thresholds=rule))
    recorder.state["validation_totals"] = validated_levels(per_class)
    thresholds, said = recorder.decision_thresholds((0.5, 0.5, 0.5))
    assert said.startswith(how), said
    assert thresholds == pytest.approx(expected)  # only 0.3 and 0.7 separate; of sub-model 2's edges 0.5 is nearest
    if rule == "auto" and per_class < fv.MIN_CLASS_CASES:
        assert "reactive 5" in said and "metastatic 5" in said
