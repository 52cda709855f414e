"""A site's evaluation of the assembled CLA-HDM: per-case outputs stay local, aggregates leave.

`evaluate_site` writes into the site's own folder
    predictions.csv  one row per case: truth, the four soft probabilities, the gated prediction,
                     each level's P(positive)  (its columns also suit `clafed readers --predictions`)
    roc.png          micro-averaged and one-vs-rest ROC curves
    confusion.png    4x4 confusion matrix of the gated prediction
    calibration.png  reliability diagrams of each level and the 4-class output (client/clinical_figures.py)
    decision_curve.png  sub-model 1's net benefit against biopsying every node or none
    metrics.json     every figure with its 95% bootstrap CI, calibration and the decision curve, for people
and returns only the flat aggregate figures (`assert_aggregate` checks that nothing per case
slipped in). Unlabeled cases are predicted and written, but excluded from every figure.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import numbers
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from matplotlib.figure import Figure

from client import clinical_figures as clinical
from common import decision_curve as dca
from common import metrics as m
from common.bootstrap import bootstrap_ci
from common.config import DataConfig
from common.dataset import CaseDataset
from common.formatting import json_number
from common.labels import CLASSES, LEVELS
from common.localiser import propose_missing_rois
from common.manifest import Case
from common.model import CLAHDM
from common.training import Predictions, predict_clahdm

log = logging.getLogger("clafed.client")

PREDICTIONS_FILE = "predictions.csv"
ROC_FILE = "roc.png"
CONFUSION_FILE = "confusion.png"
METRICS_FILE = "metrics.json"
SOFT_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
LEVEL_COLUMNS: tuple[str, ...] = tuple(f"p_{lv.key}_{lv.names[1]}" for lv in LEVELS)
# predictions.csv, wherever it is written (`clafed predict` adds its file columns after these).
PREDICTION_COLUMNS: tuple[str, ...] = ("case_id", "label", *SOFT_COLUMNS, "predicted", *LEVEL_COLUMNS)
# Figures of the gated (hard) prediction; every AUC comes from the soft probabilities.
HARD_KEYS: tuple[str, ...] = ("clahdm.accuracy",) + tuple(
    f"clahdm.cm.{i}.{j}" for i in range(len(CLASSES)) for j in range(len(CLASSES)))


def labelled_arrays(preds: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(targets, soft, hard, levels) of the labelled cases only (target -1 marks unlabeled)."""
    keep = preds.targets >= 0
    return preds.targets[keep], preds.scores[keep], preds.hard[keep], preds.levels[keep]


def aggregate_figures(y: np.ndarray, soft: np.ndarray, hard: np.ndarray, levels: np.ndarray, *,
                      threshold: float | tuple[float, ...] = 0.5, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """Every figure of a labelled cohort with its bootstrap CI, as one flat `str -> float` dict.

    AUCs use the soft probabilities; 4-class accuracy and the confusion matrix use the gated
    prediction (what the model tells a clinician). Both bootstraps draw the same resamples (same
    seed), so their CIs describe the same replicate cohorts. Confusion cells are counts, no CI.
    """
    soft_cis = bootstrap_ci("cohort", y, soft, levels, n_resamples=n_resamples, rng=seed, threshold=threshold)
    hard_cis = bootstrap_ci("multiclass", y, hard, n_resamples=n_resamples, rng=seed)
    cis = soft_cis | {key: hard_cis[key.removeprefix("clahdm.")] for key in HARD_KEYS}
    out: dict[str, float] = {}
    for key, ci in cis.items():
        out.update({key: ci.point} if ".cm." in key else m.flatten(ci, key))
    out["n_cases"] = float(len(y))
    out.update({f"n.{name}": float(np.sum(y == k)) for k, name in enumerate(CLASSES)})
    return out


@cache
def aggregate_keys() -> frozenset[str]:
    """Every key `evaluate_site` may return: fixed by the metrics, whatever the cohort's size."""
    y = np.arange(len(CLASSES))
    proba = np.full((len(y), len(CLASSES)), 1.0 / len(CLASSES))
    levels = np.full((len(y), len(LEVELS)), 0.5)
    keys = set(aggregate_figures(y, proba, proba, levels, n_resamples=2))
    keys |= set(clinical.clinical_figures(y, levels, (1, 1, 1)))
    return frozenset(keys | {"n_unlabeled"})


def assert_aggregate(figures: Mapping[str, Any], n_cases: int, case_ids: Iterable[str] = (),
                     extra_keys: Iterable[str] = ()) -> None:
    """Raise ValueError unless `figures` is safe to leave the site: aggregate numbers only.

    Args:
        figures: what would be sent to the server.
        n_cases: the number of labelled cases evaluated (must match figures["n_cases"] if present).
        case_ids: the cohort's case ids; none may appear in a key.
        extra_keys: keys allowed besides `aggregate_keys()` (e.g. a count the caller adds).
    """
    allowed = aggregate_keys() | set(extra_keys)
    problems = []
    for key, value in figures.items():
        if not isinstance(key, str) or key not in allowed:
            problems.append(f"unexpected key {key!r} (not an aggregate figure)")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            problems.append(f"{key!r} holds a {type(value).__name__}, not a single number")
    ids = [str(c) for c in case_ids if str(c)]
    problems += [f"key {key!r} names case {cid!r}" for key in figures for cid in ids if cid in str(key)]
    if "n_cases" in figures and isinstance(figures["n_cases"], numbers.Real) and figures["n_cases"] != n_cases:
        problems.append(f"n_cases is {figures['n_cases']}, expected {n_cases}")
    if problems:
        raise ValueError("figures are not aggregate-only; refusing to share them:\n  " + "\n  ".join(problems))


def cases_with_boxes(model: CLAHDM, cases: list[Case], data_cfg: DataConfig,
                     device: torch.device | None = None) -> list[Case]:
    """The cases, with the model's localiser proposing the box of each one its manifest gives none
    (when the model has a trained localiser; otherwise such cases are read whole, as before)."""
    if not model.has_localiser or all(c.roi is not None for c in cases):
        return cases
    boxed, proposed = propose_missing_rois(model.localiser, cases, data_cfg.localiser_size, device)
    log.info("the localiser proposed the box of %d of %d cases (no ROI in the manifest)", proposed, len(cases))
    return boxed


def evaluate_site(model: CLAHDM, cases: list[Case], data_cfg: DataConfig, out_dir: Path, *,
                  n_resamples: int = 1000, seed: int = 0, batch_size: int = 32,
                  device: torch.device | None = None, num_workers: int = 0) -> dict[str, float]:
    """Evaluate the assembled CLA-HDM on `cases`, write the local files, return aggregate figures.

    Args:
        model: the assembled model (its decision thresholds also threshold the sub-models' calls).
        cases: the cohort; unlabeled cases are predicted and written, not scored.
        data_cfg: the preprocessing the model was trained with.
        out_dir: the site's local folder for predictions.csv, roc.png, confusion.png, metrics.json.
        n_resamples, seed: the percentile bootstrap of every 95% CI.

    Returns:
        Flat figures ("clahdm.auc_micro", "clahdm.auc_micro.low", "submodel2.sensitivity.high",
        "clahdm.cm.<true>.<predicted>", "n_cases", "n.<class>", "n_unlabeled", ...).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds = predict_clahdm(model, CaseDataset(cases, data_cfg), batch_size=batch_size, device=device,
                           num_workers=num_workers)
    write_predictions(out_dir / PREDICTIONS_FILE, preds)
    y, soft, hard, levels = labelled_arrays(preds)
    figures = aggregate_figures(y, soft, hard, levels, threshold=model.decision_thresholds,
                                n_resamples=n_resamples, seed=seed)
    figures |= clinical.clinical_figures(y, levels, model.temperatures)
    figures["n_unlabeled"] = float(len(preds.targets) - len(y))
    plot_roc(y, soft, out_dir / ROC_FILE)
    plot_confusion(figures, out_dir / CONFUSION_FILE)
    clinical.plot_calibration(figures, out_dir / clinical.CALIBRATION_FILE, f"Reliability ({len(y)} cases)")
    curve = dca.site_curve(figures)
    if curve is not None:
        dca.plot_curves({"this site": curve}, out_dir / clinical.DECISION_CURVE_FILE)
    readable = readable_metrics(figures, n_resamples, seed) | clinical.readable(figures)
    (out_dir / METRICS_FILE).write_text(json.dumps(readable, indent=2))
    assert_aggregate(figures, len(y), preds.case_ids)
    return figures


def prediction_row(case_id: str, label: str | None, soft: Iterable[float], predicted: str,
                   levels: Iterable[float]) -> dict[str, str]:
    """One case's row of predictions.csv (PREDICTION_COLUMNS), as `evaluate` and `predict` write it."""
    return {"case_id": case_id, "label": label or "", **{c: f"{v:.9g}" for c, v in zip(SOFT_COLUMNS, soft)},
            "predicted": predicted, **{c: f"{v:.9g}" for c, v in zip(LEVEL_COLUMNS, levels)}}


def write_predictions(path: Path, preds: Predictions) -> None:
    """One row per case: id, truth ('' if unlabeled), soft probabilities, gated call, level probabilities."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        for i, case_id in enumerate(preds.case_ids):
            target = int(preds.targets[i])
            writer.writerow(prediction_row(case_id, CLASSES[target] if target >= 0 else None, preds.scores[i],
                                           CLASSES[int(np.argmax(preds.hard[i]))], preds.levels[i]))


def readable_metrics(figures: Mapping[str, float], n_resamples: int, seed: int) -> dict[str, Any]:
    """The flat figures regrouped for people: {model: {figure: {value, low, high}}} plus counts."""
    def ci(key: str) -> dict[str, Any]:
        return {"value": json_number(figures[key]), "low": json_number(figures[f"{key}.low"]),
                "high": json_number(figures[f"{key}.high"]), "resamples_defined": int(figures[f"{key}.n"])}

    k = len(CLASSES)
    out: dict[str, Any] = {
        "n_cases": int(figures["n_cases"]), "n_unlabeled": int(figures.get("n_unlabeled", 0)),
        "cases_per_class": {c: int(figures[f"n.{c}"]) for c in CLASSES},
        "confidence_interval": f"95% percentile bootstrap, {n_resamples} resamples, seed {seed}",
    }
    for level in LEVELS:
        names = [key.split(".")[1] for key in figures if key.startswith(f"{level.key}.") and key.count(".") == 1]
        out[level.key] = {"task": level.title, "positive_class": level.names[1],
                          "figures": {name: ci(f"{level.key}.{name}") for name in names}}
    out["clahdm"] = {
        "auc_micro": ci("clahdm.auc_micro"), "auc_macro": ci("clahdm.auc_macro"),
        "auc_one_vs_rest": {c: ci(f"clahdm.auc_ovr.{c}") for c in CLASSES},
        "accuracy_gated": ci("clahdm.accuracy"),
        "confusion_matrix": {"rows": "true class", "columns": "gated prediction", "classes": list(CLASSES),
                             "counts": [[int(figures[f"clahdm.cm.{i}.{j}"]) for j in range(k)] for i in range(k)]},
    }
    return out



def plot_roc(y: np.ndarray, soft: np.ndarray, path: Path) -> None:
    """Micro-averaged (bold) and one-vs-rest ROC curves with their AUCs, as a PNG."""
    fig = Figure(figsize=(5.5, 5), dpi=110)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    curves = [("micro-average", m.micro_roc(y, soft), 2.5)]
    curves += [(name, roc, 1.2) for name, roc in m.per_class_roc(y, soft).items()]
    aucs = m.multiclass_metrics(y, soft)
    for name, roc, width in curves:
        auc = aucs["auc_micro"] if name == "micro-average" else aucs["auc_ovr"][name]
        label = f"{name} (AUC {auc:.3f})" if not math.isnan(auc) else f"{name} (not defined)"
        if len(roc["fpr"]):
            ax.plot(roc["fpr"], roc["tpr"], lw=width, label=label)
        else:
            ax.plot([], [], lw=width, label=label)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"CLA-HDM ROC ({len(y)} cases)")
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path)


def plot_confusion(figures: Mapping[str, float], path: Path) -> None:
    """The gated prediction's confusion matrix: counts in the cells, colour = share of the true class."""
    k = len(CLASSES)
    cm = np.array([[figures[f"clahdm.cm.{i}.{j}"] for j in range(k)] for i in range(k)])
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(5.5, 4.8), dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), CLASSES, rotation=30, ha="right")
    ax.set_yticks(range(k), CLASSES)
    ax.set(xlabel="predicted (gated)", ylabel="true", title="CLA-HDM confusion matrix")
    fig.colorbar(image, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path)
