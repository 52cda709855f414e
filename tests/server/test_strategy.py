"""Aggregation: Flower's FedAvg over our sites, weighted by each sub-model's own case counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from common import messages as msg
from common.model import SubModel
from server.settings import Settings
from server.strategy import make_strategy

# Building a reply Message outside a running Flower app needs an identity for the task.
TaskIdentity.run_id = TaskIdentity.task_id = TaskIdentity.node_id = 1


def site_weights(model: SubModel, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + torch.randn(v.shape, generator=gen) if v.dtype.is_floating_point else v + seed)
            for k, v in model.state_dict().items()}


def reply(node: int, state: dict[str, torch.Tensor], examples: int) -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=msg.TRAIN)
    content = msg.train_reply(msg.state_to_arrays(state), {msg.NUM_EXAMPLES: examples, "loss": 1.0, "accuracy": 0.5})
    answer = Message(content, reply_to=request)
    return answer


@pytest.fixture
def model(tiny_profile) -> SubModel:
    return SubModel(tiny_profile.model)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_fedavg_is_the_example_weighted_mean(model, strategy):
    states = [site_weights(model, s) for s in (1, 2, 3)]
    counts = [300, 100, 0]  # the third site has no cases of this sub-model
    reports = []
    agg = make_strategy(Settings(profile="tiny", strategy=strategy), [1, 2, 3], reports.append)
    agg._started, agg._targeted = 0.0, [1, 2, 3]
    arrays, _ = agg.aggregate_train(1, [reply(n, s, c) for n, s, c in zip((1, 2, 3), states, counts)])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    key = next(k for k, v in merged.items() if v.dtype.is_floating_point and v.numel() > 100)
    expected = (300 * states[0][key] + 100 * states[1][key]) / 400
    torch.testing.assert_close(merged[key], expected, rtol=1e-5, atol=1e-6)
    assert reports[0].replies[3][msg.NUM_EXAMPLES] == 0 and set(reports[0].replies) == {1, 2, 3}
    ints = [k for k, v in merged.items() if not v.dtype.is_floating_point]
    assert ints and all(merged[k].dtype == model.state_dict()[k].dtype for k in ints)


def test_sites_without_cases_leave_the_submodel_untouched(model):
    reports = []
    agg = make_strategy(Settings(profile="tiny"), [1, 2], reports.append)
    agg._started, agg._targeted = 0.0, [1, 2]
    state = site_weights(model, 7)
    arrays, metrics = agg.aggregate_train(1, [reply(1, state, 0), reply(2, state, 0)])
    assert arrays is None and metrics is None  # the server then keeps the previous weights
    assert reports[0].arrays is None


def test_failed_sites_are_reported_not_averaged(model):
    reports = []
    agg = make_strategy(Settings(profile="tiny"), [1, 2], reports.append)
    agg._started, agg._targeted = 0.0, [1, 2]
    request = Message(RecordDict(), dst_node_id=2, message_type=msg.TRAIN)
    failed = Message(Error(code=0, reason="case h2-007: unreadable image"), reply_to=request)
    state = site_weights(model, 3)
    arrays, _ = agg.aggregate_train(1, [reply(1, state, 10), failed])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    key = next(iter(merged))
    torch.testing.assert_close(merged[key], state[key])
    assert reports[0].failures == {2: "case h2-007: unreadable image"}


def test_round_is_sent_only_to_the_targeted_connected_sites(model):
    class Grid:
        def get_node_ids(self):
            return [1, 2, 3, 4]

    agg = make_strategy(Settings(profile="tiny"), [2, 4, 9], lambda r: None)
    messages = agg.configure_train(1, msg.state_to_arrays(model.state_dict()), ConfigRecord({"level": "x"}), Grid())
    assert sorted(m.metadata.dst_node_id for m in messages) == [2, 4]  # 9 is not connected
    assert all(m.metadata.message_type == msg.TRAIN for m in messages)


def test_weights_of_another_architecture_are_refused(model, tiny_profile):
    other = SubModel(tiny_profile.model.__class__(backbone="resnet18"))
    with pytest.raises(ValueError, match="do not fit|shape"):
        msg.arrays_to_state(msg.state_to_arrays(other.state_dict()), model.state_dict())


def test_only_scalars_may_leave_a_site():
    with pytest.raises(TypeError, match="only scalar"):
        msg.metric_record({"scores": np.arange(5)})
