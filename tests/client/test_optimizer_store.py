"""A site's optimiser state between rounds: kept on its disk for the next round only, then removed."""
from __future__ import annotations

import pytest
import torch
import yaml
from flwr.app import Context, Message, RecordDict

from client import client_app, optimizer_store
from common import messages as msg
from common.errors import ProtocolError
from common.model import SubModel
from common.training import OptimizerCarry
from tests.sitegen import write_site


def carry_of(value: float) -> OptimizerCarry:
    return OptimizerCarry({"state": {0: {"step": torch.tensor(3.0), "exp_avg_sq": torch.full((2,), value)}},
                           "param_groups": [{"lr": 1e-3, "params": [0]}]})


def test_state_is_used_by_the_next_round_only_and_removed_after_the_last(tmp_path):
    optimizer_store.save(tmp_path, 7, "submodel1", 1, 3, carry_of(0.5))
    path = optimizer_store.state_path(tmp_path, 7, "submodel1")
    assert path.is_file() and path.is_relative_to(tmp_path)
    loaded = optimizer_store.load(tmp_path, 7, "submodel1", 2)
    assert torch.equal(loaded.state["state"][0]["exp_avg_sq"], torch.full((2,), 0.5))
    assert optimizer_store.load(tmp_path, 7, "submodel1", 3).state is None  # not the round right after
    assert optimizer_store.load(tmp_path, 8, "submodel1", 2).state is None  # another run
    assert optimizer_store.load(tmp_path, 7, "submodel2", 2).state is None  # another phase
    assert optimizer_store.load(tmp_path, 7, "submodel1", 1).state is None  # a phase's first round starts fresh
    optimizer_store.save(tmp_path, 7, "submodel1", 3, 3, carry_of(0.1))
    assert not path.exists()


def test_a_torn_file_starts_a_fresh_optimiser_and_a_path_as_phase_is_refused(tmp_path):
    path = optimizer_store.state_path(tmp_path, 1, "shared")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    assert optimizer_store.load(tmp_path, 1, "shared", 2).state is None
    with pytest.raises(ProtocolError):
        optimizer_store.state_path(tmp_path, 1, "../../etc")


def test_a_site_carries_its_optimiser_across_rounds_and_sends_none_of_it(tmp_path, tiny_profile):
    manifest = write_site(tmp_path / "data", {"reactive": 3, "tuberculous": 3, "lymphoma": 3, "metastatic": 3})
    site_yaml = tmp_path / "hospital9.yaml"
    site_yaml.write_text(yaml.safe_dump({"name": "hospital9", "manifest": str(manifest), "min_cohort": 1,
                                         "holdout": {"kind": "none"}, "validation_fraction": 0.0,
                                         "output_dir": str(tmp_path / "out"), "device": "cpu"}))
    ctx = Context(run_id=42, node_id=5, node_config={"site-config": str(site_yaml)}, state=RecordDict(),
                  run_config={})
    model = SubModel(tiny_profile.model)
    path = optimizer_store.state_path(tmp_path / "out", 42, "submodel1")
    weights = msg.state_to_arrays(model.state_dict())
    for server_round in (1, 2):
        config = msg.PhaseInstruction("submodel1", msg.profile_to_json(tiny_profile), rounds=2).config()
        config[msg.SERVER_ROUND] = server_round
        reply = client_app.train(Message(RecordDict({msg.ARRAYS: weights, msg.CONFIG: config}), dst_node_id=5,
                                         message_type=msg.TRAIN), ctx)
        # The reply is the network's weights and scalar figures: no optimiser moment travels.
        assert set(reply.content.keys()) == {msg.ARRAYS, msg.METRICS}
        assert set(reply.content[msg.ARRAYS].keys()) == set(model.state_dict())
        if server_round == 1:
            saved = torch.load(path, weights_only=True)
            assert saved["round"] == 1 and saved["state"]["state"]
        weights = reply.content[msg.ARRAYS]
    assert not path.exists()  # the phase's last round removed it
