"""Point estimates: binary figures by hand, 4-class AUCs against scikit-learn, flat keys."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import auc, roc_auc_score
from sklearn.preprocessing import label_binarize

from common.labels import CLASSES
from common.metrics import (
    CI,
    binary_metrics,
    cohort_metrics,
    flatten,
    label_metrics,
    micro_roc,
    multiclass_metrics,
    per_class_roc,
)


def _known_4class():
    """Twelve cases, every class present, tied scores on purpose."""
    y = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 0])
    proba = np.array([[.7, .1, .1, .1], [.4, .4, .1, .1], [.2, .2, .3, .3], [.1, .6, .2, .1],
                      [.4, .4, .1, .1], [.1, .1, .5, .3], [.1, .1, .4, .4], [.1, .1, .1, .7],
                      [.2, .1, .3, .4], [.1, .1, .4, .4], [.3, .3, .2, .2], [.5, .2, .2, .1]])
    return y, proba


def test_micro_macro_and_per_class_auc_match_sklearn():
    # Prepare
    y, proba = _known_4class()
    onehot = label_binarize(y, classes=[0, 1, 2, 3])
    # Execute
    got = multiclass_metrics(y, proba)
    # Assert
    assert got["auc_micro"] == pytest.approx(roc_auc_score(onehot, proba, average="micro"), abs=1e-12)
    assert got["auc_macro"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"), abs=1e-12)
    for k, name in enumerate(CLASSES):
        assert got["auc_ovr"][name] == pytest.approx(roc_auc_score(onehot[:, k], proba[:, k]), abs=1e-12)


def test_confusion_matrix_rows_true_columns_predicted():
    # Prepare: one lymphoma case called metastatic, the rest right.
    y = np.array([0, 1, 2, 3, 2])
    proba = np.eye(4)[[0, 1, 2, 3, 3]] * 0.7 + 0.075
    # Execute
    got = multiclass_metrics(y, proba)
    # Assert
    expected = np.eye(4, dtype=int)
    expected[2, 3] = 1
    assert got["cm"] == expected.tolist()
    assert got["accuracy"] == pytest.approx(4 / 5)


def test_binary_figures_match_hand_computed_counts():
    # Prepare: tp=3, fn=2, tn=4, fp=1
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([.9, .8, .6, .4, .1, .2, .3, .1, .45, .7])
    # Execute
    got = binary_metrics(y, p)
    # Assert
    sens, spec = 3 / 5, 4 / 5
    hand = {"accuracy": 7 / 10, "sensitivity": sens, "specificity": spec, "ppv": 3 / 4, "npv": 4 / 6,
            "f1": 6 / 9, "mcc": (3 * 4 - 1 * 2) / math.sqrt(4 * 5 * 5 * 6), "lr_pos": sens / (1 - spec),
            "lr_neg": (1 - sens) / spec, "auc": roc_auc_score(y, p)}
    assert got == pytest.approx(hand, abs=1e-12)


def test_threshold_is_strict_like_the_gate():
    # Prepare: a case exactly at the threshold is called negative (p > threshold is positive)
    y, p = np.array([1, 0]), np.array([0.5, 0.2])
    # Execute
    got = binary_metrics(y, p, threshold=0.5)
    # Assert
    assert got["sensitivity"] == 0.0 and got["specificity"] == 1.0


def test_undefined_figures_are_nan_not_errors():
    # Prepare: only negatives, all called negative
    y, p = np.zeros(5, int), np.full(5, 0.1)
    # Execute
    got = binary_metrics(y, p)
    # Assert
    for name in ("auc", "sensitivity", "ppv", "f1", "mcc", "lr_pos", "lr_neg"):
        assert math.isnan(got[name]), name
    assert got["specificity"] == 1.0 and got["npv"] == 1.0 and got["accuracy"] == 1.0


def test_perfect_specificity_gives_nan_lr_pos():
    # Prepare
    y, p = np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.1, 0.3])
    # Execute
    got = binary_metrics(y, p)
    # Assert
    assert math.isnan(got["lr_pos"]) and got["lr_neg"] == pytest.approx(0.5)


def test_macro_auc_undefined_when_a_class_is_absent_micro_still_defined():
    # Prepare: no tuberculous case
    y = np.array([0, 2, 3, 0])
    proba = np.full((4, 4), 0.25)
    proba[0] = [.7, .1, .1, .1]
    # Execute
    got = multiclass_metrics(y, proba)
    # Assert
    assert math.isnan(got["auc_macro"]) and math.isnan(got["auc_ovr"]["tuberculous"])
    assert not math.isnan(got["auc_micro"])


def test_cohort_scores_each_submodel_on_its_own_cases():
    # Prepare: sub-model 2 is perfect on the benign cases and wrong on every malignant one
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    levels = np.array([[.1, .2, .5], [.2, .3, .5], [.3, .8, .5], [.2, .9, .5],
                       [.9, .9, .2], [.8, .9, .3], [.9, .1, .8], [.7, .1, .9]])
    proba = np.full((8, 4), 0.25)
    # Execute
    got = cohort_metrics(y, proba, levels)
    # Assert
    assert got["submodel1"]["auc"] == 1.0
    assert got["submodel2"]["auc"] == 1.0 and got["submodel2"]["accuracy"] == 1.0
    assert got["submodel3"]["accuracy"] == 1.0
    assert got["clahdm"]["auc_micro"] == pytest.approx(0.5)


def test_label_metrics_benign_vs_malignant():
    # Prepare: a tuberculous case read as reactive is right on benign/malignant, wrong on 4 classes
    y, pred = np.array([1, 0, 2, 3]), np.array([0, 2, 3, 3])
    # Execute
    got = label_metrics(y, pred)
    # Assert
    assert got == pytest.approx({"accuracy": 0.25, "sensitivity": 1.0, "specificity": 0.5})


def test_roc_helpers_trace_the_reported_aucs():
    # Prepare
    y, proba = _known_4class()
    # Execute
    micro, per_class = micro_roc(y, proba), per_class_roc(y, proba)
    figures = multiclass_metrics(y, proba)
    # Assert
    assert auc(micro["fpr"], micro["tpr"]) == pytest.approx(figures["auc_micro"])
    for name, curve in per_class.items():
        assert auc(curve["fpr"], curve["tpr"]) == pytest.approx(figures["auc_ovr"][name])


def test_flatten_names_keys_for_metric_records():
    # Prepare
    y, proba = _known_4class()
    results = {"clahdm": multiclass_metrics(y, proba), "submodel1": {"auc": CI(0.9, 0.8, 0.95, 998)}}
    # Execute
    flat = flatten(results)
    # Assert
    assert flat["clahdm.cm.2.3"] == float(multiclass_metrics(y, proba)["cm"][2][3])
    assert flat["clahdm.auc_ovr.lymphoma"] == multiclass_metrics(y, proba)["auc_ovr"]["lymphoma"]
    assert {k: flat[k] for k in flat if k.startswith("submodel1")} == {
        "submodel1.auc": 0.9, "submodel1.auc.low": 0.8, "submodel1.auc.high": 0.95, "submodel1.auc.n": 998.0}
    assert all(isinstance(v, float) for v in flat.values())
