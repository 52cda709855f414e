"""The histogram baseline: features, the AUC helper, and an end-to-end run."""
from __future__ import annotations

import numpy as np
import pytest

from simulation.difficulty import (
    GREY_BINS,
    HUE_BINS,
    drawn_feature_auc,
    histogram_baseline_auc,
    histogram_features,
    load_cases,
    macro_ovr_auc,
    main,
)


def test_histogram_features_describe_the_images(small_dataset):
    case = load_cases(small_dataset / "hospital1" / "manifest.csv")[0]

    features = histogram_features(case)

    assert features.shape == (GREY_BINS + 1 + HUE_BINS,)
    assert features[:GREY_BINS].sum() == pytest.approx(1.0)
    assert 0 < features[GREY_BINS] < 0.5  # some colour, far from all
    assert features[GREY_BINS + 1:].sum() == pytest.approx(1.0)


def test_macro_auc_ranks():
    labels = np.array([0, 1, 2, 3, 0, 1])
    perfect = np.eye(4)[labels]
    assert macro_ovr_auc(labels, perfect) == pytest.approx(1.0)
    assert macro_ovr_auc(labels, 1 - perfect) == pytest.approx(0.0)


def test_baseline_runs_on_hospital1(small_dataset, capsys):
    manifest = small_dataset / "hospital1" / "manifest.csv"

    auc = histogram_baseline_auc(load_cases(manifest, "train"), load_cases(manifest, "internal_test"))

    assert 0.0 <= auc <= 1.0
    assert main(["--data", str(small_dataset)]) == 0
    out = capsys.readouterr().out
    assert "histogram-LR" in out and "drawn-feature LR" in out


def test_drawn_features_are_recovered_from_the_settings(small_dataset, tmp_path):
    assert 0.6 < drawn_feature_auc(small_dataset) <= 1.0  # the drawn features carry the label
    assert drawn_feature_auc(tmp_path) is None
