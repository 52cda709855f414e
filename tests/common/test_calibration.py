"""Calibration figures and federated temperature scaling (common/calibration.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common import calibration as cal
from common import federated_validation as fv
from common.model import CLAHDM


def two_class(p_positive: np.ndarray) -> np.ndarray:
    return np.stack([1 - p_positive, p_positive], axis=1)


def overconfident(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets drawn from sigmoid(z) and a network that outputs sigmoid(temperature * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, two_class(1 / (1 + np.exp(-temperature * z)))


def test_pooled_nll_over_sites_recovers_the_temperature_that_undoes_overconfidence():
    # Three sites, each only sending its NLL at every grid temperature: the pooled minimum is ~2.
    replies = [fv.site_figures(*overconfident(400, 2.0, seed), loss_sum=0.0) for seed in range(3)]
    fitted = fv.temperature(fv.pooled(replies))
    assert fitted == pytest.approx(2.0, rel=0.15)
    y, proba = overconfident(1200, 1.0, 7)  # already calibrated: T stays near 1
    assert fv.temperature(fv.site_figures(y, proba, 0.0)) == pytest.approx(1.0, rel=0.15)
    assert fv.temperature(fv.site_figures(np.zeros(0, dtype=int), np.zeros((0, 2)), 0.0)) is None


def test_temperature_scaling_improves_held_out_calibration_and_keeps_every_call():
    y, proba = overconfident(3000, 2.5, 3)
    temperature = fv.temperature(fv.site_figures(*overconfident(1500, 2.5, 4), 0.0))
    before = cal.binary_calibration(y, proba[:, 1], "m")["m.ece"]
    scaled = cal.scaled(proba[:, 1], temperature)
    after = cal.binary_calibration(y, scaled, "m")["m.ece"]
    assert after < 0.5 * before
    for threshold in (0.2, 0.5, 0.73):
        assert np.array_equal(proba[:, 1] > threshold, scaled > cal.threshold_at(threshold, temperature))


def test_ece_and_reliability_bins_on_known_values():
    figures = cal.binary_calibration(np.array([1, 1, 1, 0]), np.array([0.95, 0.95, 0.95, 0.95]), "x")
    assert figures["x.ece"] == pytest.approx(0.2)  # predicted 0.95, observed 0.75
    assert figures["x.bin.9.n"] == 4 and figures["x.bin.9.observed"] == pytest.approx(0.75)
    assert figures["x.bin.0.n"] == 0 and np.isnan(figures["x.bin.0.mean"])
    top = cal.top_label_calibration(np.array([0, 1]), np.array([[0.7, 0.3], [0.6, 0.4]]), "t")
    assert top["t.ece"] == pytest.approx(0.5 * (0.3 + 0.6))  # bin 6: mean 0.65, one of two right


def test_small_bins_are_blanked_and_pooled_bins_match_the_joint_cohort():
    rng = np.random.default_rng(0)
    p, y = rng.random(200), rng.integers(0, 2, 200)
    sites = [cal.binary_calibration(y[:120], p[:120], "m"), cal.binary_calibration(y[120:], p[120:], "m")]
    joint = cal.binary_calibration(y, p, "m")
    count, mean, observed = cal.pooled_bins(sites, "m")
    assert cal.ece(count, mean, observed) == pytest.approx(joint["m.ece"])
    blanked = cal.suppress_small_bins(cal.binary_calibration(np.array([1, 0, 0]), np.array([0.05, 0.9, 0.91]), "m"), 3)
    assert blanked["m.bin.0.n"] == 0 and np.isnan(blanked["m.bin.0.observed"])  # one case: hidden
    assert blanked["m.bin.9.n"] == 0  # two cases, min_cell 3: hidden too
    assert blanked["m.ece"] == pytest.approx(cal.binary_calibration(np.array([1, 0, 0]),
                                                                    np.array([0.05, 0.9, 0.91]), "m")["m.ece"])


def test_the_models_temperatures_divide_each_levels_logits(tiny_profile):
    torch.manual_seed(0)
    model = CLAHDM(tiny_profile.model).eval()
    bus, cdfi = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        before = model(bus, cdfi).levels.numpy()
        model.temperatures = (2.0, 0.5, 1.0)
        after = model(bus, cdfi).levels.numpy()
    np.testing.assert_allclose(after[:, 0], cal.scaled(before[:, 0], 2.0), rtol=1e-4)
    np.testing.assert_allclose(after[:, 1], cal.scaled(before[:, 1], 0.5), rtol=1e-4)
    np.testing.assert_allclose(after[:, 2], before[:, 2], rtol=1e-6)
