"""The federation report: every section from saved records, self-contained HTML, `clafed report`."""
from __future__ import annotations

import base64
import functools
import json
import re

import numpy as np
import pytest

from client.evaluation import aggregate_figures
from common import formatting
from common.cli import main
from server import report, report_format
from server import run_dir as rd
from server.paper_figures import CLAHDM_MICRO_AUC, COHORT_BY_SITE, paper_auc

SITES = (("hospital1", "train"), ("hospital2", "train"), ("hospital3", "evaluate"))
READERS_MD = """## Diagnostic performance (95% CI, 1000 bootstrap resamples)

Accuracy: 4 classes. Sensitivity / specificity: benign vs malignant (malignant positive).

| reader | group | with AI | n | accuracy | sensitivity | specificity |
|---|---|---|---|---|---|---|
| R1 | junior | no | 40 | 0.550 (0.400–0.700) | 0.800 (0.650–0.920) | 0.600 (0.400–0.800) |
| CLA-HDM | — | — | 40 | 0.700 (0.550–0.825) | 0.900 (0.780–1.000) | 0.700 (0.500–0.880) |
"""
FAITHFULNESS = {
    "model": {"reactive": {"bus_energy": 0.61, "cdfi_energy": 0.55, "n": 3},
              "metastatic": {"bus_energy": 0.72, "cdfi_energy": 0.48, "n": 2}},
    "gaussian": {"reactive": {"bus_energy": 0.40, "cdfi_energy": 0.41, "n": 3}},
    "settings": {"cohort": "heldout", "cases": 5},
}


@functools.cache
def site_metrics(seed: int, n: int = 40, skill: float = 1.5) -> dict[str, float]:
    """Real aggregate figures (the keys a site returns) of a synthetic cohort."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n // 4)
    logits = rng.normal(size=(n, 4)) + skill * np.eye(4)[y]
    soft = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    levels = np.stack([soft[:, 2:].sum(1), soft[:, 1] / soft[:, :2].sum(1), soft[:, 3] / soft[:, 2:].sum(1)], 1)
    return aggregate_figures(y, soft, soft, levels, n_resamples=100, seed=seed)


def make_run(folder, mode: str = "federated", protocol: str = "paper", seed: int = 0, rounds: int = 3):
    """A run directory as the server writes it: run.json, metrics.jsonl, evaluation/SITE.json."""
    sites = [{"name": name, "role": role, "counts": {"train.submodel1": 30, "train.submodel2": 12,
                                                      "train.submodel3": 18, "train.total": 30, "heldout.total": 40}}
             for name, role in SITES]
    rd.write_json(folder / rd.RUN_FILE, {"mode": mode, "protocol": protocol, "profile": "cpu", "rounds": rounds,
                                         "local_epochs": 1, "strategy": "fedavg", "sites": sites,
                                         "started": "2026-01-01T10:00:00", "finished": "2026-01-01T11:00:00"})
    records = []
    for level in ("submodel1", "submodel2", "submodel3"):
        for r in range(1, rounds + 1):
            records.append({
                "level": level, "round": r, "loss": 0.7 / r, "accuracy": 0.5 + 0.1 * r, "num_examples": 60,
                "sites": {"hospital1": {"num_examples": 30, "loss": 0.7 / r, "accuracy": 0.5, "train_seconds": 2.0},
                          "hospital2": {"num_examples": 30, "loss": 0.6 / r, "accuracy": 0.6, "train_seconds": 2.5}},
                "round_seconds": 5.0, "compute_seconds": 4.5, "bytes_sent_per_site": 2.5e6,
                "bytes_received_per_site": 2.5e6})
    (folder / rd.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    validation = [{"level": r["level"], "round": r["round"], "n": 20.0, "loss": 0.6 / r["round"], "accuracy": 0.7,
                   "auc": 0.6 + 0.1 * r["round"], "sites": {"hospital1": 10, "hospital2": 10}} for r in records]
    (folder / rd.VALIDATION_FILE).write_text("".join(json.dumps(r) + "\n" for r in validation))
    for k, (name, role) in enumerate(SITES):
        metrics = site_metrics(seed * 10 + k)
        rd.write_json(rd.evaluation_path(folder, name), {"site": name, "role": role, "cohort": f"{name} held-out",
                                                         "n_cases": int(metrics["n_cases"]), "metrics": metrics})
    return folder


@pytest.fixture
def comparison(tmp_path):
    for seed, mode in enumerate(rd.MODES):
        make_run(tmp_path / mode, mode, seed=seed)
    (tmp_path / rd.FAITHFULNESS_FILE).write_text(json.dumps(FAITHFULNESS))
    (tmp_path / rd.READERS_FILE).write_text(READERS_MD)
    rd.write_json(tmp_path / rd.REFERENCES_FILE, {"hospital1": {"n_cases": 40.0, "histogram": 0.70, "drawn_feature": 0.95},
                                                  "hospital2": {"n_cases": 40.0, "histogram": 0.65}})
    return tmp_path


def test_report_has_every_section_from_saved_results(comparison):
    md_path, html_path = report.write_report(comparison)
    md = md_path.read_text()
    for section in ("# clafed report", "## Run", "## Held-out performance (Table 1 layout)", "## All figures per site",
                    "## Federated vs pooled vs local", "## Training", "### Training: pooled",
                    "## Heatmap faithfulness", "## Reader study"):
        assert section in md, section
    assert READERS_MD.strip() in md  # the reader study verbatim
    federated = rd.read_evaluations(comparison / "federated")
    # Table 1: ours with CIs beside the paper's figures for the corresponding cohort.
    assert formatting.figure_ci(federated["hospital2"]["metrics"], "submodel3.specificity") in md
    assert "0.873 (0.838–0.908)" in md and "0.963" in md and "hospital1 paper AUC" in md
    assert "exact only under `--protocol paper`" in md and "holds exactly" in md
    # Comparison: every mode's micro AUC on each site.
    for mode in rd.MODES:
        metrics = rd.read_evaluations(comparison / mode)["hospital3"]["metrics"]
        assert formatting.figure_ci(metrics, "clahdm.auc_micro") in md
    # Faithfulness as a table: one row per class, one column per figure.
    assert re.search(r"\| metastatic \| 0\.720 \| 0\.480 \| 2 \|", md)
    for name in re.findall(r"\]\((report_plots/[^)]+)\)", md):
        assert (comparison / name).read_bytes()[:4] == b"\x89PNG"


def test_html_is_self_contained(comparison):
    _, html_path = report.write_report(comparison)
    page = html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    # The comparison, and the training and the federated-validation curves of each of the three modes.
    assert len(images) == 7
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert '<th colspan="5">hospital1' in page  # Table 1's column group per site (4 figures + paper)
    assert "<td>CLA-HDM</td>" in page and "<h2>Reader study</h2>" in page


def test_single_run_without_optional_inputs(tmp_path):
    run = make_run(tmp_path / "run", protocol="federated")
    (run / "evaluation_failures.json").write_text(json.dumps({"hospital4": "no reply within 600 s"}))
    md_path, html_path = report.write_report(run)
    md = md_path.read_text()
    assert "## Training" in md and "Federated vs pooled vs local" not in md
    assert "Heatmap faithfulness" not in md and "Reader study" not in md
    assert "is approximate" in md and "hospital4" in md and "no reply within 600 s" in md
    assert html_path.read_text().count("<img") == 2  # training and validation curves


def test_local_mode_training_is_read_from_each_sites_model(comparison):
    local = comparison / "local"
    (local / rd.METRICS_FILE).unlink()  # the local baseline logs rounds per site model
    make_run(local / "models" / "hospital1", "local")
    md = report.write_report(comparison)[0].read_text()
    assert "### Training: local, hospital1" in md and "### Training: local\n" not in md


def test_sites_without_figures_and_unknown_sites_render_as_na(tmp_path):
    run = make_run(tmp_path / "run")
    rd.write_json(rd.evaluation_path(run, "clinicZ"), {"site": "clinicZ", "role": "evaluate", "cohort": "all",
                                                       "n_cases": 0, "metrics": {"n_cases": 0.0}})
    md = report.write_report(run)[0].read_text()
    assert "clinicZ" in md and "n/a" in md
    assert paper_auc("clahdm", "clinicZ") is None
    assert paper_auc("clahdm", "hospital1") == CLAHDM_MICRO_AUC["internal"]
    assert COHORT_BY_SITE["hospital3"].key == "external2"


def test_markdown_to_html_subset_escapes_text():
    page = report_format.markdown_to_html("## A <b>\n\nText with `code` and **bold**.\n\n| x | y |\n|---|---|\n"
                                   "| 1 | <script> |\n\n- one\n- two")
    assert "<h2>A &lt;b&gt;</h2>" in page and "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "<td>&lt;script&gt;</td>" in page and "<ul><li>one</li><li>two</li></ul>" in page


def test_report_command(comparison, tmp_path, capsys):
    assert main(["report", str(comparison), "--out-dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "report.md").is_file()
    assert "report.html" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_learning_sections_put_the_model_between_its_references(comparison):
    from server.report_learning import gated_recall, headroom

    text = "\n".join(b.md for b in report.build_blocks(comparison))
    assert "## Learning against the references" in text and "### Recall per class (gated prediction)" in text
    assert "### Federated validation: pooled" in text
    federated = rd.read_evaluations(comparison / "federated")["hospital1"]["metrics"]
    share = headroom(federated["clahdm.auc_macro"], 0.70, 0.95)
    assert f"{100 * share:.0f} %" in text  # the share of the headroom this run closed at hospital1
    row = next(line for line in text.splitlines() if line.startswith("| hospital2 | 40 |"))
    assert row.endswith("| n/a | n/a | n/a | n/a |")  # no ceiling for hospital2, so no headroom either
    recall = gated_recall(federated)
    cm = np.array([[federated[f"clahdm.cm.{i}.{j}"] for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(recall, np.diag(cm) / cm.sum(1))


@pytest.mark.parametrize("recorded, shown", [
    ("kept at the trained values (thresholds=fixed)", "Decision thresholds, kept at the trained values (thresholds=fixed):"),
    ("chosen by Youden's J of each level on pooled validation scores", "Decision thresholds, chosen by Youden's J"),
    # run.json of runs before the thresholds rule said only what chose them
    ("balanced accuracy of the gated answer on pooled validation scores",
     "Decision thresholds, chosen by the balanced accuracy of the gated answer")])
def test_the_recall_section_says_how_the_thresholds_were_set(comparison, recorded, shown):
    from server.report_learning import recall_block
    from server.report_sections import RunRecords

    folder = comparison / "federated"
    info = {**rd.read_json(folder / rd.RUN_FILE), "thresholds_chosen_by": recorded,
            "decision_thresholds": {"submodel1": 0.5, "submodel2": 0.5, "submodel3": 0.5}}
    run = RunRecords(folder, info, [], rd.read_evaluations(folder), [])
    text = "\n".join(b.md for b in recall_block(run))
    assert shown in text and "submodel1 0.500" in text, text
