"""Decision-curve analysis (Vickers & Elkin, 2006) of sub-model 1's call: biopsy or not.

At a threshold probability pt (the risk at which a clinician would biopsy), biopsying the cases
the model scores at pt or above has net benefit TP/n - FP/n * pt/(1-pt): true malignancies
found, minus the unneeded biopsies weighted by the harm the threshold implies. It is compared
with biopsying every node ("treat all": prevalence - (1 - prevalence) * pt/(1-pt)) and none
(zero). Net benefit is linear in the counts, so sites' curves pool exactly, weighted by their
case counts: a site returns only the curve's points and its number of cases.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# Threshold probabilities of the curve: 5 % to 60 %, the range where a biopsy decision is debated.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 13))
PREFIX = "dca"


def net_benefit(targets: np.ndarray, p_positive: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """The model's net benefit at each threshold (NaN without cases)."""
    targets, p = np.asarray(targets), np.asarray(p_positive, dtype=float)
    n = len(targets)
    if n == 0:
        return np.full(len(thresholds), np.nan)
    out = []
    for pt in thresholds:
        act = p >= pt
        tp, fp = np.sum(act & (targets == 1)), np.sum(act & (targets == 0))
        out.append(tp / n - fp / n * pt / (1 - pt))
    return np.array(out, dtype=float)


def treat_all(prevalence: float, thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """Net benefit of biopsying every node."""
    pt = np.asarray(thresholds, dtype=float)
    return prevalence - (1 - prevalence) * pt / (1 - pt)


def key(k: int) -> str:
    return f"{PREFIX}.nb.{k}"


def curve_figures(targets: np.ndarray, p_positive: np.ndarray) -> dict[str, float]:
    """A site's curve as flat figures: the model's net benefit per threshold and the prevalence."""
    nb = net_benefit(targets, p_positive)
    prevalence = float(np.mean(targets)) if len(targets) else float("nan")
    return {key(k): float(v) for k, v in enumerate(nb)} | {f"{PREFIX}.prevalence": prevalence,
                                                           f"{PREFIX}.n": float(len(targets))}


def figure_keys() -> list[str]:
    return [key(k) for k in range(len(THRESHOLDS))] + [f"{PREFIX}.prevalence", f"{PREFIX}.n"]


def site_curve(figures: Mapping[str, float]) -> tuple[np.ndarray, float, float] | None:
    """(model net benefit, prevalence, cases) from a site's figures; None when it returned no curve."""
    if key(0) not in figures or float(figures.get(f"{PREFIX}.n", 0)) <= 0:
        return None
    nb = np.array([float(figures[key(k)]) for k in range(len(THRESHOLDS))])
    return nb, float(figures[f"{PREFIX}.prevalence"]), float(figures[f"{PREFIX}.n"])


def pooled_curve(sites: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, float, float] | None:
    """The curve of all sites' cases together (exact: net benefit and prevalence are case averages)."""
    curves = [c for c in (site_curve(f) for f in sites) if c is not None]
    if not curves:
        return None
    n = float(sum(c[2] for c in curves))
    nb = np.sum([c[0] * c[2] for c in curves], axis=0) / n
    return nb, float(sum(c[1] * c[2] for c in curves) / n), n


def plot_curves(curves: Mapping[str, tuple[np.ndarray, float, float]], path: Path | None = None,
                title: str = "Decision curve: biopsy at P(malignant) >= threshold") -> Figure:
    """Net benefit of each named (curve, prevalence, cases) beside "biopsy all" at that prevalence
    and "biopsy none"; saved to `path` when given (a site's picture, the report's plot)."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    pt = np.array(THRESHOLDS)
    ax.axhline(0.0, color="0.3", lw=1, label="biopsy none")
    for k, (name, (nb, prevalence, n)) in enumerate(curves.items()):
        ax.plot(pt, nb, color=f"C{k}", lw=2, label=f"{name}: CLA-HDM ({n:.0f} cases)")
        ax.plot(pt, treat_all(prevalence), color=f"C{k}", lw=1, ls=":", label=f"{name}: biopsy all")
    low = min([-0.05] + [float(np.nanmin(nb)) for nb, _, _ in curves.values()])
    high = max([0.05] + [max(float(np.nanmax(nb)), prevalence) for nb, prevalence, _ in curves.values()])
    ax.set(xlabel="threshold probability", ylabel="net benefit", xlim=(pt[0], pt[-1]),
           ylim=(max(low, -0.25), high + 0.05), title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig
