"""The references a trained CLA-HDM is judged against, measured on the run's own split.

- histogram: logistic regression on global image statistics (simulation.difficulty's features),
  the floor a CNN must clearly beat;
- drawn_feature: logistic regression on the features the synthetic generator drew for each case
  (what a perfect reader would record), the ceiling; only for data written by `clafed synth`.

Both are fitted on the training sites' pre-hold-out cases (training + validation: everything the
federation could learn from) and scored on each site's held-out cohort, the cases CLA-HDM is
scored on. "Share of the headroom closed" is (model - histogram) / (drawn_feature - histogram).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.labels import CLASS_INDEX, CLASSES
from common.manifest import Case
from common.site import SiteData
from simulation.difficulty import histogram_features, macro_ovr_auc


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(x_train, y_train)
    proba = np.zeros((len(x_test), len(CLASSES)))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


def drawn_features(data_dir: Path) -> dict[str, np.ndarray] | None:
    """case id -> the generator's drawn feature vector, or None when `data_dir` is not synthetic."""
    from simulation.synth.cohort import CohortSpec, Preset, cohort_plan
    from simulation.synth.features import feature_vector, sample_features
    from simulation.synth.render import case_streams

    settings = Path(data_dir) / "synth.json"
    if not settings.is_file():
        return None
    saved = json.loads(settings.read_text())
    preset = Preset(saved["preset"]["name"], tuple(CohortSpec(**dict(c, counts=tuple(c["counts"])))
                                                   for c in saved["preset"]["cohorts"]))
    out = {}
    for plan in cohort_plan(preset, saved["seed"]):
        rng = case_streams(saved["seed"], plan.site_index, plan.case_index)["features"]
        out[plan.case_id] = feature_vector(sample_features(plan.label, rng))
    return out


def _auc(features, train: list[Case], test: list[Case]) -> float:
    y_train = np.array([CLASS_INDEX[c.label] for c in train])
    y_test = np.array([CLASS_INDEX[c.label] for c in test])
    proba = _fit_predict(np.stack([features(c) for c in train]), y_train, np.stack([features(c) for c in test]))
    return macro_ovr_auc(y_test, proba)


def reference_aucs(sites: list[SiteData], data_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Macro one-vs-rest AUC of each reference on each site's held-out cohort."""
    train = [c for s in sites if s.config.role == "train" for c in s.train_cases + s.validation_cases]
    drawn = drawn_features(data_dir) if data_dir is not None else None
    if drawn is not None and not all(c.case_id in drawn for s in sites for c in s.heldout_cases + train):
        drawn = None  # not the cases the generator planned (renamed or mixed data)
    out: dict[str, dict[str, float]] = {}
    for site in sites:
        test = [c for c in site.heldout_cases if c.label is not None]
        if len({c.label for c in test}) < 2 or not train:
            continue
        figures = {"n_cases": float(len(test)), "histogram": _auc(histogram_features, train, test)}
        if drawn is not None:
            figures["drawn_feature"] = _auc(lambda c: drawn[c.case_id], train, test)
        out[site.config.name] = figures
    return out


def headroom_closed(model_auc: float, histogram: float, ceiling: float) -> float:
    """Share of the gap between the histogram floor and the drawn-feature ceiling the model closed."""
    gap = ceiling - histogram
    return float("nan") if gap <= 0 else (model_auc - histogram) / gap


def write_references(run_dir: Path, sites: list[SiteData], data_dir: Path | None) -> dict:
    from server import run_dir as rd

    references = reference_aucs(sites, data_dir)
    rd.write_json(Path(run_dir) / rd.REFERENCES_FILE, references)
    return references
