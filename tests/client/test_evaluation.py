"""Site evaluation: figures match scikit-learn, CIs bracket them, and only aggregates come back."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from client.evaluation import assert_aggregate, evaluate_site
from common.labels import CLASSES
from common.manifest import load_cases
from common.model import CLAHDM
from tests.sitegen import write_site


@pytest.fixture
def model(tiny_profile):
    import torch
    torch.manual_seed(0)
    return CLAHDM(tiny_profile.model)


def test_figures_match_the_predictions_written_at_the_site(tmp_path, tiny_profile, model):
    cases = load_cases(write_site(tmp_path / "site", {c: 3 for c in CLASSES}))
    figures = evaluate_site(model, cases, tiny_profile.data, tmp_path / "out", n_resamples=200, device=None)
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(table) == len(cases) and {"roc.png", "confusion.png", "metrics.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()}
    y = np.eye(4)[[CLASSES.index(label) for label in table["label"]]]
    proba = table[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert figures["clahdm.auc_micro"] == pytest.approx(roc_auc_score(y, proba, average="micro"), abs=1e-6)
    for key in ("clahdm.auc_micro", "submodel1.auc", "submodel2.accuracy"):
        assert figures[f"{key}.low"] <= figures[key] <= figures[f"{key}.high"]
    assert figures["n_cases"] == 12 and all(figures[f"n.{c}"] == 3 for c in CLASSES)
    assert sum(figures[f"clahdm.cm.{i}.{j}"] for i in range(4) for j in range(4)) == 12


def test_returned_figures_do_not_grow_with_the_cohort(tmp_path, tiny_profile, model):
    small = load_cases(write_site(tmp_path / "a", {c: 2 for c in CLASSES}))
    large = load_cases(write_site(tmp_path / "b", {c: 6 for c in CLASSES}, seed=1))
    keys_small = set(evaluate_site(model, small, tiny_profile.data, tmp_path / "oa", n_resamples=50))
    figures = evaluate_site(model, large, tiny_profile.data, tmp_path / "ob", n_resamples=50)
    assert keys_small == set(figures)
    case_ids = {c.case_id for c in large}
    assert not any(part in case_ids for key in figures for part in key.split("."))


@pytest.mark.parametrize("bad", [{"scores": [0.1, 0.2]}, {"case.17.p": 0.3}, {"x": "h1-0001"}])
def test_per_case_values_cannot_leave(bad):
    with pytest.raises(ValueError, match="refusing"):
        assert_aggregate(bad, n_cases=20)
