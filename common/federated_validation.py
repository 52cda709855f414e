"""Federated validation: each site scores the round's global network on its validation cases and
returns score histograms (counts per probability bin, per class); the server adds them up.

Histograms are aggregate counts, never per-case values, yet summed over sites they give the
pooled ROC curve: the pooled AUC of every round, and the decision thresholds chosen on
validation data rather than a fixed 0.5. Sub-model 1 (the gate) also returns its score
histogram per 4-class label, so the three thresholds can be chosen together for what the
gated answer gets right in every class (`gated_thresholds`), not only level by level. A binary
network's reply also holds its summed NLL at each temperature of a fixed grid, from which the
pooled temperature scaling of that level is chosen (`temperature`, common/calibration.py).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from common import calibration as cal
from common.labels import CLASSES

# Probability bins of the histograms: thresholds are chosen on this grid (0.025 apart).
BINS = 40
LOSS_KEY = "val.loss_sum"
COUNT_KEY = "val.n"
CORRECT_KEY = "val.correct"


def hist_key(cls: int, positive: bool, b: int) -> str:
    return f"val.h.{cls}.{'pos' if positive else 'neg'}.{b}"


def gate_key(label: int, b: int) -> str:
    """Sub-model 1's histogram of P(malignant) over the validation cases of one 4-class label."""
    return f"val.g.{label}.{b}"


N_LABELS = len(CLASSES)
NLL_KEYS = tuple(cal.nll_key(i) for i in range(len(cal.TEMPERATURES)))


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
    if proba.shape[1] == 2:
        out.update(cal.nll_figures(targets, proba))
    return out


def gate_figures(labels: np.ndarray, p_malignant: np.ndarray) -> dict[str, int]:
    """The gate's histograms of P(malignant) per 4-class label (every key, whatever the cohort)."""
    bins = np.clip((p_malignant * BINS).astype(int), 0, BINS - 1)
    out = {}
    for label in range(N_LABELS):
        counts = np.bincount(bins[labels == label], minlength=BINS)
        out.update({gate_key(label, b): int(counts[b]) for b in range(BINS)})
    return out


def expected_keys(n_classes: int, gate: bool = False) -> set[str]:
    keys = {LOSS_KEY, COUNT_KEY, CORRECT_KEY} | {hist_key(k, side, b) for k in scored_classes(n_classes)
                                                  for side in (True, False) for b in range(BINS)}
    if n_classes == 2:
        keys |= set(NLL_KEYS)
    return keys | ({gate_key(label, b) for label in range(N_LABELS) for b in range(BINS)} if gate else set())


def reply_problem(figures: Mapping[str, float], n_classes: int, gate: bool = False) -> str | None:
    """Why a site's validation reply cannot be pooled (None when it can).

    It must hold exactly the expected keys, non-negative whole counts, a finite loss, and
    histograms that each account for every one of its cases: anything else would bend the pooled
    AUC or the gate threshold, so it is left out rather than trusted.
    """
    differ = set(figures) ^ expected_keys(n_classes, gate)
    if differ:
        return f"unexpected figures ({len(differ)} keys differ)"
    values = np.array([float(v) for v in figures.values()])
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        return "negative or non-finite figures"
    counts = np.array([float(v) for k, v in figures.items() if k != LOSS_KEY and k not in NLL_KEYS])
    if np.any(counts != np.round(counts)):
        return "counts that are not whole numbers"
    n = float(figures[COUNT_KEY])
    for k in scored_classes(n_classes):
        if sum(float(figures[hist_key(k, side, b)]) for side in (True, False) for b in range(BINS)) != n:
            return f"class {k}'s histogram does not add up to the {n:.0f} cases reported"
    if gate and sum(float(figures[gate_key(label, b)]) for label in range(N_LABELS) for b in range(BINS)) != n:
        return f"the gate's histograms per label do not add up to the {n:.0f} cases reported"
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
    """Pooled validation loss, accuracy and AUC (binary) or macro one-vs-rest AUC (4-class); for a
    binary network also `loss_calibrated`, the mean NLL at its best temperature."""
    n = total.get(COUNT_KEY, 0.0)
    if n == 0:
        return {"n": 0.0}
    aucs = [histogram_auc(*_histograms(total, k)) for k in scored_classes(n_classes)]
    aucs = [a for a in aucs if not np.isnan(a)]
    out = {"n": n, "loss": total[LOSS_KEY] / n, "accuracy": total.get(CORRECT_KEY, 0.0) / n,
           "auc": float(np.mean(aucs)) if aucs else float("nan")}
    if all(key in total for key in NLL_KEYS):
        out["loss_calibrated"] = min(float(total[key]) for key in NLL_KEYS) / n
    return out


def temperature(total: Mapping[str, float]) -> float | None:
    """The temperature of a binary network with the least pooled validation NLL (None: no cases or
    no NLL figures, e.g. counts recorded before temperature scaling existed)."""
    if total.get(COUNT_KEY, 0.0) <= 0 or not all(key in total for key in NLL_KEYS):
        return None
    return cal.fitted_temperature([float(total[key]) for key in NLL_KEYS])


# The fewest pooled validation cases of every class before the "auto" rule chooses the decision
# thresholds on them. Below it the trained 0.5 stays: the networks learn from class-balanced
# draws, so 0.5 is their balanced-accuracy threshold, and on the default data (5-7 validation
# cases of the rare classes) thresholds chosen on validation named fewer held-out cases right.
MIN_CLASS_CASES = 20


def label_counts(gate: Mapping[str, float]) -> list[int]:
    """Pooled validation cases of each 4-class label, from sub-model 1's per-label histograms."""
    return [int(round(h.sum())) for h in _label_histograms(gate)]


def _label_histograms(gate: Mapping[str, float]) -> list[np.ndarray]:
    """Sub-model 1's P(malignant) histogram of each 4-class label (zeros where keys are missing)."""
    return [np.array([gate.get(gate_key(label, b), 0.0) for b in range(BINS)]) for label in range(N_LABELS)]


def decision_threshold(total: Mapping[str, float], default: float = 0.5) -> float:
    """Youden's threshold on the pooled validation scores of a binary network's positive class."""
    return youden_threshold(*_histograms(total, 1), default=default)


def _share_below(hist: np.ndarray) -> np.ndarray:
    """For each edge k/BINS (k = 1..BINS-1): the share of the histogram's cases scored below it."""
    return np.cumsum(hist)[:-1] / hist.sum()


def gated_thresholds(gate: Mapping[str, float], benign: Mapping[str, float], malignant: Mapping[str, float],
                     default: float = 0.5) -> tuple[float, float, float] | None:
    """The gate's and the two subtype thresholds that maximise the gated answer's balanced accuracy
    (the mean over the classes of the share of each class named correctly) on pooled validation
    histograms; None when the gate's per-label histograms are missing.

    A case is named correctly when the gate sends it to its branch and that branch's sub-model
    names its subtype; the two are taken as independent given the class (the histograms are
    per level, not joint). Youden's J level by level ignores the routing: a gate placed for
    benign-vs-malignant alone can send most of a rare benign class to the malignant branch.
    Classes without validation cases are left out of the mean; among equally good choices the
    one closest to `default` wins.
    """
    labels = _label_histograms(gate)
    if sum(h.sum() for h in labels) == 0:
        return None
    sub2_tb, sub2_reactive = _histograms(benign, 1)
    sub3_met, sub3_lymphoma = _histograms(malignant, 1)
    n_edges = BINS - 1
    # terms[class] = (share routed right for each gate edge, share named right for each subtype edge)
    terms = {0: (labels[0], sub2_reactive, False), 1: (labels[1], sub2_tb, True),
             2: (labels[2], sub3_lymphoma, False), 3: (labels[3], sub3_met, True)}
    branch = {0: np.zeros((n_edges, n_edges)), 1: np.zeros((n_edges, n_edges))}  # [gate edge, subtype edge]
    present = 0
    for cls, (routed, named, positive) in terms.items():
        if routed.sum() == 0 or named.sum() == 0:
            continue
        present += 1
        below_gate = _share_below(routed)
        routed_right = below_gate if cls < 2 else 1.0 - below_gate
        below_sub = _share_below(named)
        named_right = 1.0 - below_sub if positive else below_sub
        branch[0 if cls < 2 else 1] += np.outer(routed_right, named_right)
    if present == 0:
        return None
    edges = np.arange(1, BINS) / BINS
    off = np.abs(edges - default)
    best = []
    for part in (branch[0], branch[1]):  # for each gate edge, the best subtype edge (closest to default)
        top = part.max(axis=1, keepdims=True)
        choice = np.where(np.isclose(part, top), off[None, :], np.inf).argmin(axis=1)
        best.append((part[np.arange(n_edges), choice], choice))
    total = (best[0][0] + best[1][0]) / present
    tied = np.flatnonzero(np.isclose(total, total.max()))
    spread = off[tied] + off[best[0][1][tied]] + off[best[1][1][tied]]
    g = int(tied[np.argmin(spread)])
    return float(edges[g]), float(edges[best[0][1][g]]), float(edges[best[1][1][g]])
