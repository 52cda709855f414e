"""Point estimates of the paper's figures: binary sub-model metrics, 4-class CLA-HDM metrics, ROC curves.

Every figure is a plain float; a figure that is undefined on the given cases (a division by zero,
an AUC with one class present) is NaN rather than an exception, so a small or one-sided cohort
still yields a complete, JSON-serialisable record.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from common.labels import CLASS_INDEX, CLASSES, LEVELS, MALIGNANT

BINARY_FIGURES: tuple[str, ...] = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv",
                                   "f1", "mcc", "lr_pos", "lr_neg")
MALIGNANT_INDICES: tuple[int, ...] = tuple(sorted(CLASS_INDEX[c] for c in MALIGNANT))


@dataclass(frozen=True)
class CI:
    """A bootstrap interval: the full-sample point estimate, percentile bounds, resamples used."""

    point: float
    low: float
    high: float
    n_used: int

    def contains(self, value: float) -> bool:
        """Whether `value` lies within [low, high] (False when the bounds are NaN)."""
        return bool(self.low <= value <= self.high)


def safe_div(num: Any, den: Any) -> Any:
    """num / den elementwise, NaN where den is 0 (works on floats and arrays alike)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out if out.ndim else float(out)


def counts_figures(tp: Any, fp: Any, tn: Any, fn: Any) -> dict[str, Any]:
    """Confusion-count figures (all of BINARY_FIGURES but auc); scalars or arrays of counts."""
    tp, fp, tn, fn = (np.asarray(v, dtype=float) for v in (tp, fp, tn, fn))
    sens, spec = safe_div(tp, tp + fn), safe_div(tn, tn + fp)
    # MCC: sklearn returns 0 when a margin is empty; we report NaN, like every other division by zero.
    mcc_den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "accuracy": safe_div(tp + tn, tp + fp + tn + fn),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": safe_div(tp, tp + fp),
        "npv": safe_div(tn, tn + fn),
        "f1": safe_div(2 * tp, 2 * tp + fp + fn),
        "mcc": safe_div(tp * tn - fp * fn, mcc_den),
        # A perfect specificity makes LR+ a division by zero: NaN (not inf) by the same rule.
        "lr_pos": safe_div(sens, 1.0 - np.asarray(spec)),
        "lr_neg": safe_div(1.0 - np.asarray(sens), spec),
    }


def auc_or_nan(y_true: np.ndarray, score: np.ndarray) -> float:
    """sklearn's ROC AUC, or NaN when only one class is present."""
    if len(np.unique(y_true)) < 2:
        return math.nan
    return float(skm.roc_auc_score(y_true, score))


def _check_binary(y_true: Any, p_pos: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_pos, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but p_pos has {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if np.isnan(p).any():
        raise ValueError("p_pos holds NaN")
    return y, p


def binary_metrics(y_true: Any, p_pos: Any, threshold: float = 0.5) -> dict[str, float]:
    """The ten binary figures of one sub-model (index 1 of its level's names is the positive class).

    Args:
        y_true: (n,) 0/1 targets.
        p_pos: (n,) predicted probability of the positive class.
        threshold: a case is called positive when p_pos > threshold (the CLA-HDM gate's rule).

    Returns:
        {figure: float} for BINARY_FIGURES; NaN where a figure is undefined on these cases.
    """
    y, p = _check_binary(y_true, p_pos)
    pred = (p > threshold).astype(int)
    out = {"auc": auc_or_nan(y, p)}
    if y.size == 0:
        return out | {k: math.nan for k in BINARY_FIGURES if k != "auc"}
    # sklearn's own accuracy / recall / precision / F1, with NaN for its zero-division cases.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        for name, fn, label in (("sensitivity", skm.recall_score, 1), ("specificity", skm.recall_score, 0),
                                ("ppv", skm.precision_score, 1), ("npv", skm.precision_score, 0),
                                ("f1", skm.f1_score, 1)):
            out[name] = float(fn(y, pred, pos_label=label, labels=[0, 1], zero_division=np.nan))
    (tn, fp), (fn_, tp) = skm.confusion_matrix(y, pred, labels=[0, 1])
    derived = counts_figures(tp, fp, tn, fn_)
    out["mcc"] = derived["mcc"] if math.isnan(derived["mcc"]) else float(skm.matthews_corrcoef(y, pred))
    out["lr_pos"], out["lr_neg"] = derived["lr_pos"], derived["lr_neg"]
    return {k: float(out[k]) for k in BINARY_FIGURES}


def _check_multiclass(y_true_idx: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true_idx).astype(int).ravel()
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape != (y.size, len(CLASSES)):
        raise ValueError(f"proba must have shape ({y.size}, {len(CLASSES)}), got {p.shape}")
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise ValueError(f"y_true_idx must be class indices 0..{len(CLASSES) - 1} (unlabeled cases removed)")
    if np.isnan(p).any():
        raise ValueError("proba holds NaN")
    return y, p


def multiclass_metrics(y_true_idx: Any, proba: Any) -> dict[str, Any]:
    """The 4-class CLA-HDM figures.

    Args:
        y_true_idx: (n,) class indices in CLASSES order.
        proba: (n, 4) probabilities in CLASSES order.

    Returns:
        {"auc_micro", "auc_macro", "accuracy": float, "auc_ovr": {class name: float},
        "cm": 4x4 list of counts (rows true, columns predicted = argmax)}. The macro AUC is NaN
        when any class is absent (as sklearn refuses it); the micro AUC is always defined.
    """
    y, p = _check_multiclass(y_true_idx, proba)
    onehot = np.eye(len(CLASSES), dtype=int)[y]
    ovr = {name: auc_or_nan(onehot[:, k], p[:, k]) for k, name in enumerate(CLASSES)}
    micro = auc_or_nan(onehot.ravel(), p.ravel())
    pred = p.argmax(axis=1)
    cm = skm.confusion_matrix(y, pred, labels=list(range(len(CLASSES)))) if y.size else \
        np.zeros((len(CLASSES),) * 2, dtype=int)
    return {
        "auc_micro": micro,
        "auc_macro": float(np.mean(list(ovr.values()))),  # NaN propagates: undefined if a class is absent
        "auc_ovr": ovr,
        "accuracy": float(skm.accuracy_score(y, pred)) if y.size else math.nan,
        "cm": cm.astype(int).tolist(),
    }


def label_metrics(y_true_idx: Any, pred_idx: Any) -> dict[str, float]:
    """4-class accuracy and benign-vs-malignant sensitivity / specificity of hard calls (reader or model)."""
    y = np.asarray(y_true_idx).astype(int).ravel()
    pred = np.asarray(pred_idx).astype(int).ravel()
    if y.shape != pred.shape:
        raise ValueError(f"y_true_idx has {y.size} values but pred_idx has {pred.size}")
    y_mal, pred_mal = np.isin(y, MALIGNANT_INDICES), np.isin(pred, MALIGNANT_INDICES)
    tp, fn = np.sum(y_mal & pred_mal), np.sum(y_mal & ~pred_mal)
    tn, fp = np.sum(~y_mal & ~pred_mal), np.sum(~y_mal & pred_mal)
    return {"accuracy": float(skm.accuracy_score(y, pred)) if y.size else math.nan,
            "sensitivity": safe_div(tp, tp + fn), "specificity": safe_div(tn, tn + fp)}


def level_probabilities(proba: Any) -> np.ndarray:
    """Each level's P(positive) recovered from soft 4-class probabilities, shape (n, 3).

    Inverts the soft assembly; a level whose two classes both have probability 0 gets 0.5
    (no information) rather than NaN, so its AUC stays computable.
    """
    p = np.asarray(proba, dtype=float)
    p1 = p[:, 2] + p[:, 3]
    p2 = np.nan_to_num(safe_div(p[:, 1], p[:, 0] + p[:, 1]), nan=0.5)
    p3 = np.nan_to_num(safe_div(p[:, 3], p[:, 2] + p[:, 3]), nan=0.5)
    return np.stack([p1, p2, p3], axis=1)


def level_subsets(y_true_idx: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each level: (indices of the cases it is evaluated on, their 0/1 targets)."""
    out = []
    for level in LEVELS:
        members = np.isin(y_true_idx, [CLASS_INDEX[c] for c in level.labels])
        rows = np.flatnonzero(members)
        targets = np.array([level.target(CLASSES[i]) for i in y_true_idx[rows]], dtype=int)
        out.append((rows, targets))
    return out


def level_threshold(threshold: float | tuple[float, ...], k: int) -> float:
    """Level k's decision threshold: one value for every level, or one per level."""
    return float(threshold[k]) if isinstance(threshold, (tuple, list)) else float(threshold)


def cohort_metrics(y_true_idx: Any, proba: Any, levels: Any = None,
                   threshold: float | tuple[float, ...] = 0.5) -> dict[str, Any]:
    """Every figure of a cohort: the three sub-models (on their own cases) and the 4-class model.

    Args:
        y_true_idx: (n,) class indices in CLASSES order.
        proba: (n, 4) CLA-HDM probabilities.
        levels: (n, 3) each sub-model's P(positive) on every case; derived from proba when None.
        threshold: the sub-models' decision threshold, or one per level (the model's
            decision_thresholds).

    Returns:
        {"submodel1": binary figures, "submodel2": ..., "submodel3": ..., "clahdm": 4-class figures}.
    """
    y, p = _check_multiclass(y_true_idx, proba)
    lv = level_probabilities(p) if levels is None else np.asarray(levels, dtype=float)
    if lv.shape != (y.size, len(LEVELS)):
        raise ValueError(f"levels must have shape ({y.size}, {len(LEVELS)}), got {lv.shape}")
    out: dict[str, Any] = {}
    for k, (level, (rows, targets)) in enumerate(zip(LEVELS, level_subsets(y))):
        out[level.key] = binary_metrics(targets, lv[rows, k], level_threshold(threshold, k))
    out["clahdm"] = multiclass_metrics(y, p)
    return out


def binary_roc(y_true: Any, p_pos: Any) -> dict[str, np.ndarray]:
    """ROC curve arrays {"fpr", "tpr", "thresholds"} of one binary task (empty if one class only)."""
    y, p = _check_binary(y_true, p_pos)
    if len(np.unique(y)) < 2:
        return {"fpr": np.array([]), "tpr": np.array([]), "thresholds": np.array([])}
    fpr, tpr, thresholds = skm.roc_curve(y, p)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}


def micro_roc(y_true_idx: Any, proba: Any) -> dict[str, np.ndarray]:
    """Micro-averaged 4-class ROC curve (every case x class pair pooled), as for the paper's figure."""
    y, p = _check_multiclass(y_true_idx, proba)
    return binary_roc(np.eye(len(CLASSES), dtype=int)[y].ravel(), p.ravel())


def per_class_roc(y_true_idx: Any, proba: Any) -> dict[str, dict[str, np.ndarray]]:
    """One-vs-rest ROC curve arrays for each class, keyed by class name."""
    y, p = _check_multiclass(y_true_idx, proba)
    return {name: binary_roc((y == k).astype(int), p[:, k]) for k, name in enumerate(CLASSES)}


def flatten(results: Any, prefix: str = "") -> dict[str, float]:
    """Flat `str -> float` map of nested results (dicts, lists, arrays, CI), keys joined by dots.

    A CI under key `k` gives `k` (the point), `k.low`, `k.high` and `k.n` (resamples used);
    a 4x4 matrix under `cm` gives `cm.<row>.<col>`.
    """
    if isinstance(results, CI):
        return {prefix: float(results.point), f"{prefix}.low": float(results.low),
                f"{prefix}.high": float(results.high), f"{prefix}.n": float(results.n_used)}
    if isinstance(results, dict):
        items = ((str(k), v) for k, v in results.items())
    elif isinstance(results, (list, tuple, np.ndarray)):
        items = ((str(i), v) for i, v in enumerate(results))
    else:
        return {prefix: float(results)}
    out: dict[str, float] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return out
