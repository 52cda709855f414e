"""Vectorised, seeded percentile bootstrap of every figure in `common.metrics`.

All resamples are drawn at once as a (B, n) index matrix and turned into per-case multiplicities
W (B, n) with one bincount. Every figure is then a weighted statistic of the *original* cases:
confusion counts are W @ indicator, and an AUC is the Mann-Whitney U with multiplicities, computed
from one sort of the scores shared by all resamples. No Python loop runs per resample.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from common import metrics as m
from common.labels import CLASSES, LEVELS

ArrayDict = dict[str, np.ndarray]


def resample_indices(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) case indices drawn with replacement."""
    return rng.integers(0, n, size=(n_resamples, n)) if n else np.zeros((n_resamples, 0), dtype=int)


def index_weights(idx: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of each case in each resample, (B, n) float, via one bincount."""
    b = idx.shape[0]
    offsets = (idx + n * np.arange(b)[:, None]).ravel()
    return np.bincount(offsets, minlength=b * n).reshape(b, n).astype(float)


def weighted_auc(weights: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC AUC of each weighted resample, (B,); NaN where one class has zero weight.

    AUC = U / (P * N) with U = sum over positives of (negatives scored lower + half the tied
    negatives), which is exactly the trapezoidal AUC sklearn reports, ties included.
    """
    y, score = np.asarray(y).ravel(), np.asarray(score, dtype=float).ravel()
    if y.size == 0:
        return np.full(weights.shape[0], np.nan)
    order = np.argsort(score, kind="stable")
    s, pos = score[order], y[order] == 1
    w = weights[:, order]
    # Equal scores form one group: within a group a negative counts half for every positive.
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    neg_g = np.add.reduceat(w * ~pos, starts, axis=1)
    pos_g = np.add.reduceat(w * pos, starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    u = np.sum(pos_g * (below + 0.5 * neg_g), axis=1)
    return m.safe_div(u, pos_g.sum(axis=1) * neg_g.sum(axis=1))


def weighted_binary(weights: np.ndarray, y: np.ndarray, p_pos: np.ndarray, threshold: float = 0.5) -> ArrayDict:
    """Every binary figure of each resample, {figure: (B,)}, matching `metrics.binary_metrics`."""
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p_pos, dtype=float).ravel()
    truth, called = y == 1, p > threshold
    tp, fn = weights @ (truth & called), weights @ (truth & ~called)
    tn, fp = weights @ (~truth & ~called), weights @ (~truth & called)
    return {"auc": weighted_auc(weights, y, p)} | m.counts_figures(tp, fp, tn, fn)


def weighted_multiclass(weights: np.ndarray, y: np.ndarray, proba: np.ndarray) -> ArrayDict:
    """Every 4-class figure of each resample, flat keys as `metrics.flatten(multiclass_metrics(...))`."""
    k = len(CLASSES)
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(proba, dtype=float)
    onehot = np.eye(k, dtype=int)[y]
    out: ArrayDict = {"auc_micro": weighted_auc(np.repeat(weights, k, axis=1), onehot.ravel(), p.ravel())}
    ovr = [weighted_auc(weights, onehot[:, c], p[:, c]) for c in range(k)]
    out["auc_macro"] = np.mean(ovr, axis=0)  # NaN when any class is absent from the resample
    out.update({f"auc_ovr.{name}": auc for name, auc in zip(CLASSES, ovr)})
    # Each case adds its multiplicity to one (true, predicted) cell: cm = W @ one-hot(cell).
    cells = np.eye(k * k)[y * k + p.argmax(axis=1)] if y.size else np.zeros((0, k * k))
    cm = weights @ cells
    out["accuracy"] = m.safe_div(cm[:, :: k + 1].sum(axis=1), weights.sum(axis=1))
    out.update({f"cm.{i // k}.{i % k}": cm[:, i] for i in range(k * k)})
    return out


def weighted_cohort(weights: np.ndarray, y: np.ndarray, proba: np.ndarray, levels: np.ndarray | None = None,
                    threshold: float | tuple[float, ...] = 0.5) -> ArrayDict:
    """Every figure of `metrics.cohort_metrics` for each resample, flat keys."""
    y = np.asarray(y).astype(int).ravel()
    lv = m.level_probabilities(proba) if levels is None else np.asarray(levels, dtype=float)
    out: ArrayDict = {}
    for k, (level, (rows, targets)) in enumerate(zip(LEVELS, m.level_subsets(y))):
        figures = weighted_binary(weights[:, rows], targets, lv[rows, k], m.level_threshold(threshold, k))
        out.update({f"{level.key}.{name}": v for name, v in figures.items()})
    out.update({f"clahdm.{name}": v for name, v in weighted_multiclass(weights, y, proba).items()})
    return out


def weighted_labels(weights: np.ndarray, y: np.ndarray, pred: np.ndarray) -> ArrayDict:
    """`metrics.label_metrics` (4-class accuracy, benign/malignant sens/spec) for each resample."""
    y, pred = np.asarray(y).astype(int).ravel(), np.asarray(pred).astype(int).ravel()
    y_mal, p_mal = np.isin(y, m.MALIGNANT_INDICES), np.isin(pred, m.MALIGNANT_INDICES)
    tp, fn = weights @ (y_mal & p_mal), weights @ (y_mal & ~p_mal)
    tn, fp = weights @ (~y_mal & ~p_mal), weights @ (~y_mal & p_mal)
    return {"accuracy": m.safe_div(weights @ (y == pred), weights.sum(axis=1)),
            "sensitivity": m.safe_div(tp, tp + fn), "specificity": m.safe_div(tn, tn + fp)}


# name -> (point estimate on the full sample, its vectorised twin taking the weights first)
NAMED: dict[str, tuple[Callable[..., Any], Callable[..., ArrayDict]]] = {
    "binary": (m.binary_metrics, weighted_binary),
    "multiclass": (m.multiclass_metrics, weighted_multiclass),
    "cohort": (m.cohort_metrics, weighted_cohort),
    "labels": (m.label_metrics, weighted_labels),
}


def _figures(result: Any) -> dict[str, float]:
    # A callable may return one float: its figure is called "value".
    return m.flatten(result if isinstance(result, dict) else {"value": result})


def _looped(metric_fn: Callable[..., Any], arrays: list[np.ndarray], idx: np.ndarray, kwargs: dict) -> ArrayDict:
    # A caller's own metric cannot be vectorised by us: one call per resample.
    rows = []
    with warnings.catch_warnings():  # undefined resamples are expected; n_used reports them
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for i in idx:
            try:
                rows.append(_figures(metric_fn(*(a[i] for a in arrays), **kwargs)))
            except ValueError:  # e.g. an older sklearn refusing an AUC with one class: undefined
                rows.append({})
    keys = set().union(*rows)
    return {k: np.array([r.get(k, np.nan) for r in rows], dtype=float) for k in keys}


def percentile_cis(point: dict[str, float], resampled: ArrayDict, alpha: float) -> dict[str, m.CI]:
    """Percentile CI of each figure; resamples where a figure is NaN (undefined) are dropped for it."""
    out = {}
    for key, value in point.items():
        values = np.asarray(resampled.get(key, []), dtype=float)
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [50 * alpha, 100 - 50 * alpha]) if values.size else (np.nan, np.nan)
        out[key] = m.CI(float(value), float(low), float(high), int(values.size))
    return out


def bootstrap_ci(metric: str | Callable[..., Any], *arrays: Any, n_resamples: int = 1000, alpha: float = 0.05,
                 rng: np.random.Generator | int, **kwargs: Any) -> dict[str, m.CI]:
    """Percentile bootstrap CIs of every figure of a metric, resampling cases with replacement.

    Args:
        metric: "binary" (y, p_pos), "multiclass" (y_idx, proba), "cohort" (y_idx, proba[, levels]),
            "labels" (y_idx, pred_idx) -- vectorised -- or a callable metric_fn(*arrays) returning a
            float (figure "value") or nested dict of floats, evaluated once per resample.
        arrays: equal-length arrays, resampled together along their first axis.
        n_resamples: number of bootstrap resamples (the paper uses 1000).
        alpha: 1 - confidence level; bounds are the alpha/2 and 1 - alpha/2 percentiles.
        rng: a numpy Generator or an int seed; the same seed gives the same intervals.
        kwargs: passed to the metric (e.g. threshold).

    Returns:
        {flat figure key (as `metrics.flatten` names it): CI(point, low, high, n_used)}.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    data = [np.asarray(a) for a in arrays]
    n = len(data[0]) if data else 0
    if any(len(a) != n for a in data):
        raise ValueError(f"arrays differ in length: {[len(a) for a in data]}")
    if not callable(metric) and metric not in NAMED:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(NAMED)} or a callable")
    idx = resample_indices(n, n_resamples, rng)
    if callable(metric):
        point, resampled = _figures(metric(*data, **kwargs)), _looped(metric, data, idx, kwargs)
    else:
        point = m.flatten(NAMED[metric][0](*data, **kwargs))
        resampled = NAMED[metric][1](index_weights(idx, n), *data, **kwargs)
    return percentile_cis(point, resampled, alpha)
