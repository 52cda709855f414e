"""Federated validation: each site scores the round's global network on its validation cases and
returns score histograms (counts per probability bin, per class); the server adds them up.

Histograms are aggregate counts, never per-case values, yet summed over sites they give the
pooled ROC curve: the pooled AUC of every round, and each sub-model's decision threshold chosen
on validation data (Youden's J) rather than a fixed 0.5.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Probability bins of the histograms: thresholds are chosen on this grid (0.025 apart).
BINS = 40
LOSS_KEY = "val.loss_sum"
COUNT_KEY = "val.n"
CORRECT_KEY = "val.correct"


def hist_key(cls: int, positive: bool, b: int) -> str:
    return f"val.h.{cls}.{'pos' if positive else 'neg'}.{b}"


def scored_classes(n_classes: int) -> list[int]:
    """The classes a network's histograms describe: the positive one of a binary network, else all."""
    return [1] if n_classes == 2 else list(range(n_classes))


def site_figures(targets: np.ndarray, proba: np.ndarray, loss_sum: float) -> dict[str, int | float]:
    """A site's aggregate validation figures for one network (binary: proba is (n, 2)).

    For each class k (one-vs-rest; for a binary network only the positive class), the counts of
    cases of class k and of the other classes in each bin of P(k); plus the summed loss, the
    number of cases and of correct argmax predictions. Every key exists whatever the cohort.
    """
    bins = np.clip((proba * BINS).astype(int), 0, BINS - 1)
    out: dict[str, int | float] = {LOSS_KEY: float(loss_sum), COUNT_KEY: int(len(targets)),
                                   CORRECT_KEY: int((proba.argmax(1) == targets).sum()) if len(targets) else 0}
    for k in scored_classes(proba.shape[1]):
        for positive in (True, False):
            chosen = bins[targets == k, k] if positive else bins[targets != k, k]
            counts = np.bincount(chosen, minlength=BINS)
            out.update({hist_key(k, positive, b): int(counts[b]) for b in range(BINS)})
    return out


def expected_keys(n_classes: int) -> set[str]:
    return {LOSS_KEY, COUNT_KEY, CORRECT_KEY} | {hist_key(k, side, b) for k in scored_classes(n_classes)
                                                  for side in (True, False) for b in range(BINS)}


def reply_problem(figures: Mapping[str, float], n_classes: int) -> str | None:
    """Why a site's validation reply cannot be pooled (None when it can).

    It must hold exactly the expected keys, non-negative whole counts, a finite loss, and
    histograms that each account for every one of its cases: anything else would bend the pooled
    AUC or the gate threshold, so it is left out rather than trusted.
    """
    differ = set(figures) ^ expected_keys(n_classes)
    if differ:
        return f"unexpected figures ({len(differ)} keys differ)"
    values = np.array([float(v) for v in figures.values()])
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        return "negative or non-finite figures"
    counts = np.array([float(v) for k, v in figures.items() if k != LOSS_KEY])
    if np.any(counts != np.round(counts)):
        return "counts that are not whole numbers"
    n = float(figures[COUNT_KEY])
    for k in scored_classes(n_classes):
        if sum(float(figures[hist_key(k, side, b)]) for side in (True, False) for b in range(BINS)) != n:
            return f"class {k}'s histogram does not add up to the {n:.0f} cases reported"
    if float(figures[CORRECT_KEY]) > n:
        return "more correct predictions than cases"
    return None


def pooled(replies: list[Mapping[str, float]]) -> dict[str, float]:
    """Sum the sites' figures (every key is a count or a sum)."""
    total: dict[str, float] = {}
    for reply in replies:
        for key, value in reply.items():
            if key.startswith("val."):
                total[key] = total.get(key, 0.0) + float(value)
    return total


def _histograms(total: Mapping[str, float], cls: int) -> tuple[np.ndarray, np.ndarray]:
    pos = np.array([total.get(hist_key(cls, True, b), 0.0) for b in range(BINS)])
    neg = np.array([total.get(hist_key(cls, False, b), 0.0) for b in range(BINS)])
    return pos, neg


def histogram_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC from binned scores: P(score_pos > score_neg) + half the ties (same bin)."""
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def youden_threshold(pos: np.ndarray, neg: np.ndarray, default: float = 0.5) -> float:
    """The bin edge maximising sensitivity + specificity - 1 (`default` when a class is missing).

    Among equally good edges the one closest to `default` wins, so a perfectly separated
    validation set does not push the gate to an extreme.
    """
    if pos.sum() == 0 or neg.sum() == 0:
        return default
    edges = np.arange(1, BINS) / BINS  # predicting positive when P >= edge
    sens = np.array([pos[e:].sum() for e in range(1, BINS)]) / pos.sum()
    spec = np.array([neg[:e].sum() for e in range(1, BINS)]) / neg.sum()
    j = sens + spec - 1.0
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(edges[best[np.argmin(np.abs(edges[best] - default))]])


def summary(total: Mapping[str, float], n_classes: int) -> dict[str, float]:
    """Pooled validation loss, accuracy and AUC (binary) or macro one-vs-rest AUC (4-class)."""
    n = total.get(COUNT_KEY, 0.0)
    if n == 0:
        return {"n": 0.0}
    aucs = [histogram_auc(*_histograms(total, k)) for k in scored_classes(n_classes)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return {"n": n, "loss": total[LOSS_KEY] / n, "accuracy": total.get(CORRECT_KEY, 0.0) / n,
            "auc": float(np.mean(aucs)) if aucs else float("nan")}


def decision_threshold(total: Mapping[str, float], default: float = 0.5) -> float:
    """Youden's threshold on the pooled validation scores of a binary network's positive class."""
    return youden_threshold(*_histograms(total, 1), default=default)
