"""What a site sends: weights, counts and aggregate figures, never images or per-case values."""
from __future__ import annotations

import pytest
import torch
import yaml
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client import client_app
from common import messages as msg
from common.config import ConfigError
from common.labels import LEVELS
from common.model import SubModel
from tests.sitegen import write_site

TaskIdentity.run_id = TaskIdentity.task_id = TaskIdentity.node_id = 1
TRAIN_FIGURES = {msg.NUM_EXAMPLES, "loss", "accuracy", "train_seconds", "epochs", "peak_rss_bytes"}


@pytest.fixture
def site_yaml(tmp_path):
    manifest = write_site(tmp_path / "data", {"reactive": 3, "tuberculous": 3, "lymphoma": 3, "metastatic": 3})
    path = tmp_path / "hospital9.yaml"
    path.write_text(yaml.safe_dump({"name": "hospital9", "manifest": str(manifest), "batch_size": 4,
                                    "holdout": {"kind": "fraction", "fraction": 0.34},
                                    "output_dir": str(tmp_path / "out"), "device": "cpu"}))
    return path


def context(site_yaml) -> Context:
    return Context(run_id=1, node_id=5, node_config={"site-config": str(site_yaml)}, state=RecordDict(), run_config={})


def request(content: RecordDict, kind: str) -> Message:
    return Message(content, dst_node_id=5, message_type=kind)


def test_site_info_is_name_role_and_counts(site_yaml):
    reply = client_app.site_info(request(RecordDict(), msg.SITE_INFO), context(site_yaml))
    assert set(reply.content.keys()) == {msg.SITE, msg.METRICS}
    assert dict(reply.content[msg.SITE])["name"] == "hospital9"
    counts = dict(reply.content[msg.METRICS])
    assert all(isinstance(v, int) for v in counts.values())
    assert counts["train.total"] + counts["heldout.total"] == 12


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.key)
def test_train_reply_holds_only_the_submodel_weights_and_scalar_figures(site_yaml, tiny_profile, level):
    model = SubModel(tiny_profile.model)
    config = msg.config_record({"level": level.key, "profile": msg.profile_to_json(tiny_profile),
                                "local-epochs": 1, "server-round": 1, "round-offset": 0, "seed": 0})
    content = RecordDict({msg.ARRAYS: msg.state_to_arrays(model.state_dict()), msg.CONFIG: config})
    reply = client_app.train(request(content, msg.TRAIN), context(site_yaml))
    assert set(reply.content.keys()) == {msg.ARRAYS, msg.METRICS}
    arrays = reply.content[msg.ARRAYS]
    reference = model.state_dict()
    assert set(arrays.keys()) == set(reference)
    assert all(tuple(arrays[k].shape) == tuple(reference[k].shape) for k in reference)
    figures = dict(reply.content[msg.METRICS])
    assert set(figures) == TRAIN_FIGURES and all(isinstance(v, (int, float)) for v in figures.values())
    assert figures[msg.NUM_EXAMPLES] > 0
    changed = msg.arrays_to_state(arrays, reference)
    assert any(not torch.equal(changed[k], reference[k]) for k in reference)


def test_a_node_without_a_site_says_how_to_configure_it():
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(ConfigError, match="site-config"):
        client_app.site_info(request(RecordDict(), msg.SITE_INFO), ctx)
