"""fp16 transfer: half the bytes each way, the server keeping and averaging fp32 weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from common import messages as msg
from common.model import SubModel
from server.settings import Settings
from server.strategy import make_strategy
from tests.server.test_strategy import Grid


@pytest.fixture
def model(tiny_profile) -> SubModel:
    return SubModel(tiny_profile.model)


def fp16_strategy(model: SubModel, declared: dict[int, int], reports: list):
    agg = make_strategy(Settings(profile="tiny", transfer="fp16", clip_factor=0.0), list(declared), reports.append,
                        declared=declared)
    sent = list(agg.configure_train(1, msg.state_to_arrays(model.state_dict()), ConfigRecord({"phase": "x"}),
                                    Grid(declared)))
    return agg, sent


def site_reply(node: int, arrays, examples: int) -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=msg.TRAIN)
    return Message(msg.train_reply(arrays, {msg.NUM_EXAMPLES: examples, "loss": 1.0, "accuracy": 0.5}),
                   reply_to=request)


def trained_from(received: dict[str, torch.Tensor], seed: int, step: float) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + step * torch.randn(v.shape, generator=gen) if v.dtype.is_floating_point else v + 1
            for k, v in received.items()}


def test_fp16_halves_the_bytes_and_keeps_integer_buffers(model):
    full = msg.state_to_arrays(model.state_dict())
    half = msg.half_arrays(full)
    assert msg.arrays_nbytes(half) <= 0.51 * msg.arrays_nbytes(full)
    for key, value in model.state_dict().items():
        expected = np.float16 if value.dtype.is_floating_point else value.numpy().dtype
        assert half[key].numpy().dtype == expected, key


def test_a_tensor_beyond_fp16s_range_travels_in_fp32():
    arrays = msg.state_to_arrays({"big": torch.tensor([1.0, 7e4]), "small": torch.tensor([1.0, 2.0])})
    half = msg.half_arrays(arrays)
    assert half["big"].numpy().dtype == np.float32 and half["small"].numpy().dtype == np.float16


def test_a_small_update_survives_the_trip():
    """A step far below fp16's spacing at 1.0 (about 1e-3) is kept: the update travels, not the weights."""
    weights = torch.full((1000,), 1.0) + torch.linspace(0, 0.1, 1000)
    received = msg.arrays_to_state(msg.half_arrays(msg.state_to_arrays({"w": weights})), {"w": weights})
    trained = {"w": received["w"] + 1e-5}
    update = msg.update_arrays(trained, received)
    assert update["w"].numpy().dtype == np.float16
    server_view = msg.applied_update(update, msg.state_to_arrays(received))["w"].numpy()
    np.testing.assert_allclose(server_view - received["w"].numpy(), 1e-5, rtol=2e-2)  # fp32's own rounding at 1.1
    as_weights = trained["w"].half().float()  # what sending fp16 weights would have kept of the step
    assert (as_weights - received["w"]).abs().max() == 0


def test_the_round_goes_out_in_fp16_and_is_averaged_in_fp32(model):
    reports: list = []
    agg, sent = fp16_strategy(model, {1: 300, 2: 100}, reports)
    out = sent[0].content[msg.ARRAYS]
    float_keys = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point]
    assert all(out[k].numpy().dtype == np.float16 for k in float_keys)
    received = msg.arrays_to_state(out, model.state_dict())
    states = [trained_from(received, seed, 1e-3) for seed in (1, 2)]
    replies = [site_reply(n, msg.update_arrays(s, received), c) for n, s, c in zip((1, 2), states, (300, 100))]
    arrays, _ = agg.aggregate_train(1, replies)
    merged = msg.arrays_to_state(arrays, model.state_dict())
    original = model.state_dict()
    key = next(k for k in float_keys if original[k].numel() > 100)
    # The server adds the averaged updates to its own fp32 weights, not to their fp16 copy.
    expected = original[key] + (300 * (states[0][key] - received[key]) + 100 * (states[1][key] - received[key])) / 400
    torch.testing.assert_close(merged[key], expected, rtol=0, atol=2e-6)
    report = reports[0]
    assert report.bytes_down == msg.arrays_nbytes(out)
    assert set(report.bytes_up) == {1, 2}
    assert max(report.bytes_up.values()) <= 0.51 * msg.arrays_nbytes(msg.state_to_arrays(original))


def test_an_fp32_reply_to_an_fp16_round_is_refused(model):
    reports: list = []
    agg, sent = fp16_strategy(model, {1: 10, 2: 10}, reports)
    received = msg.arrays_to_state(sent[0].content[msg.ARRAYS], model.state_dict())
    good = site_reply(1, msg.update_arrays(trained_from(received, 1, 1e-3), received), 10)
    wrong = site_reply(2, msg.state_to_arrays(trained_from(received, 2, 1e-3)), 10)  # weights, not an update
    agg.aggregate_train(1, [good, wrong])
    assert "not the fp16 update" in reports[0].failures[2] and set(reports[0].replies) == {1}


def test_an_update_that_overflows_fp16_is_refused(model):
    reports: list = []
    agg, sent = fp16_strategy(model, {1: 10, 2: 10}, reports)
    received = msg.arrays_to_state(sent[0].content[msg.ARRAYS], model.state_dict())
    good = site_reply(1, msg.update_arrays(trained_from(received, 1, 1e-3), received), 10)
    wild = site_reply(2, msg.update_arrays(trained_from(received, 2, 1e6), received), 10)
    agg.aggregate_train(1, [good, wild])
    assert "NaN or infinite" in reports[0].failures[2]


def test_validation_rounds_go_out_in_fp16_too(model):
    agg = make_strategy(Settings(profile="tiny", transfer="fp16"), [1], lambda r: None, validators=[1],
                        on_validation=lambda *a: None, declared={1: 10})
    messages = list(agg.configure_evaluate(1, msg.state_to_arrays(model.state_dict()), ConfigRecord({}), Grid([1])))
    arrays = messages[0].content[msg.ARRAYS]
    assert all(arrays[k].numpy().dtype == np.float16 for k, v in model.state_dict().items() if v.dtype.is_floating_point)


def test_an_unknown_transfer_is_refused_by_name(tiny_profile):
    config = msg.PhaseInstruction("gate", msg.profile_to_json(tiny_profile), rounds=2).config()
    config["transfer"] = "int8"
    config[msg.SERVER_ROUND] = 1
    from common.errors import ProtocolError
    with pytest.raises(ProtocolError, match="'transfer' must be one of fp32, fp16"):
        msg.PhaseInstruction.from_config(config)


def test_the_next_round_goes_out_in_the_models_dtypes(model):
    """Flower's average makes integer buffers float64: round 2 must still send them as integers
    and accept the sites' integer buffers."""
    reports: list = []
    agg, sent = fp16_strategy(model, {1: 10, 2: 10}, reports)
    received = msg.arrays_to_state(sent[0].content[msg.ARRAYS], model.state_dict())
    replies = [site_reply(n, msg.update_arrays(trained_from(received, n, 1e-3), received), 10) for n in (1, 2)]
    arrays, _ = agg.aggregate_train(1, replies)
    ints = [k for k, v in model.state_dict().items() if not v.dtype.is_floating_point]
    assert ints and all(arrays[k].numpy().dtype == np.int64 for k in ints)
    second = list(agg.configure_train(2, arrays, ConfigRecord({"phase": "x"}), Grid([1, 2])))
    received = msg.arrays_to_state(second[0].content[msg.ARRAYS], model.state_dict())
    replies = [site_reply(n, msg.update_arrays(trained_from(received, n, 1e-3), received), 10) for n in (1, 2)]
    agg.aggregate_train(2, replies)
    assert reports[1].failures == {} and set(reports[1].replies) == {1, 2}
