"""The report's sections, each from a run's saved records (server/run_dir.py): the run, Table 1,
every figure per site, site failures, privacy, training curves, the comparison of modes, and the
optional faithfulness and reader-study inputs. Nothing per case exists at the server, so no
section has per-case content.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from matplotlib.figure import Figure

from common.formatting import figure_ci, format_ci, is_missing, md_table
from common.labels import CLASSES, LEVELS, LOCALISER
from server import paper_figures as paper
from server import run_dir as rd
from server.report_format import (
    Block,
    fmt,
    heading,
    html_table,
    markdown_to_html,
    plot_block,
    png_bytes,
    table_block,
    text_block,
)

MODEL_ROWS: tuple[tuple[str, str], ...] = tuple((lv.key, f"Sub-model {i + 1} ({lv.title})")
                                                for i, lv in enumerate(LEVELS)) + (("clahdm", "CLA-HDM"),)
# Table 1's columns: (header, figure of a sub-model, figure of CLA-HDM or None when it has none).
TABLE1_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("AUC", "auc", "auc_micro"), ("ACC", "accuracy", "accuracy"),
    ("SENS", "sensitivity", None), ("SPEC", "specificity", None))
FIGURE_NAMES: dict[str, str] = {
    "auc": "AUC", "accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
    "ppv": "PPV", "npv": "NPV", "f1": "F1", "mcc": "MCC", "lr_pos": "LR+", "lr_neg": "LR−"}


@dataclass
class RunRecords:
    """What the server saved about one run (see server/run_dir.py)."""

    path: Path
    info: dict
    rounds: list[dict]
    evaluations: dict[str, dict]
    # Sites that failed to join, failed or stayed silent in a round or failed their evaluation.
    problems: list[str]

    @property
    def mode(self) -> str:
        return str(self.info.get("mode", "federated"))

def load_run(path: Path) -> RunRecords:
    """Read one run folder's records (missing files read as empty)."""
    path = Path(path)
    return RunRecords(path, rd.read_json(path / rd.RUN_FILE, {}) or {}, rd.read_jsonl(path / rd.METRICS_FILE),
                      rd.read_evaluations(path), rd.run_problems(path))


def run_summary(run: RunRecords, modes: Iterable[str] = ()) -> list[Block]:
    """Settings of the run and its sites' roles and aggregate case counts."""
    info = run.info
    facts = [("mode", ", ".join(modes) if modes else run.mode), ("protocol", info.get("protocol", "n/a")),
             ("profile", info.get("profile", "n/a")), ("strategy", info.get("strategy", "n/a")),
             ("shared rounds", info.get("shared_rounds", 0)),
             ("rounds per sub-model", info.get("rounds", "n/a")), ("local epochs", info.get("local_epochs", "n/a")),
             ("started", info.get("started", "n/a")), ("finished", info.get("finished") or "not finished")]
    blocks = [heading("Run"), table_block(["setting", "value"], [[k, fmt(v)] for k, v in facts])]
    sites = info.get("sites", [])
    if sites:
        keys = [f"train.{lv.key}" for lv in LEVELS] + ["train.total", "heldout.total"]
        rows = [[s.get("name", "?"), s.get("role", "?"), *(fmt(s.get("counts", {}).get(k)) for k in keys)]
                for s in sites]
        blocks.append(table_block(["site", "role", "train SM1", "train SM2", "train SM3", "train total",
                                   "held-out"], rows))
    return blocks


def site_order(evaluations: Mapping[str, dict]) -> list[str]:
    """Sites in paper-cohort order first (hospital1..3), then the rest by name."""
    known = [c.site for c in paper.COHORTS if c.site in evaluations]
    return known + sorted(s for s in evaluations if s not in known)


def table1_cell(metrics: Mapping[str, float], model: str, column: tuple[str, str, str | None]) -> str:
    _, sub_figure, clahdm_figure = column
    figure = clahdm_figure if model == "clahdm" else sub_figure
    return "—" if figure is None else figure_ci(metrics, f"{model}.{figure}")


def paper_cell(model: str, site: str) -> str:
    figure = paper.paper_auc(model, site)
    if figure is None:
        return "—"
    return format_ci(*figure)


def table1(run: RunRecords) -> list[Block]:
    """Table 1's layout: rows sub-models 1–3 and CLA-HDM, a column group per site cohort.

    Sites that stand for one of the paper's cohorts get a 'paper AUC' column beside ours.
    """
    sites = site_order(run.evaluations)
    blocks = [heading("Held-out performance (Table 1 layout)")]
    if not sites:
        return blocks + [text_block("No site returned an evaluation.")]
    groups, header, md_header = [], ["model"], ["model"]
    for site in sites:
        record = run.evaluations[site]
        columns = [c[0] for c in TABLE1_COLUMNS] + (["paper AUC"] if site in paper.COHORT_BY_SITE else [])
        groups.append((f"{site} ({record.get('role', '?')}, n={record.get('n_cases', 0)})", len(columns)))
        header += columns
        md_header += [f"{site} {c}" for c in columns]  # Markdown has no column groups
    rows = []
    for model, title in MODEL_ROWS:
        row = [title]
        for site in sites:
            metrics = run.evaluations[site].get("metrics", {})
            row += [table1_cell(metrics, model, column) for column in TABLE1_COLUMNS]
            if site in paper.COHORT_BY_SITE:
                row.append(paper_cell(model, site))
        rows.append(row)
    protocol = run.info.get("protocol", "unknown")
    exact = "holds exactly" if protocol == "paper" else "is approximate (different cases)"
    cohorts = "; ".join(f"{c.site} held-out ↔ {c.title}, n={c.n_cases}" for c in paper.COHORTS if c.site in sites)
    notes = ["Cohorts: " + "; ".join(f"**{s}**: {run.evaluations[s].get('cohort', 'held-out cases')}" for s in sites)
             + ".",
             "Figures are point estimates with 95% percentile bootstrap CIs computed at each site. Sub-models are "
             "scored on their own cases (all / benign / malignant); CLA-HDM's AUC is the 4-class micro average and "
             "its accuracy that of the gated prediction; sensitivity and specificity are the positive class's "
             "(malignant, tuberculous, metastatic).",
             f"**paper** columns are the published figures (sub-model AUCs without CI). Correspondence: {cohorts or 'none'}."
             f" It is exact only under `--protocol paper`; this run used `--protocol {protocol}`, so it {exact}."]
    return blocks + [Block(md_table(md_header, rows), html_table(header, rows, [("", 1)] + groups)),
                     text_block("\n\n".join(notes))]


def site_details(run: RunRecords) -> list[Block]:
    """Every figure of every site: sub-models' ten figures, CLA-HDM's one-vs-rest AUCs, confusion matrices."""
    sites = [s for s in site_order(run.evaluations) if run.evaluations[s].get("metrics", {}).get("n_cases")]
    if not sites:
        return []
    blocks = [heading("All figures per site"), heading("CLA-HDM", 3)]
    rows = [["micro AUC", *(figure_ci(run.evaluations[s]["metrics"], "clahdm.auc_micro") for s in sites)],
            ["macro AUC", *(figure_ci(run.evaluations[s]["metrics"], "clahdm.auc_macro") for s in sites)]]
    rows += [[f"AUC {c} vs rest", *(figure_ci(run.evaluations[s]["metrics"], f"clahdm.auc_ovr.{c}") for s in sites)]
             for c in CLASSES]
    rows.append(["accuracy (gated)", *(figure_ci(run.evaluations[s]["metrics"], "clahdm.accuracy") for s in sites)])
    blocks.append(table_block(["figure", *sites], rows))
    for i, level in enumerate(LEVELS):
        blocks.append(heading(f"Sub-model {i + 1}: {level.title} (positive: {level.names[1]})", 3))
        rows = [[FIGURE_NAMES[f], *(figure_ci(run.evaluations[s]["metrics"], f"{level.key}.{f}") for s in sites)]
                for f in FIGURE_NAMES]
        blocks.append(table_block(["figure", *sites], rows))
    blocks.append(heading("Confusion matrices (rows: true class, columns: gated prediction)", 3))
    blocks.append(text_block("A site leaves out cells of fewer cases than its `min_cell` (shown as `<min`), and "
                             "returns counts only for a cohort below its `min_cohort`."))
    for site in sites:
        metrics = run.evaluations[site]["metrics"]
        if metrics.get("withheld"):
            blocks.append(text_block(f"**{site}**: figures withheld by the site (cohort below its minimum)"))
            continue
        rows = [[c, *(fmt(metrics[f"clahdm.cm.{i}.{j}"], 0) if f"clahdm.cm.{i}.{j}" in metrics else "<min"
                      for j in range(len(CLASSES)))]
                for i, c in enumerate(CLASSES)]
        blocks += [text_block(f"**{site}**"), table_block(["true \\ predicted", *CLASSES], rows)]
    return blocks


def failures_block(run: RunRecords) -> list[Block]:
    """Every site failure of the run, so a figure computed without a site is never read as complete."""
    if not run.problems:
        return []
    return [heading("Site failures", 3), table_block(["what happened"], [[p] for p in run.problems])]


def privacy_block(run: RunRecords) -> list[Block]:
    """The differential privacy the published weights carry, when the run used it."""
    privacy = run.info.get("privacy")
    if not privacy:
        return []
    rows = [[site, str(n), fmt(privacy["epsilon"][site], 2)] for site, n in sorted(privacy["releases"].items())]
    return [heading("Differential privacy", 3),
            text_block(f"Site-level Gaussian mechanism on every round's average: noise multiplier "
                       f"{privacy['noise_multiplier']:g}, clip norm {privacy['clip_norm']:g}, "
                       f"delta {privacy['delta']:g}. Epsilon is an upper bound (Renyi-DP accountant); it "
                       "covers the weights only, not the figures the sites return."),
            table_block(["site", "rounds released", "epsilon"], rows)]


def training_curves(run: RunRecords, title: str = "Training") -> list[Block]:
    """Per-round aggregated loss and accuracy of each sub-model (plot) and each level's last round (table)."""
    if not run.rounds:
        return []
    by_level: dict[str, list[dict]] = {}
    for record in run.rounds:
        by_level.setdefault(str(record.get("level")), []).append(record)
    fig = Figure(figsize=(9, 3.6), dpi=100)
    axes = fig.subplots(1, 2)
    for level, records in by_level.items():
        records = sorted(records, key=lambda r: r.get("round", 0))
        rounds = [r.get("round") for r in records]
        axes[0].plot(rounds, [r.get("loss", np.nan) for r in records], marker="o", label=level)
        axes[1].plot(rounds, [r.get("accuracy", np.nan) for r in records], marker="o", label=level)
    axes[0].set(xlabel="round", ylabel="training loss (weighted mean over sites)")
    axes[1].set(xlabel="round", ylabel="training accuracy", ylim=(0, 1.02))
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    rows = []
    for level, records in by_level.items():
        last = max(records, key=lambda r: r.get("round", 0))
        rounds = len(records)
        mean_seconds = float(np.mean([r.get("round_seconds", np.nan) for r in records]))
        sent = last.get("bytes_sent_per_site")
        rows.append([level, rounds, fmt(last.get("loss")), fmt(last.get("accuracy")), fmt(last.get("num_examples")),
                     ", ".join(sorted(last.get("sites", {}))) or "n/a", fmt(mean_seconds, 1),
                     "n/a" if is_missing(sent) else f"{sent / 1e6:.1f}"])
    name = re.sub(r"\W+", "_", title).strip("_").lower()
    blocks = [heading(title, 3 if title != "Training" else 2),
              plot_block(name, png_bytes(fig), f"{run.mode}: training loss and accuracy per round"),
              table_block(["phase", "rounds", "last loss", "last accuracy", "examples", "sites",
                           "mean round s", "MB sent per site"], rows)]
    if LOCALISER in by_level:
        blocks.append(text_block(f"The {LOCALISER}'s loss is its box loss (L1 + generalised IoU) and its accuracy "
                                 "the share of training boxes it found with IoU >= 0.5; `python -m "
                                 "simulation.localiser_eval --run RUN` scores it on the held-out cohorts."))
    return blocks


def comparison(runs: Mapping[str, RunRecords]) -> list[Block]:
    """Federated vs pooled vs local on the same held-out cohorts: micro AUC with CI per site and mode."""
    modes = list(runs)
    sites = site_order({s: {} for r in runs.values() for s in r.evaluations})
    if not sites:
        return []

    def metrics(mode: str, site: str) -> Mapping[str, float]:
        return runs[mode].evaluations.get(site, {}).get("metrics", {})

    rows = [[site, *(figure_ci(metrics(mode, site), "clahdm.auc_micro") for mode in modes)] for site in sites]
    fig = Figure(figsize=(max(5.0, 1.6 * len(sites) + 2), 3.8), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(modes))
    for k, mode in enumerate(modes):
        points = np.array([[metrics(mode, s).get(key, np.nan) for key in
                            ("clahdm.auc_micro", "clahdm.auc_micro.low", "clahdm.auc_micro.high")] for s in sites],
                          dtype=float)
        x = np.arange(len(sites)) - 0.4 + width * (k + 0.5)
        err = np.abs(np.nan_to_num(np.stack([points[:, 0] - points[:, 1], points[:, 2] - points[:, 0]])))
        ax.errorbar(x, points[:, 0], yerr=err, fmt="o", capsize=4, label=mode)
    ax.set_xticks(range(len(sites)), sites)
    ax.set(ylabel="CLA-HDM micro AUC (95% CI)", ylim=(0, 1.02))
    ax.axhline(0.5, color="0.7", lw=1, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    note = ("Each mode is evaluated on the same held-out cohorts. federated: FedAvg across the training sites; "
            "pooled: one model trained on all training sites' cases together (the centralised upper reference); "
            "local: each training site's model trained on its own cases only, evaluated on that site's held-out "
            "cohort (evaluate-only sites have no local model: n/a).")
    return [heading("Federated vs pooled vs local"), table_block(["site", *modes], rows),
            plot_block("comparison_micro_auc", png_bytes(fig), "CLA-HDM micro AUC per site and training mode"),
            text_block(note)]


def nested_tables(data: Mapping[str, Any]) -> list[Block]:
    """A nested dict as tables: one per top-level entry; rows = the inner path, columns = the leaf keys.

    A top-level entry that is a plain value, or a dict of plain values, becomes rows of a
    two-column table.
    """
    def leaves(value: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        if isinstance(value, Mapping):
            return [leaf for k, v in value.items() for leaf in leaves(v, path + (str(k),))]
        return [(path, value)]

    def cell(value: Any) -> str:
        return fmt(float(value)) if isinstance(value, float) else str(value)

    blocks: list[Block] = []
    scalars = [[str(k), cell(v)] for k, v in data.items() if not isinstance(v, Mapping)]
    if scalars:
        blocks.append(table_block(["entry", "value"], scalars))
    for key, value in data.items():
        if not isinstance(value, Mapping):
            continue
        items = leaves(value, ())
        if all(len(path) == 1 for path, _ in items):
            blocks += [text_block(f"**{key}**"), table_block(["entry", "value"], [[p[0], cell(v)] for p, v in items])]
            continue
        rows: dict[str, dict[str, Any]] = {}
        columns: list[str] = []
        for path, leaf in items:
            rows.setdefault(" / ".join(path[:-1]), {})[path[-1]] = leaf
            if path[-1] not in columns:
                columns.append(path[-1])
        table = [[row, *(cell(v[c]) if c in v else "" for c in columns)] for row, v in rows.items()]
        blocks += [text_block(f"**{key}**"), table_block(["", *columns], table)]
    return blocks


def faithfulness(data: Mapping[str, Any] | None) -> list[Block]:
    if not data:
        return []
    intro = ("Heatmap faithfulness on the synthetic cases, whose node and vessel masks are known "
             f"(from `{rd.FAITHFULNESS_FILE}`).")
    return [heading("Heatmap faithfulness"), text_block(intro), *nested_tables(data)]


def readers(markdown: str | None) -> list[Block]:
    """The reader study exactly as `clafed readers` wrote it."""
    if not markdown:
        return []
    return [heading("Reader study"), Block(markdown.strip(), markdown_to_html(markdown))]
