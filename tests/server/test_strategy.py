"""Aggregation: Flower's FedAvg over our sites, weighted by each sub-model's own case counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Error, Message, RecordDict

from common import messages as msg
from common.model import SubModel
from server.settings import Settings
from server.strategy import make_strategy


def site_weights(model: SubModel, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + torch.randn(v.shape, generator=gen) if v.dtype.is_floating_point else v + seed)
            for k, v in model.state_dict().items()}


def reply(node: int, state: dict[str, torch.Tensor], examples: int, **figures: float) -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=msg.TRAIN)
    content = msg.train_reply(msg.state_to_arrays(state),
                              {msg.NUM_EXAMPLES: examples, "loss": 1.0, "accuracy": 0.5, **figures})
    answer = Message(content, reply_to=request)
    return answer


class Grid:
    def __init__(self, nodes=(1, 2, 3, 4)):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


@pytest.fixture
def model(tiny_profile) -> SubModel:
    return SubModel(tiny_profile.model)


def strategy_for(model: SubModel, declared: dict[int, int], settings: Settings | None = None, reports=None):
    """A strategy that has sent `model`'s weights to the `declared` sites (round 1 begun)."""
    reports = [] if reports is None else reports
    agg = make_strategy(settings or Settings(profile="tiny"), list(declared), reports.append, declared=declared)
    agg.configure_train(1, msg.state_to_arrays(model.state_dict()), ConfigRecord({"phase": "x"}), Grid(declared))
    return agg, reports


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_fedavg_is_the_example_weighted_mean(model, strategy):
    states = [site_weights(model, s) for s in (1, 2, 3)]
    counts = [300, 100, 0]  # the third site has no cases of this sub-model
    agg, reports = strategy_for(model, dict(zip((1, 2, 3), counts)), Settings(profile="tiny", strategy=strategy,
                                                                             clip_factor=0.0))
    arrays, _ = agg.aggregate_train(1, [reply(n, s, c) for n, s, c in zip((1, 2, 3), states, counts)])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    key = next(k for k, v in merged.items() if v.dtype.is_floating_point and v.numel() > 100)
    expected = (300 * states[0][key] + 100 * states[1][key]) / 400
    torch.testing.assert_close(merged[key], expected, rtol=1e-5, atol=1e-6)
    assert reports[0].replies[3][msg.NUM_EXAMPLES] == 0 and set(reports[0].replies) == {1, 2, 3}
    ints = [k for k, v in merged.items() if not v.dtype.is_floating_point]
    assert ints and all(merged[k].dtype == model.state_dict()[k].dtype for k in ints)


def test_sites_without_cases_leave_the_submodel_untouched(model):
    agg, reports = strategy_for(model, {1: 0, 2: 0})
    state = site_weights(model, 7)
    arrays, metrics = agg.aggregate_train(1, [reply(1, state, 0), reply(2, state, 0)])
    assert arrays is None and metrics is None  # the server then keeps the previous weights
    assert reports[0].arrays is None


def test_failed_sites_are_reported_not_averaged(model):
    agg, reports = strategy_for(model, {1: 10, 2: 10})
    request = Message(RecordDict(), dst_node_id=2, message_type=msg.TRAIN)
    failed = Message(Error(code=0, reason="case h2-007: unreadable image"), reply_to=request)
    state = site_weights(model, 3)
    arrays, _ = agg.aggregate_train(1, [reply(1, state, 10), failed])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    key = next(iter(merged))
    torch.testing.assert_close(merged[key], state[key])
    assert reports[0].failures == {2: "case h2-007: unreadable image"}


def test_round_is_sent_only_to_the_targeted_connected_sites(model):
    agg = make_strategy(Settings(profile="tiny"), [2, 4, 9], lambda r: None)
    messages = agg.configure_train(1, msg.state_to_arrays(model.state_dict()), ConfigRecord({"phase": "x"}), Grid())
    assert sorted(m.metadata.dst_node_id for m in messages) == [2, 4]  # 9 is not connected
    assert all(m.metadata.message_type == msg.TRAIN for m in messages)


def test_weights_of_another_architecture_are_refused(model, tiny_profile):
    other = SubModel(tiny_profile.model.__class__(backbone="resnet18"))
    with pytest.raises(ValueError, match="do not fit|shape"):
        msg.arrays_to_state(msg.state_to_arrays(other.state_dict()), model.state_dict())


def test_only_scalars_may_leave_a_site():
    with pytest.raises(TypeError, match="only scalar"):
        msg.metric_record({"scores": np.arange(5)})


@pytest.mark.parametrize("poison, reason", [
    ("nan", "hold NaN or infinite values"),
    ("inf", "hold NaN or infinite values"),
    ("count", "claims 1e+12 training cases, but declared 10"),
    ("loss", "not finite numbers: loss"),
    ("shape", "have shape"),
])
def test_a_poisoned_reply_is_refused_and_the_round_goes_on(model, poison, reason):
    agg, reports = strategy_for(model, {1: 10, 2: 10})
    honest, bad = site_weights(model, 1), site_weights(model, 2)
    key = next(k for k, v in bad.items() if v.dtype.is_floating_point and v.ndim == 4)
    examples, figures = 10, {}
    if poison in ("nan", "inf"):
        bad[key][0] = float(poison)
    elif poison == "count":
        examples = 10 ** 12
    elif poison == "loss":
        figures = {"loss": float("nan")}
    else:
        bad[key] = bad[key][:1]
    arrays, _ = agg.aggregate_train(1, [reply(1, honest, 10), reply(2, bad, examples, **figures)])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    torch.testing.assert_close(merged[key], honest[key])  # the honest site alone
    assert reason in reports[0].failures[2] and reports[0].failures[2].startswith("reply refused")
    assert set(reports[0].replies) == {1}


def test_a_gpu_site_and_a_cpu_site_train_together(model):
    """Figures only some sites send (peak GPU memory) must not stop Flower's aggregation."""
    agg, reports = strategy_for(model, {1: 10, 2: 30})
    states = [site_weights(model, 1), site_weights(model, 2)]
    arrays, metrics = agg.aggregate_train(1, [reply(1, states[0], 10, peak_gpu_bytes=2.0 ** 30),
                                              reply(2, states[1], 30)])
    assert arrays is not None and set(metrics) == {"loss", "accuracy"}  # Flower drops the weighting key
    assert reports[0].replies[1]["peak_gpu_bytes"] == 2.0 ** 30  # kept for the run records


def test_an_outsized_update_is_clipped_to_a_multiple_of_the_median(model):
    reference = model.state_dict()
    agg, reports = strategy_for(model, {1: 10, 2: 10, 3: 10}, Settings(profile="tiny", clip_factor=2.0))
    states = [site_weights(model, s) for s in (1, 2)]
    huge = {k: (reference[k] + 100 * (v - reference[k]) if v.dtype.is_floating_point else v)
            for k, v in site_weights(model, 3).items()}
    arrays, _ = agg.aggregate_train(1, [reply(1, states[0], 10), reply(2, states[1], 10), reply(3, huge, 10)])
    assert set(reports[0].clipped) == {3} and 0 < reports[0].clipped[3] < 0.05
    msg.arrays_to_state(arrays, reference)  # the clipped update still fits the model (0-d buffers too)


def test_a_site_with_more_cases_may_move_further_without_being_clipped(model):
    """Updates are compared per training case: the big honest site of the default split is not clipped."""
    from server.reply_checks import clip_scales

    assert clip_scales({1: 141.0, 2: 17.8, 3: 19.4}, {1: 355, 2: 71, 3: 68}, 3.0) == {}
    assert set(clip_scales({1: 141.0, 2: 178.0, 3: 19.4}, {1: 355, 2: 71, 3: 68}, 3.0)) == {2}


@pytest.mark.parametrize("strategy", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_aggregators_ignore_one_wild_site(model, strategy):
    reference = model.state_dict()
    agg, _ = strategy_for(model, {1: 10, 2: 10, 3: 10, 4: 10, 5: 10},
                          Settings(profile="tiny", strategy=strategy, clip_factor=0.0, trim_beta=0.2, krum_malicious=1))
    states = [site_weights(model, s) for s in (1, 2, 3, 4)]
    wild = {k: (reference[k] + 1000.0 if v.dtype.is_floating_point else v) for k, v in site_weights(model, 5).items()}
    arrays, _ = agg.aggregate_train(1, [reply(n, s, 10) for n, s in enumerate([*states, wild], start=1)])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    key = next(k for k, v in merged.items() if v.dtype.is_floating_point and v.numel() > 100)
    assert (merged[key] - reference[key]).abs().max() < 10  # the +1000 site did not move it
