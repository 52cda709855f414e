"""Reader study: exact McNemar, permutation test, input checks and the `clafed readers` command."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.cli import main
from common.labels import CLASSES
from common.readers import MODEL, ReadsError, analyse_readers, load_reader_data, mcnemar_exact, permutation_test


def _study(n=40, seed=0):
    """Predictions (probabilities only) and reads of two groups, each reader without and with AI."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    proba = np.full((n, 4), 0.1)
    model_right = rng.random(n) < 0.8
    proba[np.arange(n), np.where(model_right, y, (y + 1) % 4)] = 0.7
    pred = pd.DataFrame({"case_id": [f"C{i}" for i in range(n)], "label": [CLASSES[i] for i in y]})
    pred[[f"p_{c}" for c in CLASSES]] = proba.astype(str)
    reads = []
    for reader, group, acc in (("R1", "senior", 0.9), ("R2", "senior", 0.8), ("R3", "junior", 0.4)):
        for with_ai, bonus in (("no", 0.0), ("yes", 0.1)):
            call = np.where(rng.random(n) < acc + bonus, y, (y + 2) % 4)
            reads += [{"case_id": f"C{i}", "reader": reader, "group": group, "with_ai": with_ai,
                       "label": CLASSES[call[i]]} for i in range(n)]
    return pred, pd.DataFrame(reads), y, proba.argmax(axis=1)


def test_mcnemar_matches_the_hand_computed_exact_binomial():
    # Prepare: 1 case only A gets right, 7 only B, 12 concordant
    a = np.array([1] * 1 + [0] * 7 + [1] * 10 + [0] * 2, bool)
    b = np.array([0] * 1 + [1] * 7 + [1] * 10 + [0] * 2, bool)
    # Execute
    got = mcnemar_exact(a, b)
    # Assert: two-sided, 2 * P(X <= 1), X ~ Binomial(8, 1/2) = 2 * (1 + 8) / 256
    assert (got.only_a_correct, got.only_b_correct, got.n) == (1, 7, 20)
    assert got.p_value == pytest.approx(18 / 256, abs=1e-12)


def test_mcnemar_without_discordant_pairs_is_one():
    # Prepare / Execute
    got = mcnemar_exact(np.array([1, 0, 1], bool), np.array([1, 0, 1], bool))
    # Assert
    assert got.p_value == 1.0


def test_permutation_p_is_one_for_identical_groups_and_small_for_different_ones():
    # Prepare
    rng = np.random.default_rng(0)
    same = (rng.random((60, 2)) < 0.7).astype(float)
    good, poor = (rng.random((60, 2)) < 0.9).astype(float), (rng.random((60, 2)) < 0.3).astype(float)
    # Execute
    identical = permutation_test(same, same.copy(), 2000, np.random.default_rng(1))
    different = permutation_test(good, poor, 2000, np.random.default_rng(1))
    # Assert
    assert identical.difference == 0 and identical.p_value == pytest.approx(1.0)
    assert different.p_value < 0.01 and different.difference > 0.4


def test_permutation_test_is_seeded():
    # Prepare
    rng = np.random.default_rng(2)
    a, b = (rng.random((30, 2)) < 0.7).astype(float), (rng.random((30, 1)) < 0.6).astype(float)
    # Execute
    first = permutation_test(a, b, 500, np.random.default_rng(3))
    again = permutation_test(a, b, 500, np.random.default_rng(3))
    # Assert
    assert first == again and 0 < first.p_value < 1


def test_bad_reads_rows_are_all_named_by_row_and_case():
    # Prepare
    pred, reads, _, _ = _study()
    reads.loc[1, "case_id"] = "C999"
    reads.loc[2, "label"] = "sarcoidosis"
    reads.loc[3, "with_ai"] = "maybe"
    reads.loc[5, ["case_id", "reader", "with_ai"]] = reads.loc[4, ["case_id", "reader", "with_ai"]].to_numpy()
    # Execute
    with pytest.raises(ReadsError) as err:
        load_reader_data(pred, reads)
    # Assert
    message = str(err.value)
    assert "reads row 2 (case C999): unknown case_id 'C999'" in message
    assert "reads row 3 (case C2): unknown label 'sarcoidosis'" in message
    assert "reads row 4 (case C3): with_ai must be yes or no, got 'maybe'" in message
    assert "reads row 6 (case C4): reader 'R1' already read this case" in message


def test_bad_prediction_tables_are_refused_with_the_case():
    # Prepare
    pred, reads, _, _ = _study()
    bad_label = pred.assign(label=pred["label"].where(pred.index != 3, "cyst"))
    no_model = pred[["case_id", "label"]]
    # Execute / Assert
    with pytest.raises(ReadsError, match=r"predictions row 4 \(case C3\): unknown label 'cyst'"):
        load_reader_data(bad_label, reads)
    with pytest.raises(ReadsError, match="need a 'predicted' column"):
        load_reader_data(no_model, reads)


def test_analysis_counts_match_the_inputs():
    # Prepare
    pred, reads, y, model_pred = _study()
    data = load_reader_data(pred, reads)
    # Execute
    report = analyse_readers(data, n_resamples=200, n_permutations=300, seed=4)
    # Assert
    model_row = report.performance[0]
    assert model_row["reader"] == MODEL and model_row["figures"]["accuracy"].point == np.mean(model_pred == y)
    r3_no = reads[(reads.reader == "R3") & (reads.with_ai == "no")]
    r3_ok = r3_no["label"].map(CLASSES.index).to_numpy() == y
    test = next(t for t in report.mcnemar if t.a == MODEL and t.b == "R3 (without AI)")
    assert (test.only_a_correct, test.only_b_correct) == (int(np.sum((model_pred == y) & ~r3_ok)),
                                                          int(np.sum((model_pred != y) & r3_ok)))
    pairs = {(t.a, t.b) for t in report.permutation}
    assert (MODEL, "junior (without AI)") in pairs and ("senior (without AI)", "senior (with AI)") in pairs


def test_cli_prints_markdown_and_writes_the_file(tmp_path, capsys):
    # Prepare
    pred, reads, _, _ = _study()
    pred.to_csv(tmp_path / "pred.csv", index=False)
    reads.to_csv(tmp_path / "reads.csv", index=False)
    out = tmp_path / "report.md"
    args = ["readers", "--predictions", str(tmp_path / "pred.csv"), "--reads", str(tmp_path / "reads.csv"),
            "--out", str(out), "--seed", "1", "--resamples", "100", "--permutations", "100"]
    # Execute
    code = main(args)
    printed = capsys.readouterr().out
    # Assert
    assert code == 0 and out.read_text() in printed
    assert "| CLA-HDM | — | — | 40 |" in printed and "McNemar" in printed and "| senior (without AI) |" in printed


def test_cli_reports_bad_reads_and_fails(tmp_path, capsys):
    # Prepare
    pred, reads, _, _ = _study()
    reads.loc[0, "with_ai"] = "sometimes"
    pred.to_csv(tmp_path / "pred.csv", index=False)
    reads.to_csv(tmp_path / "reads.csv", index=False)
    # Execute
    code = main(["readers", "--predictions", str(tmp_path / "pred.csv"), "--reads", str(tmp_path / "reads.csv")])
    # Assert
    assert code == 2 and "reads row 1 (case C0): with_ai must be yes or no" in capsys.readouterr().err
