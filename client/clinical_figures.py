"""What a clinical study reads beside the AUCs, for one site's held-out cohort: calibration and
sub-model 1's decision curve, as flat aggregate figures plus the site's own pictures.

    calib.<model>.ece                 expected calibration error of the probabilities the model gives
    calib.<model>.ece_uncalibrated    the same before temperature scaling (equal when T = 1)
    calib.<model>.bin.<b>.{n,mean,observed}  the reliability diagram (10 bins)
    dca.nb.<k>, dca.prevalence, dca.n  net benefit of biopsying at sub-model 1's P(malignant) >= pt

<model> is each sub-model (P(positive) on the cases of its level) and `clahdm` (the 4-class soft
output's top-label confidence). Bins of fewer than `min_cell` cases are blanked before anything
leaves the site (`common.calibration.suppress_small_bins`, via client/disclosure.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from common import calibration as cal
from common import decision_curve as dca
from common.formatting import json_number
from common.labels import LEVELS
from common.metrics import level_subsets
from common.model import assemble

CALIBRATION_FILE = "calibration.png"
DECISION_CURVE_FILE = "decision_curve.png"
MODELS = cal.CALIBRATED_MODELS


def soft_from_levels(levels: np.ndarray) -> np.ndarray:
    """The 4-class soft output the model gives for the three levels' P(positive)."""
    return assemble(*torch.as_tensor(levels, dtype=torch.float64).T).soft.numpy()


def clinical_figures(y: np.ndarray, levels: np.ndarray, temperatures: Sequence[float]) -> dict[str, float]:
    """Calibration of every level and of the 4-class output, before and after the model's
    temperatures, and sub-model 1's decision curve, for labelled cases `y` (4-class indices)."""
    levels = np.asarray(levels, dtype=float).reshape(len(y), 3)
    # The network as trained: undo each level's temperature (sigmoid(d / T) -> sigmoid(d)).
    raw = np.stack([cal.scaled(levels[:, k], 1.0 / t) if len(y) else levels[:, k]
                    for k, t in enumerate(temperatures)], axis=1).reshape(len(y), 3)
    out: dict[str, float] = {}
    for level, (rows, targets), k in zip(LEVELS, level_subsets(np.asarray(y)), range(3)):
        prefix = f"calib.{level.key}"
        out |= cal.binary_calibration(targets, levels[rows, k], prefix)
        out[f"{prefix}.ece_uncalibrated"] = cal.ece(*cal.reliability(raw[rows, k], targets))
    out |= cal.top_label_calibration(y, soft_from_levels(levels), "calib.clahdm")
    out["calib.clahdm.ece_uncalibrated"] = cal.ece(*cal.reliability(*cal.top_label(y, soft_from_levels(raw))))
    malignant = (np.asarray(y) >= 2).astype(int)  # lymphoma, metastatic (common.labels.CLASSES order)
    out |= dca.curve_figures(malignant, levels[:, 0])
    return out


def plot_calibration(figures: Mapping[str, float], path: Path, title: str = "Reliability") -> None:
    """Reliability diagrams of the three sub-models and the 4-class output, ECE in each title."""
    fig = Figure(figsize=(11, 3.2), dpi=100)
    for ax, model in zip(fig.subplots(1, len(MODELS)), MODELS):
        count, mean, observed = cal.pooled_bins([figures], f"calib.{model}")
        cal.reliability_axes(ax, count, mean, observed)
        ece = figures.get(f"calib.{model}.ece", np.nan)
        before = figures.get(f"calib.{model}.ece_uncalibrated", np.nan)
        ax.set_title(f"{model}: ECE {ece:.3f} (before T {before:.3f})", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def readable(figures: Mapping[str, float]) -> dict:
    """The calibration and decision-curve figures regrouped for metrics.json."""
    calibration = {}
    for model in MODELS:
        count, mean, observed = cal.pooled_bins([figures], f"calib.{model}")
        calibration[model] = {
            "ece": json_number(figures.get(f"calib.{model}.ece")),
            "ece_before_temperature_scaling": json_number(figures.get(f"calib.{model}.ece_uncalibrated")),
            "bins": [{"range": [b / cal.RELIABILITY_BINS, (b + 1) / cal.RELIABILITY_BINS], "n": int(count[b]),
                      "mean_predicted": json_number(mean[b]), "observed": json_number(observed[b])}
                     for b in range(cal.RELIABILITY_BINS)]}
    curve = dca.site_curve(figures)
    decision = None
    if curve is not None:
        nb, prevalence, n = curve
        decision = {"thresholds": list(dca.THRESHOLDS), "net_benefit": [json_number(v) for v in nb],
                    "biopsy_all": [json_number(v) for v in dca.treat_all(prevalence)], "prevalence": prevalence,
                    "n_cases": int(n)}
    return {"calibration": calibration, "decision_curve_submodel1": decision}

