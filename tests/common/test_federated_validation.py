"""Federated validation from aggregate score histograms: pooled AUC, loss and the gate threshold."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common import federated_validation as fv


def binary(p: np.ndarray) -> np.ndarray:
    return np.stack([1 - p, p], 1)


def test_pooled_histograms_give_the_pooled_auc_of_the_binned_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    sites = [fv.site_figures(y[i::3], binary(p[i::3]), 0.0) for i in range(3)]  # three sites' shares
    total = fv.pooled(sites)
    binned = np.clip((p * fv.BINS).astype(int), 0, fv.BINS - 1)
    assert fv.summary(total, 2)["auc"] == pytest.approx(roc_auc_score(y, binned))
    assert total[fv.COUNT_KEY] == 300


def test_four_class_summary_is_the_macro_one_vs_rest_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    summary = fv.summary(fv.site_figures(y, proba, loss_sum=100.0), 4)
    binned = np.clip((proba * fv.BINS).astype(int), 0, fv.BINS - 1)
    expected = np.mean([roc_auc_score(y == k, binned[:, k]) for k in range(4)])
    assert summary["auc"] == pytest.approx(expected)
    assert summary["loss"] == pytest.approx(0.5) and summary["accuracy"] == pytest.approx((proba.argmax(1) == y).mean())


def test_youden_moves_the_gate_to_where_the_classes_separate():
    y = np.array([1] * 10 + [0] * 10)
    p = np.array([0.35] * 10 + [0.1] * 10)  # a network that under-calls the positive class
    threshold = fv.decision_threshold(fv.site_figures(y, binary(p), 0.0))
    assert 0.1 < threshold <= 0.35


def test_the_gate_keeps_its_default_without_both_classes():
    y = np.ones(5, dtype=int)
    assert fv.decision_threshold(fv.site_figures(y, binary(np.full(5, 0.9)), 0.0), default=0.5) == 0.5


def test_the_keys_do_not_depend_on_the_cohort():
    small = fv.site_figures(np.array([0]), binary(np.array([0.2])), 0.1)
    large = fv.site_figures(np.arange(50) % 2, binary(np.linspace(0, 1, 50)), 3.0)
    empty = fv.site_figures(np.zeros(0, dtype=int), np.zeros((0, 2)), 0.0)
    assert set(small) == set(large) == set(empty)
    assert all(isinstance(v, int) for k, v in large.items() if k != fv.LOSS_KEY)


@pytest.mark.parametrize("tamper, reason", [
    (lambda f: f.update({fv.COUNT_KEY: 10 ** 12}), "does not add up"),
    (lambda f: f.update({fv.hist_key(1, True, 3): float("nan")}), "non-finite"),
    (lambda f: f.update({fv.hist_key(1, False, 0): -4}), "negative"),
    (lambda f: f.update({"val.extra": 1}), "unexpected figures"),
    (lambda f: f.update({fv.hist_key(1, True, 39): 0.5, fv.hist_key(1, True, 38): 1.5}), "whole numbers"),
    (lambda f: f.update({fv.CORRECT_KEY: 99}), "more correct"),
])
def test_replies_that_do_not_add_up_are_named(tamper, reason):
    figures = fv.site_figures(np.array([0, 1, 1]), binary(np.array([0.2, 0.6, 0.9])), 1.0)
    assert fv.reply_problem(figures, 2) is None
    tamper(figures)
    assert reason in fv.reply_problem(figures, 2)
