"""Differential privacy of the published weights: clipping, noise scale, and the accountant."""
from __future__ import annotations

import math

import pytest
import torch

from common import messages as msg
from common.config import ConfigError
from server.privacy import GaussianDP, epsilon
from server.settings import Settings
from tests.server.test_strategy import reply, site_weights, strategy_for


def test_an_update_is_clipped_to_the_clip_norm(model):
    from server.reply_checks import update_norm

    sent = msg.state_to_arrays(model.state_dict())
    moved = msg.state_to_arrays(site_weights(model, 1))
    dp = GaussianDP(noise_multiplier=1.0, clip_norm=0.5)
    assert update_norm(moved, sent) > 0.5
    assert update_norm(dp.clip(moved, sent), sent) == pytest.approx(0.5, rel=1e-4)
    small = GaussianDP(1.0, clip_norm=1e6)
    assert small.clip(moved, sent) is moved


def test_the_noise_has_the_std_of_the_largest_site_weight(model):
    agg, reports = strategy_for(model, {1: 30, 2: 10}, Settings(profile="tiny", dp_noise=2.0, dp_clip=0.01,
                                                                clip_factor=0.0))
    state = {k: v.clone() for k, v in model.state_dict().items()}  # both sites send the weights back unchanged
    arrays, _ = agg.aggregate_train(1, [reply(1, state, 30), reply(2, state, 10)])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    noise = torch.cat([(merged[k] - state[k]).flatten() for k in state if state[k].dtype.is_floating_point])
    expected = 2.0 * 0.01 * 0.75  # noise multiplier x clip norm x the larger weight (30 of 40 cases)
    assert reports[0].dp_noise_std == pytest.approx(expected)
    assert float(noise.std()) == pytest.approx(expected, rel=0.05) and abs(float(noise.mean())) < expected / 10
    ints = [k for k, v in state.items() if not v.dtype.is_floating_point]
    assert all(torch.equal(merged[k], state[k]) for k in ints)  # counters are never noised


def test_noise_never_makes_a_variance_negative(model):
    agg, _ = strategy_for(model, {1: 10}, Settings(profile="tiny", dp_noise=100.0, dp_clip=1.0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    arrays, _ = agg.aggregate_train(1, [reply(1, state, 10)])
    merged = msg.arrays_to_state(arrays, model.state_dict())
    variances = [v for k, v in merged.items() if k.endswith("running_var")]
    assert variances and all(float(v.min()) > 0 for v in variances)


def test_the_accountant_grows_with_rounds_and_shrinks_with_noise():
    assert epsilon(1.0, 0) == 0.0 and math.isinf(epsilon(0.0, 5))
    assert epsilon(1.0, 20) > epsilon(1.0, 5) > 0
    assert epsilon(2.0, 20) < epsilon(1.0, 20)
    # One release of sigma = 1 at delta = 1e-5: the RDP bound is about 5.3 (Mironov 2017 conversion).
    assert epsilon(1.0, 1) == pytest.approx(5.3, abs=0.3)


def test_dp_needs_a_weighted_mean_strategy():
    with pytest.raises(ConfigError, match="fedavg or fedprox"):
        Settings(profile="tiny", strategy="krum", dp_noise=1.0)


@pytest.fixture
def model(tiny_profile):
    from common.model import SubModel

    return SubModel(tiny_profile.model)
