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

from pathlib import Path

import numpy as np

from common.labels import CLASS_INDEX
from common.manifest import Case
from common.site import SiteData
from simulation.difficulty import drawn_plans, fit_predict, histogram_features, macro_ovr_auc


def drawn_features(data_dir: Path) -> dict[str, np.ndarray] | None:
    """case id -> the generator's drawn feature vector, or None when `data_dir` is not synthetic."""
    plans = drawn_plans(data_dir)
    return None if plans is None else {plan.case_id: features for plan, features in plans}


def _auc(features, train: list[Case], test: list[Case]) -> float:
    y_train = np.array([CLASS_INDEX[c.label] for c in train])
    y_test = np.array([CLASS_INDEX[c.label] for c in test])
    proba = fit_predict(np.stack([features(c) for c in train]), y_train, np.stack([features(c) for c in test]))
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


def write_references(run_dir: Path, sites: list[SiteData], data_dir: Path | None) -> dict:
    from server import run_dir as rd

    references = reference_aucs(sites, data_dir)
    rd.write_json(Path(run_dir) / rd.REFERENCES_FILE, references)
    return references
