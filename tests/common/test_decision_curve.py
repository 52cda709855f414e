"""Decision-curve analysis of sub-model 1 (common/decision_curve.py)."""
from __future__ import annotations

import numpy as np
import pytest

from common import decision_curve as dca


def test_net_benefit_on_a_hand_worked_cohort():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.4, 0.1, 0.05])
    nb = dca.net_benefit(y, p, thresholds=(0.2, 0.5))
    # pt 0.2: biopsy 0.9, 0.3, 0.4 -> TP 2, FP 1: 2/5 - 1/5 * 0.25; pt 0.5: TP 1, FP 0
    assert nb == pytest.approx([0.4 - 0.05, 0.2])
    assert dca.treat_all(0.4, (0.2, 0.5)) == pytest.approx([0.4 - 0.6 * 0.25, 0.4 - 0.6])


def test_a_perfect_model_gains_the_prevalence_and_an_uninformative_one_no_more_than_treat_all():
    y = np.array([1] * 30 + [0] * 70)
    perfect = dca.net_benefit(y, y.astype(float))
    assert perfect == pytest.approx(np.full(len(dca.THRESHOLDS), 0.3))
    flat = dca.net_benefit(y, np.full(100, 0.99))  # calls everyone: exactly treat-all
    assert flat == pytest.approx(dca.treat_all(0.3))


def test_sites_curves_pool_to_the_curve_of_their_joint_cohort():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 2, 150), rng.random(150)
    sites = [dca.curve_figures(y[:50], p[:50]), dca.curve_figures(y[50:], p[50:])]
    nb, prevalence, n = dca.pooled_curve(sites)
    assert n == 150 and prevalence == pytest.approx(y.mean())
    assert nb == pytest.approx(dca.net_benefit(y, p))
    assert set(sites[0]) == set(dca.figure_keys())
    assert dca.site_curve(dca.curve_figures(np.zeros(0, dtype=int), np.zeros(0))) is None
