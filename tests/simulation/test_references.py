"""The floor and ceiling a trained model is judged against, measured on the run's own split."""
from __future__ import annotations

import numpy as np
import pytest

from common.config import HoldoutRule, SiteConfig
from common.site import SiteData
from server.report_learning import headroom as headroom_closed
from simulation.difficulty import drawn_feature_auc, histogram_baseline_auc
from simulation.references import drawn_features, reference_aucs


def sites_of(data, holdout: HoldoutRule, validation: float = 0.0) -> list[SiteData]:
    return [SiteData.load(SiteConfig(name=name, manifest=data / name / "manifest.csv", holdout=holdout,
                                     validation_fraction=validation))
            for name in ("hospital1", "hospital2", "hospital3")]


def test_the_drawn_features_are_the_generators(small_dataset):
    features = drawn_features(small_dataset)
    assert features is not None and len(features) == sum(1 for _ in small_dataset.glob("*/images/*_bus.png"))
    assert all(v.shape == next(iter(features.values())).shape for v in features.values())
    assert drawn_features(small_dataset / "hospital1") is None  # not a folder written by `clafed synth`


def test_references_reproduce_the_difficulty_baselines_on_the_same_split(small_dataset):
    """Hospital 1 alone, trained before 2021 and tested on its 2021 cases: `simulation.difficulty`'s split."""
    [h1] = [s for s in sites_of(small_dataset, HoldoutRule(kind="date", date="2021-01-01")) if s.config.name == "hospital1"]
    refs = reference_aucs([h1], small_dataset)["hospital1"]
    assert refs["histogram"] == pytest.approx(histogram_baseline_auc(h1.train_cases, h1.heldout_cases))
    assert refs["drawn_feature"] == pytest.approx(drawn_feature_auc(small_dataset))
    assert refs["n_cases"] == len(h1.heldout_cases)


def test_references_learn_from_validation_cases_too_and_score_every_site(small_dataset):
    sites = sites_of(small_dataset, HoldoutRule(kind="fraction", fraction=0.4), validation=0.2)
    refs = reference_aucs(sites, small_dataset)
    assert set(refs) == {"hospital1", "hospital2", "hospital3"}
    assert all(0.0 <= r["histogram"] <= 1.0 and 0.0 <= r["drawn_feature"] <= 1.0 for r in refs.values())
    without = reference_aucs(sites)  # no synthetic folder given: the floor only
    assert all(set(r) == {"n_cases", "histogram"} for r in without.values())


def test_headroom_share():
    assert headroom_closed(0.85, 0.7, 0.9) == pytest.approx(0.75)
    assert np.isnan(headroom_closed(0.85, 0.9, 0.9))
