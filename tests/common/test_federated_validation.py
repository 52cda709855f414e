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
    # Counts are whole numbers; the loss and the NLL per temperature are sums.
    assert all(isinstance(v, int) for k, v in large.items() if k != fv.LOSS_KEY and k not in fv.NLL_KEYS)


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


def gated_recall(y, p1, p2, p3, t):
    """Per-class recall of the gated answer with thresholds t, computed per case."""
    malignant = p1 >= t[0]
    pred = np.where(malignant, np.where(p3 >= t[2], 3, 2), np.where(p2 >= t[1], 1, 0))
    return np.array([(pred[y == k] == k).mean() for k in range(4)])


def level_totals(y, p1, p2, p3):
    """Pooled validation counts of the three levels as sites send them (the gate per label too)."""
    benign, malignant = y < 2, y >= 2
    gate = fv.site_figures((y >= 2).astype(int), binary(p1), 0.0) | fv.gate_figures(y, p1)
    return (gate, fv.site_figures((y[benign] == 1).astype(int), binary(p2[benign]), 0.0),
            fv.site_figures((y[malignant] == 3).astype(int), binary(p3[malignant]), 0.0))


def test_thresholds_chosen_together_rescue_a_rare_benign_class_the_gate_alone_loses():
    """Tuberculous nodes score like the many metastases at the gate: Youden's gate for
    benign-vs-malignant sends them to the malignant branch; chosen for the gated answer, the gate
    keeps most of them at the cost of some metastases."""
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2, 3], [60, 12, 10, 120])
    centre, spread = np.array([0.1, 0.6, 0.9, 0.65])[y], np.array([0.05, 0.05, 0.05, 0.08])[y]
    p1 = np.clip(rng.normal(centre, spread), 0, 0.999)
    p2 = np.clip(rng.normal(np.where(y == 1, 0.7, 0.3), 0.1), 0, 0.999)
    p3 = np.clip(rng.normal(np.where(y == 3, 0.7, 0.3), 0.1), 0, 0.999)
    gate, benign, malignant = level_totals(y, p1, p2, p3)
    youden = (fv.decision_threshold(gate), fv.decision_threshold(benign), fv.decision_threshold(malignant))
    joint = fv.gated_thresholds(gate, benign, malignant)
    assert gated_recall(y, p1, p2, p3, youden)[1] <= 0.3
    recall = gated_recall(y, p1, p2, p3, joint)
    assert recall[1] >= 0.8 and recall.min() >= 0.4 and recall.mean() > gated_recall(y, p1, p2, p3, youden).mean()
    # The per-label histograms are aggregate: they add up to the gate's case count, keys fixed.
    assert fv.reply_problem(gate, 2, gate=True) is None
    assert set(fv.gate_figures(np.zeros(0, dtype=int), np.zeros(0))) == {k for k in gate if k.startswith("val.g.")}


def test_without_the_gates_label_histograms_the_joint_choice_is_not_made():
    y = np.array([0, 1, 2, 3] * 5)
    p = np.linspace(0.05, 0.95, 20)
    gate, benign, malignant = level_totals(y, p, p, p)
    plain = {k: v for k, v in gate.items() if not k.startswith("val.g.")}
    assert fv.gated_thresholds(plain, benign, malignant) is None
    assert fv.gated_thresholds(gate, benign, malignant) is not None


def test_a_gate_reply_whose_label_histograms_do_not_add_up_is_named():
    figures = fv.site_figures(np.array([0, 1, 1]), binary(np.array([0.2, 0.6, 0.9])), 1.0)
    assert "unexpected figures" in fv.reply_problem(figures, 2, gate=True)  # the per-label histograms missing
    figures |= fv.gate_figures(np.array([0, 2, 3]), np.array([0.2, 0.6, 0.9]))
    assert fv.reply_problem(figures, 2, gate=True) is None
    figures[fv.gate_key(1, 5)] += 1
    assert "do not add up" in fv.reply_problem(figures, 2, gate=True)
