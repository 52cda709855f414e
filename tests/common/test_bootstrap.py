"""The vectorised bootstrap: equal to scikit-learn per resample, seeded, sensible intervals, fast."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.bootstrap import bootstrap_ci, index_weights, resample_indices, weighted_auc, weighted_cohort
from common.metrics import cohort_metrics, flatten, label_metrics

INTERNAL_COUNTS = (50, 7, 15, 99)  # hospital 1's 2021 test cohort, n = 171


def _cohort(counts, seed=0, signal=1.5, decimals=2):
    """Labels and rounded (hence tied) 4-class probabilities that carry some signal."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), counts)
    logits = rng.normal(size=(y.size, 4))
    logits[np.arange(y.size), y] += signal
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, np.round(proba, decimals)


def test_weighted_auc_of_each_resample_equals_sklearn_on_its_indices():
    # Prepare: scores on a coarse grid so that ties are frequent
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    score = np.round(rng.random(60) * 0.5 + 0.3 * y, 1)
    idx = resample_indices(60, 20, rng)
    # Execute
    got = weighted_auc(index_weights(idx, 60), y, score)
    # Assert
    expected = [roc_auc_score(y[i], score[i]) for i in idx]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_every_vectorised_figure_equals_the_point_function_on_the_resample():
    # Prepare
    y, proba = _cohort((12, 6, 6, 16), seed=2, decimals=1)
    idx = resample_indices(y.size, 15, np.random.default_rng(3))
    # Execute
    vec = weighted_cohort(index_weights(idx, y.size), y, proba)
    # Assert
    for b, rows in enumerate(idx):
        for key, value in flatten(cohort_metrics(y[rows], proba[rows])).items():
            np.testing.assert_allclose(vec[key][b], value, rtol=0, atol=1e-12, err_msg=f"{key}, resample {b}")


def test_intervals_contain_the_point_and_shrink_with_the_cohort():
    # Prepare
    large = _cohort((100, 100, 100, 100), seed=4, signal=1.0)
    small = tuple(a[::10] for a in large)  # 10 per class from the same cases
    # Execute
    ci_small = bootstrap_ci("multiclass", *small, n_resamples=300, rng=5)
    ci_large = bootstrap_ci("multiclass", *large, n_resamples=300, rng=5)
    # Assert
    for key in ("auc_micro", "auc_macro", "accuracy", "auc_ovr.lymphoma"):
        assert ci_small[key].contains(ci_small[key].point) and ci_large[key].contains(ci_large[key].point)
        assert ci_large[key].high - ci_large[key].low < 0.6 * (ci_small[key].high - ci_small[key].low), key


def test_same_seed_same_intervals_other_seed_other_intervals():
    # Prepare
    y, proba = _cohort(INTERNAL_COUNTS)
    # Execute
    first = bootstrap_ci("cohort", y, proba, n_resamples=200, rng=np.random.default_rng(7))
    again = bootstrap_ci("cohort", y, proba, n_resamples=200, rng=7)
    other = bootstrap_ci("cohort", y, proba, n_resamples=200, rng=8)
    # Assert
    np.testing.assert_equal(flatten(first), flatten(again))  # NaN-aware equality
    assert first["clahdm.auc_micro"].low != other["clahdm.auc_micro"].low


def test_resamples_with_an_undefined_figure_are_dropped_for_that_figure_only():
    # Prepare: one positive in ten cases; about 0.9**10 = 35% of resamples lack it
    y = np.array([1] + [0] * 9)
    p = np.linspace(0.9, 0.0, 10)
    # Execute
    ci = bootstrap_ci("binary", y, p, n_resamples=1000, rng=0)
    sklearn_ci = bootstrap_ci(roc_auc_score, y, p, n_resamples=1000, rng=0)  # undefined there too
    # Assert
    assert 550 < ci["auc"].n_used < 750
    assert sklearn_ci["value"].n_used == ci["auc"].n_used and sklearn_ci["value"].low == pytest.approx(ci["auc"].low)
    assert ci["accuracy"].n_used == 1000 and ci["specificity"].n_used == 1000


def test_a_callable_metric_gives_the_same_intervals_as_its_vectorised_twin():
    # Prepare
    rng = np.random.default_rng(9)
    y, pred = rng.integers(0, 4, 80), rng.integers(0, 4, 80)
    # Execute
    looped = bootstrap_ci(label_metrics, y, pred, n_resamples=100, rng=11)
    vectorised = bootstrap_ci("labels", y, pred, n_resamples=100, rng=11)
    # Assert
    assert looped.keys() == vectorised.keys()
    for key in looped:
        assert looped[key].low == pytest.approx(vectorised[key].low)
        assert looped[key].high == pytest.approx(vectorised[key].high)


def test_every_figure_of_a_171_case_cohort_gets_an_interval():
    """Its speed is measured by `python -m simulation.benchmark` (no wall-clock assertion here)."""
    y, proba = _cohort(INTERNAL_COUNTS)
    ci = bootstrap_ci("cohort", y, proba, n_resamples=1000, rng=0)
    # 30 sub-model figures + micro, macro, 4 per-class AUCs, accuracy and 16 cells
    assert len(ci) == 53 and all(c.low <= c.point <= c.high for c in ci.values() if c.n_used > 0)


def test_unknown_metric_and_unequal_arrays_are_refused():
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci("kappa", [0, 1], [0.2, 0.8], rng=0)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ci("binary", [0, 1], [0.2, 0.8, 0.5], rng=0)
