"""Calibration: whether a predicted 0.8 comes true 80 % of the time, and temperature scaling.

A site measures it on its held-out cohort as an expected calibration error (ECE) and a
reliability diagram, for each sub-model's P(positive) on the cases of its level and for the
4-class output's top-label confidence. What leaves the site is the ECE and the diagram's bins
(count, mean predicted, observed share), with bins of fewer than `min_cell` cases left out.

Temperature scaling (Guo et al., 2017) divides a sub-model's logit by one number T fitted on
validation data. Federated, each site returns the summed validation NLL at every temperature of
a fixed grid (`nll_figures`) and the coordinator picks the grid point with the least pooled NLL:
no logit leaves a site. A binary network's P(positive) is sigmoid(d / T), monotone in d, so
AUCs are unchanged and the decision thresholds are moved with it (`threshold_at`) so that every
case gets exactly the same call.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common.labels import LEVELS

# Log-spaced temperatures from 1/4 to 4 (1.0 is on the grid: the uncalibrated network).
TEMPERATURES: tuple[float, ...] = tuple(float(t) for t in np.exp(np.linspace(math.log(0.25), math.log(4.0), 41)))
RELIABILITY_BINS = 10
# What a site's calibration figures describe: each sub-model's P(positive), and the 4-class output.
CALIBRATED_MODELS: tuple[str, ...] = tuple(level.key for level in LEVELS) + ("clahdm",)
EPS = 1e-7


def nll_key(i: int) -> str:
    """A validation reply's summed NLL at TEMPERATURES[i] (common.federated_validation)."""
    return f"val.t.{i}"


def logit_gap(proba: np.ndarray) -> np.ndarray:
    """A binary network's logit difference d = log p1 - log p0 (so that p1 = sigmoid(d))."""
    p = np.clip(np.asarray(proba, dtype=float), EPS, 1.0)
    return np.log(p[:, 1]) - np.log(p[:, 0])


def binary_nll(targets: np.ndarray, gap: np.ndarray, temperature: float) -> float:
    """Summed negative log-likelihood of 0/1 targets under P(positive) = sigmoid(gap / T)."""
    z = gap / temperature
    # -log sigmoid(z) = softplus(-z), computed without overflow
    return float(np.sum(np.where(targets == 1, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))))


def nll_figures(targets: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """A site's summed validation NLL at every grid temperature (zeros without cases)."""
    gap = logit_gap(proba) if len(targets) else np.zeros(0)
    return {nll_key(i): binary_nll(np.asarray(targets), gap, t) for i, t in enumerate(TEMPERATURES)}


def fitted_temperature(nll: Sequence[float]) -> float:
    """The grid temperature with the least pooled validation NLL (`nll[i]` at TEMPERATURES[i]).

    Ties go to the temperature closest to 1 (the network as trained).
    """
    values = np.asarray(nll, dtype=float)
    best = np.flatnonzero(np.isclose(values, values.min()))
    return TEMPERATURES[int(best[np.argmin(np.abs(np.log(np.array(TEMPERATURES)[best])))])]


def scaled(p_positive: np.ndarray | float, temperature: float) -> np.ndarray:
    """P(positive) of a binary network whose logit is divided by `temperature`."""
    p = np.clip(np.asarray(p_positive, dtype=float), EPS, 1 - EPS)
    return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / temperature))


def threshold_at(threshold: float, temperature: float) -> float:
    """The threshold on the scaled probability that makes the same calls as `threshold` did before."""
    return float(scaled(threshold, temperature))


def reliability(confidence: np.ndarray, outcome: np.ndarray, bins: int = RELIABILITY_BINS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of predicted probability: (count, mean predicted, observed share)."""
    confidence, outcome = np.asarray(confidence, dtype=float), np.asarray(outcome, dtype=float)
    index = np.clip((confidence * bins).astype(int), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(index, weights=confidence, minlength=bins) / count
        share = np.bincount(index, weights=outcome, minlength=bins) / count
    return count, mean, share


def ece(count: np.ndarray, mean: np.ndarray, share: np.ndarray) -> float:
    """Expected calibration error: the case-weighted mean gap between predicted and observed."""
    total = float(np.sum(count))
    if total == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] * np.abs(mean[used] - share[used])) / total)


def binary_calibration(targets: np.ndarray, p_positive: np.ndarray, prefix: str) -> dict[str, float]:
    """ECE and reliability bins of P(positive) against the 0/1 targets, as flat figures under `prefix`."""
    count, mean, share = reliability(p_positive, targets)
    return _figures(prefix, count, mean, share)


def top_label(targets: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A multi-class output's top-label confidence and whether its argmax is right, per case."""
    proba = np.asarray(proba, dtype=float)
    if len(targets) == 0:
        return np.zeros(0), np.zeros(0)
    return proba.max(axis=1), proba.argmax(axis=1) == targets


def top_label_calibration(targets: np.ndarray, proba: np.ndarray, prefix: str) -> dict[str, float]:
    """ECE and reliability bins of a multi-class output's top-label confidence (correct = argmax right)."""
    return _figures(prefix, *reliability(*top_label(targets, proba)))


def _figures(prefix: str, count: np.ndarray, mean: np.ndarray, share: np.ndarray) -> dict[str, float]:
    out = {f"{prefix}.ece": ece(count, mean, share)}
    for b in range(len(count)):
        out |= {f"{prefix}.bin.{b}.n": float(count[b]), f"{prefix}.bin.{b}.mean": float(mean[b]),
                f"{prefix}.bin.{b}.observed": float(share[b])}
    return out


def suppress_small_bins(figures: Mapping[str, float], min_cell: int) -> dict[str, float]:
    """The figures with each reliability bin of 0 < n < min_cell cases blanked (n 0, mean and share NaN):
    a bin of one case would give away that patient's probability and outcome."""
    out = dict(figures)
    for key, value in figures.items():
        if key.endswith(".n") and ".bin." in key and 0 < value < min_cell:
            stem = key.removesuffix(".n")
            out |= {key: 0.0, f"{stem}.mean": float("nan"), f"{stem}.observed": float("nan")}
    return out


def pooled_bins(sites: Sequence[Mapping[str, float]], prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several sites' reliability bins added up: (count, mean predicted, observed share)."""
    count = np.zeros(RELIABILITY_BINS)
    predicted = np.zeros(RELIABILITY_BINS)
    observed = np.zeros(RELIABILITY_BINS)
    for figures in sites:
        for b in range(RELIABILITY_BINS):
            n = float(figures.get(f"{prefix}.bin.{b}.n", 0.0))
            if n > 0:
                count[b] += n
                predicted[b] += n * float(figures[f"{prefix}.bin.{b}.mean"])
                observed[b] += n * float(figures[f"{prefix}.bin.{b}.observed"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, predicted / count, observed / count


def reliability_axes(ax: Any, count: np.ndarray, mean: np.ndarray, observed: np.ndarray) -> None:
    """Draw one reliability diagram on matplotlib axes: observed share vs mean predicted per bin,
    dot size = cases (the site's picture and the report's pooled one look alike)."""
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    used = count > 0
    ax.plot(mean[used], observed[used], color="C0", lw=1)
    ax.scatter(mean[used], observed[used], s=10 + 60 * count[used] / max(float(count.max()), 1.0), color="C0")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted", ylabel="observed")
