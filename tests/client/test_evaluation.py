"""A site's evaluation: figures match scikit-learn on the written predictions, only aggregates leave."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sklearn.metrics import roc_auc_score

from client.clinical_figures import CALIBRATION_FILE, DECISION_CURVE_FILE
from client.evaluation import (
    CONFUSION_FILE,
    LEVEL_COLUMNS,
    METRICS_FILE,
    PREDICTIONS_FILE,
    ROC_FILE,
    SOFT_COLUMNS,
    aggregate_figures,
    aggregate_keys,
    assert_aggregate,
    evaluate_site,
)
from common.checkpoint import save_checkpoint
from common.cli import main
from common.config import get_profile
from common.decision_curve import net_benefit
from common.labels import CLASSES
from common.model import CLAHDM
from common.signing import sign_checkpoint
from common.validation import load_cases
from tests.sitegen import write_site

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def profile():
    return get_profile("tiny", {"model": {"dropout": 0.0}, "train": {"progress": False}})


@pytest.fixture(scope="module")
def model(profile):
    torch.manual_seed(0)
    return CLAHDM(profile.model)


@pytest.fixture(scope="module")
def small_site(tmp_path_factory):
    """16 labelled cases, 4 per class."""
    return write_site(tmp_path_factory.mktemp("small"), {c: 4 for c in CLASSES})


@pytest.fixture(scope="module")
def large_site(tmp_path_factory):
    """24 cases (6 per class) of which 2 are unlabeled."""
    manifest = write_site(tmp_path_factory.mktemp("large"), {c: 6 for c in CLASSES}, seed=1)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table.loc[[0, 13], "label"] = ""
    table.to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="module")
def small_eval(model, profile, small_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("small_eval")
    return evaluate_site(model, load_cases(small_site), profile.data, out, n_resamples=300, seed=3), out


@pytest.fixture(scope="module")
def large_eval(model, profile, large_site, tmp_path_factory):
    out = tmp_path_factory.mktemp("large_eval")
    return evaluate_site(model, load_cases(large_site), profile.data, out, n_resamples=300, seed=3), out


def test_micro_and_per_class_auc_match_sklearn_on_the_written_predictions(small_eval):
    figures, out = small_eval
    table = pd.read_csv(out / PREDICTIONS_FILE)
    y = table["label"].map(CLASSES.index).to_numpy()
    onehot, proba = np.eye(4)[y], table[list(SOFT_COLUMNS)].to_numpy()
    assert figures["clahdm.auc_micro"] == pytest.approx(roc_auc_score(onehot, proba, average="micro"), abs=1e-9)
    for k, name in enumerate(CLASSES):
        assert figures[f"clahdm.auc_ovr.{name}"] == pytest.approx(roc_auc_score(onehot[:, k], proba[:, k]), abs=1e-9)
    # Sub-model 1 on every case from its own probability column; accuracy from the gated call.
    malignant = (y >= 2).astype(int)
    assert figures["submodel1.auc"] == pytest.approx(roc_auc_score(malignant, table[LEVEL_COLUMNS[0]]), abs=1e-9)
    assert figures["clahdm.accuracy"] == pytest.approx((table["predicted"] == table["label"]).mean())


def test_returned_figures_hold_no_per_case_values(small_eval, large_eval, large_site):
    small, large = small_eval[0], large_eval[0]
    assert set(small) == set(large) == aggregate_keys()  # same keys whatever the cohort's size
    assert all(isinstance(v, float) for v in (*small.values(), *large.values()))
    assert small["n_cases"] == 16 and small["n_unlabeled"] == 0
    assert large["n_cases"] == 22 and large["n_unlabeled"] == 2  # unlabeled: predicted, not scored
    assert sum(large[f"n.{c}"] for c in CLASSES) == 22
    assert sum(large[k] for k in large if k.startswith("clahdm.cm.")) == 22
    assert_aggregate(large, 22, [c.case_id for c in load_cases(large_site)])


def test_cis_contain_the_point_estimate(small_eval, large_eval):
    checked = 0
    for figures in (small_eval[0], large_eval[0]):
        for key in figures:
            if key.endswith(".low") and not math.isnan(figures[key]):
                point = key.removesuffix(".low")
                if point.endswith((".auc", "auc_micro", "auc_macro", ".accuracy", ".sensitivity", ".specificity")) \
                        or ".auc_ovr." in point:
                    assert figures[key] <= figures[point] <= figures[f"{point}.high"], point
                    checked += 1
                assert figures[f"{point}.n"] <= 300
    assert checked > 20


def test_files_stay_local_and_agree_with_the_figures(large_eval, large_site):
    figures, out = large_eval
    table = pd.read_csv(out / PREDICTIONS_FILE, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["case_id", "label", *SOFT_COLUMNS, "predicted", *LEVEL_COLUMNS]
    assert table["case_id"].tolist() == [c.case_id for c in load_cases(large_site)]
    assert (table["label"] == "").sum() == 2
    np.testing.assert_allclose(table[list(SOFT_COLUMNS)].astype(float).sum(axis=1), 1.0, atol=1e-5)
    for name in (ROC_FILE, CONFUSION_FILE, CALIBRATION_FILE, DECISION_CURVE_FILE):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    readable = json.loads((out / METRICS_FILE).read_text())
    # Calibration and the decision curve, as returned and for people to read.
    labelled = table[table["label"] != ""]
    y = labelled["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    p_malignant = labelled[LEVEL_COLUMNS[0]].astype(float).to_numpy()
    assert figures["dca.nb.3"] == pytest.approx(net_benefit((y >= 2).astype(int), p_malignant)[3], abs=1e-6)
    assert readable["calibration"]["clahdm"]["ece"] == pytest.approx(figures["calib.clahdm.ece"])
    assert sum(b["n"] for b in readable["calibration"]["submodel1"]["bins"]) == len(labelled)
    assert readable["decision_curve_submodel1"]["n_cases"] == len(labelled)
    counts = readable["clahdm"]["confusion_matrix"]["counts"]
    assert counts == [[int(figures[f"clahdm.cm.{i}.{j}"]) for j in range(4)] for i in range(4)]
    assert readable["clahdm"]["auc_micro"]["value"] == pytest.approx(figures["clahdm.auc_micro"])
    assert readable["n_unlabeled"] == 2 and set(readable["submodel3"]["figures"]) >= {"auc", "mcc", "lr_neg"}


def test_assert_aggregate_refuses_what_must_not_leave():
    figures = {"n_cases": 3.0, "clahdm.auc_micro": 0.7}
    assert_aggregate(figures, 3)
    assert_aggregate(dict(figures, heatmaps=4), 3, extra_keys=["heatmaps"])
    bad = [({"clahdm.auc_micro": [0.1, 0.2, 0.9]}, "not a single number"),
           ({"scores.rea-001": 0.4}, "unexpected key"),
           ({"n_cases": 4.0}, "expected 3"),
           ({"clahdm.auc_micro": "0.7"}, "not a single number")]
    for extra, message in bad:
        with pytest.raises(ValueError, match=message):
            assert_aggregate(dict(figures, **extra), 3)
    with pytest.raises(ValueError, match="names case 'rea-001'"):
        assert_aggregate({"rea-001": 1.0}, 3, case_ids=["rea-001"], extra_keys=["rea-001"])


def test_bootstrap_is_seeded_and_sized_by_n_resamples():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    soft = rng.dirichlet(np.ones(4), size=40)
    levels = rng.random((40, 3))
    a = aggregate_figures(y, soft, soft, levels, n_resamples=50, seed=1)
    assert a == aggregate_figures(y, soft, soft, levels, n_resamples=50, seed=1)
    b = aggregate_figures(y, soft, soft, levels, n_resamples=50, seed=2)
    assert a["clahdm.auc_micro"] == b["clahdm.auc_micro"] and a["clahdm.auc_micro.low"] != b["clahdm.auc_micro.low"]
    assert a["clahdm.auc_micro.n"] == 50


def test_accuracy_and_confusion_use_the_gated_prediction():
    # p(malignant) just above the gate: soft argmax says reactive, the gated call says metastatic.
    soft = np.array([[0.44, 0.05, 0.2, 0.31]])
    hard = np.array([[0.0, 0.0, 0.4, 0.6]])
    figures = aggregate_figures(np.array([3]), soft, hard, np.array([[0.51, 0.1, 0.6]]), n_resamples=5)
    assert figures["clahdm.accuracy"] == 1.0 and figures["clahdm.cm.3.3"] == 1.0


# ---- clafed evaluate ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_site(tmp_path_factory, small_site, model, profile):
    base = tmp_path_factory.mktemp("cli")
    ckpt = base / "model.pt"
    save_checkpoint(ckpt, model, profile.data)
    site_yaml = base / "hospitalX.yaml"
    site_yaml.write_text(yaml.safe_dump({"name": "hospitalX", "manifest": str(small_site),
                                         "holdout": {"kind": "date", "date": "2020-03-01"},
                                         "output_dir": str(base / "outputs")}))
    return site_yaml, ckpt, base


def test_evaluate_command_writes_locally_and_prints_a_table(cli_site, capsys):
    site_yaml, ckpt, base = cli_site
    assert main(["evaluate", "--model", str(ckpt), "--site", str(site_yaml), "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    assert "CLA-HDM" in printed and "sub-model 3" in printed
    (out,) = (base / "outputs").glob("evaluate-*")
    rows = pd.read_csv(out / PREDICTIONS_FILE)
    assert 0 < len(rows) < 16  # the held-out cases only (exam date on/after 2020-03-01)
    assert (out / ROC_FILE).is_file() and (out / METRICS_FILE).is_file()
    assert main(["evaluate", "--model", str(ckpt), "--site", str(site_yaml), "--cohort", "all",
                 "--resamples", "20", "--out", str(base / "all")]) == 0
    assert len(pd.read_csv(base / "all" / PREDICTIONS_FILE)) == 16


def test_evaluate_command_names_what_is_wrong(cli_site, tmp_path, capsys):
    site_yaml, ckpt, _ = cli_site
    assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--site", str(site_yaml)]) == 2
    assert "none.pt" in capsys.readouterr().err
    # A site that holds out everything has no training cohort.
    all_yaml = _all_heldout(site_yaml, tmp_path)
    assert main(["evaluate", "--model", str(ckpt), "--site", str(all_yaml), "--cohort", "train"]) == 2
    assert "train cohort has no cases" in capsys.readouterr().err


def test_evaluate_command_checks_the_coordinator_signature(cli_site, tmp_path, capsys):
    site_yaml, ckpt, _ = cli_site
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "k.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    signed_yaml = tmp_path / "signed.yaml"
    config = yaml.safe_load(site_yaml.read_text()) | {"coordinator_public_key": str(tmp_path / "k.pub")}
    signed_yaml.write_text(yaml.safe_dump(config))
    unsigned = tmp_path / "model.pt"
    unsigned.write_bytes(ckpt.read_bytes())
    args = ["evaluate", "--model", str(unsigned), "--site", str(signed_yaml), "--resamples", "10",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "--unsigned" in capsys.readouterr().err and not (tmp_path / "out").exists()
    # --unsigned skips the check: the run gets as far as choosing the cohort (empty here, to stay quick).
    assert main(args + ["--unsigned", "--cohort", "train", "--site", str(_all_heldout(signed_yaml, tmp_path))]) == 2
    assert "train cohort has no cases" in capsys.readouterr().err
    sign_checkpoint(unsigned, tmp_path / "k.key")
    assert main(args) == 0
    assert (tmp_path / "out" / PREDICTIONS_FILE).is_file()


def _all_heldout(site_yaml, folder):
    """A copy of a site YAML whose hold-out rule keeps every case for evaluation."""
    config = yaml.safe_load(site_yaml.read_text())
    path = folder / f"all-{site_yaml.name}"
    path.write_text(yaml.safe_dump(config | {"holdout": {"kind": "all"}}))
    return path


def test_a_cohort_without_labels_gives_undefined_figures_not_errors(tmp_path):
    from client.clinical_figures import clinical_figures
    from client.evaluation import plot_confusion, plot_roc, readable_metrics

    y, proba, levels = np.zeros(0, dtype=int), np.zeros((0, 4)), np.zeros((0, 3))
    figures = aggregate_figures(y, proba, proba, levels, n_resamples=10) | clinical_figures(y, levels, (1, 1, 1))
    assert set(figures) | {"n_unlabeled"} == aggregate_keys()
    assert math.isnan(figures["calib.clahdm.ece"]) and figures["dca.n"] == 0
    assert figures["n_cases"] == 0 and math.isnan(figures["clahdm.auc_micro"])
    plot_roc(y, proba, tmp_path / "roc.png")
    plot_confusion(figures, tmp_path / "cm.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC
    text = json.dumps(readable_metrics(figures, 10, 0), allow_nan=False)  # strict JSON: NaN written as null
    assert '"auc_micro": {"value": null' in text


def test_only_cases_without_an_roi_get_the_localisers_box_and_only_from_a_trained_one(site_manifest):
    from dataclasses import replace

    from client.evaluation import cases_with_boxes
    from common.config import get_profile
    from common.model import CLAHDM
    from common.validation import load_cases

    profile = get_profile("tiny")
    cases = load_cases(site_manifest)
    cases[2] = replace(cases[2], roi=None)
    model = CLAHDM(profile.model)
    assert cases_with_boxes(model, cases, profile.data) == cases  # untrained: the case is read whole
    model.localiser_trained.fill_(1.0)
    boxed = cases_with_boxes(model, cases, profile.data)
    assert boxed[2].roi is not None and [c.roi for i, c in enumerate(boxed) if i != 2] == \
        [c.roi for i, c in enumerate(cases) if i != 2]
