"""The ServerApp's whole run against a fake grid: discovery, training, final evaluation, exit status."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Error, Message, MetricRecord, RecordDict

from common import messages as msg
from common import packing
from common.labels import LEVELS, SHARED
from server import run_dir as rd
from server.federation import FederationError
from server.server_app import main

COUNTS = {f"train.{lv.key}": 6 for lv in LEVELS} | {f"train.{SHARED}": 12, "train.total": 12, "heldout.total": 4}


class Grid:
    """Node 1 is a healthy training site; node 2 cannot load its data (or stays healthy)."""

    def __init__(self, second_fails: bool, bad_evaluation: bool = False) -> None:
        self.second_fails, self.bad_evaluation = second_fails, bad_evaluation
        self.kinds: list[str] = []

    def get_node_ids(self):
        return [1, 2]

    # The ServerApp talks to the grid as Flower's does: push, then pull the replies.
    def push_messages(self, messages):
        messages = list(messages)
        ids = []
        for request in messages:
            ids.append(f"m{len(self.kinds) + len(ids)}")
            request.metadata.__dict__["_message_id"] = ids[-1]  # what Flower's grid assigns on push
            request.content = packing.unpacked(request.content)  # what the ClientApp sees
        self._replies = {reply.metadata.reply_to_message_id: reply for reply in self.send_and_receive(messages)}
        return ids

    def pull_messages(self, message_ids):
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for request in messages:
            node, kind = request.metadata.dst_node_id, request.metadata.message_type
            self.kinds.append(kind)
            if node == 2 and self.second_fails:
                reason = "<class 'client.disclosure.SiteFailure'>:<'the site's manifest cannot be used (2 problem(s))'>"
                replies.append(Message(Error(code=0, reason=reason), reply_to=request))
            elif kind == msg.SITE_INFO:
                info = msg.config_record({"name": f"hospital{node}", "role": "train", "cohort": "c"})
                replies.append(Message(RecordDict({msg.SITE: info, msg.METRICS: msg.metric_record(COUNTS)}),
                                       reply_to=request))
            elif kind == msg.TRAIN:
                level = str(request.content[msg.CONFIG]["phase"])
                figures = {msg.NUM_EXAMPLES: COUNTS[f"train.{level}"], "loss": 0.5, "accuracy": 0.5}
                replies.append(Message(msg.train_reply(request.content[msg.ARRAYS], figures), reply_to=request))
            elif kind == msg.FINAL_EVAL and self.bad_evaluation and node == 2:
                figures = MetricRecord({"n_cases": 4, "clahdm.auc_micro": float("inf"), "scores": [0.1, 0.9]})
                replies.append(Message(RecordDict({msg.METRICS: figures}), reply_to=request))
            elif kind == msg.FINAL_EVAL:
                figures = msg.metric_record({"n_cases": 4, "withheld": 1})
                info = msg.config_record({"name": f"hospital{node}", "role": "train", "cohort": "c"})
                replies.append(Message(RecordDict({msg.METRICS: figures, msg.SITE: info}), reply_to=request))
        return replies


@pytest.fixture(autouse=True)
def prompt_polls(monkeypatch):
    """The fake grids answer at once: the ServerApp's transport need not wait a real poll between pulls."""
    monkeypatch.setattr("server.transport.POLL_SECONDS", 0.005)


def context(tmp_path, **config) -> Context:
    run_config = {"profile": "tiny", "rounds": 1, "shared-rounds": 1, "run-dir": str(tmp_path / "run"),
                  "bootstrap": 20, "connect-timeout": 5.0, **config}
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


def test_a_clean_run_trains_every_phase_and_evaluates_every_site(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAFED_RUN_CONFIG", raising=False)
    grid = Grid(second_fails=False)
    main(grid, context(tmp_path, **{"min-sites": 2}))
    assert grid.kinds.count(msg.TRAIN) == 2 * (1 + len(LEVELS)) and grid.kinds.count(msg.FINAL_EVAL) == 2
    run = tmp_path / "run"
    assert sorted(rd.read_evaluations(run)) == ["hospital1", "hospital2"]
    assert rd.run_problems(run) == [] and (run / rd.MODEL_FILE).is_file()
    assert (run / rd.REPORT_MD).is_file() and (run / rd.REPORT_HTML).is_file()  # deployment writes it too


def test_a_site_that_cannot_load_its_data_makes_the_run_fail_after_every_record_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAFED_RUN_CONFIG", raising=False)
    with pytest.raises(FederationError, match="1 site problem.*could not take part: node 2: the site's manifest"):
        main(Grid(second_fails=True), context(tmp_path))
    run = tmp_path / "run"
    assert rd.read_json(run / rd.RUN_FILE)["finished"] and (run / rd.MODEL_FILE).is_file()
    assert list(rd.read_evaluations(run)) == ["hospital1"]
    assert "could not take part: node 2" in (run / rd.REPORT_MD).read_text()


def test_with_every_site_required_a_failed_site_stops_the_run_before_training(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAFED_RUN_CONFIG", raising=False)
    grid = Grid(second_fails=True)
    with pytest.raises(FederationError, match="1 usable sites, 2 required"):
        main(grid, context(tmp_path, **{"min-sites": 2}))
    assert msg.TRAIN not in grid.kinds


class FailingPhaseGrid(Grid):
    """Healthy sites, except that every training round of `phase` fails (the site crashed)."""

    def __init__(self, phase: str | None) -> None:
        super().__init__(second_fails=False)
        self.phase = phase
        self.trained: list[str] = []

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        failing = [m for m in messages if m.metadata.message_type == msg.TRAIN
                   and str(m.content[msg.CONFIG]["phase"]) == self.phase]
        self.trained += [str(m.content[msg.CONFIG]["phase"]) for m in messages
                         if m.metadata.message_type == msg.TRAIN and m not in failing]
        replies = [Message(Error(code=0, reason="<class 'X'>:<'out of memory'>"), reply_to=m) for m in failing]
        return replies + super().send_and_receive([m for m in messages if m not in failing], timeout)


def test_a_stopped_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAFED_RUN_CONFIG", raising=False)
    first = FailingPhaseGrid(phase="submodel2")
    with pytest.raises(FederationError, match="submodel2 round 1: 0 site"):
        main(first, context(tmp_path, **{"min-sites": 2}))
    run = tmp_path / "run"
    assert rd.read_json(run / rd.STATE_FILE)["completed"] == {"shared": 1, "submodel1": 1, "submodel2": 0,
                                                              "submodel3": 0, "localiser": 0}
    again = FailingPhaseGrid(phase=None)
    main(again, context(tmp_path, **{"min-sites": 2, "resume": True}))
    assert again.trained == ["submodel2"] * 2 + ["submodel3"] * 2  # nothing trained twice
    rounds = [(r["level"], r["round"]) for r in rd.read_jsonl(run / rd.METRICS_FILE)]
    assert rounds == [("shared", 1), ("submodel1", 1), ("submodel2", 1), ("submodel3", 1)]
    assert rd.read_json(run / rd.RUN_FILE)["resumed"] and rd.run_problems(run) == []


def test_an_evaluation_reply_that_is_not_single_finite_numbers_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAFED_RUN_CONFIG", raising=False)
    with pytest.raises(FederationError, match="evaluation at hospital2 failed: reply refused: figures that are not"):
        main(Grid(second_fails=False, bad_evaluation=True), context(tmp_path, **{"min-sites": 2}))
    assert list(rd.read_evaluations(tmp_path / "run")) == ["hospital1"]


class MovingGrid(Grid):
    """Healthy sites that each move every float weight by a fixed step; optionally the training
    round number `fail_at` of `phase` fails at every site (the round then stops the run)."""

    STEPS = {1: 1e-3, 2: -4e-4}

    def __init__(self, phase: str | None = None, fail_at: int = 0) -> None:
        super().__init__(second_fails=False)
        self.phase, self.fail_at, self.rounds = phase, fail_at, 0

    def send_and_receive(self, messages, timeout=None):
        messages = list(messages)
        trains = [m for m in messages if m.metadata.message_type == msg.TRAIN]
        if not trains:
            return super().send_and_receive(messages, timeout)
        phase = str(trains[0].content[msg.CONFIG]["phase"])
        self.rounds += phase == self.phase
        replies = []
        for request in trains:
            node = request.metadata.dst_node_id
            if phase == self.phase and self.rounds == self.fail_at:
                replies.append(Message(Error(code=0, reason="<class 'X'>:<'killed'>"), reply_to=request))
                continue
            moved = {k: a.numpy() + self.STEPS[node] if a.numpy().dtype.kind == "f" else a.numpy()
                     for k, a in request.content[msg.ARRAYS].items()}
            arrays = msg.state_to_arrays({k: torch.from_numpy(np.array(v)) for k, v in moved.items()})
            figures = {msg.NUM_EXAMPLES: COUNTS[f"train.{phase}"], "loss": 0.5, "accuracy": 0.5}
            replies.append(Message(msg.train_reply(arrays, figures), reply_to=request))
        return replies


def test_a_resumed_fedadam_run_goes_on_with_its_moments(tmp_path, monkeypatch):
    """Stopped in a sub-model's second round and resumed, FedAdam ends where an uninterrupted run ends."""
    monkeypatch.delenv("CLAFED_RUN_CONFIG", raising=False)
    config = {"min-sites": 2, "strategy": "fedadam", "rounds": 2, "shared-rounds": 0, "localiser-rounds": 0,
              "server-lr": 0.05, "clip-factor": 0.0}
    main(MovingGrid(), context(tmp_path / "whole", **config))
    with pytest.raises(FederationError, match="submodel1 round 2"):
        main(MovingGrid(phase="submodel1", fail_at=2), context(tmp_path / "stopped", **config))
    stopped = tmp_path / "stopped" / "run"
    assert torch.load(stopped / rd.STRATEGY_STATE_FILE, weights_only=True)["round"] == 1
    main(MovingGrid(), context(tmp_path / "stopped", resume=True, **config))
    whole = torch.load(tmp_path / "whole" / "run" / rd.CHECKPOINT_FILE, weights_only=True)["state_dict"]
    resumed = torch.load(stopped / rd.CHECKPOINT_FILE, weights_only=True)["state_dict"]
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-6, msg=key)
