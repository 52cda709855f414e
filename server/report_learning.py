"""Report sections on how well the model learned: against its references, per class, per round.

- References: CLA-HDM's macro AUC beside the histogram floor and the drawn-feature ceiling measured
  on the same split (references.json, written by the simulation), and the share of that headroom
  the model closed.
- Gated recall per class, from the confusion counts each site returned.
- Federated validation curves (validation.jsonl): the pooled validation loss and AUC of every
  round's global network, per phase, beside the training loss.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from common.labels import CLASSES
from server import run_dir as rd
from server.report_format import Block, fmt, heading, plot_block, png_bytes, table_block, text_block
from server.report_sections import RunRecords, site_order


def gated_recall(metrics: Mapping[str, float]) -> list[float]:
    """Recall of each class under the gated prediction (NaN for a class without cases, or whose
    row lost a cell to the site's small-number rule)."""
    out = []
    for i in range(len(CLASSES)):
        row = [float(metrics.get(f"clahdm.cm.{i}.{j}", float("nan"))) for j in range(len(CLASSES))]
        out.append(row[i] / sum(row) if sum(row) else float("nan"))
    return out


def headroom(model_auc: float, floor: float, ceiling: float) -> float:
    """Share of the gap between the histogram floor and the drawn-feature ceiling the model closed."""
    gap = ceiling - floor
    return float("nan") if gap <= 0 or np.isnan(model_auc) else (model_auc - floor) / gap


def references_block(runs: Mapping[str, RunRecords], references: Mapping[str, Mapping[str, float]]) -> list[Block]:
    """Per site: histogram floor, each mode's CLA-HDM macro AUC, the ceiling and the share closed."""
    if not references:
        return []
    modes = list(runs)
    sites = [s for s in site_order({s: {} for r in runs.values() for s in r.evaluations}) if s in references]
    if not sites:
        return []
    has_ceiling = any("drawn_feature" in references[s] for s in sites)
    header = ["site", "n", "histogram LR (floor)", *(f"CLA-HDM {m}" for m in modes)]
    if has_ceiling:
        header += ["drawn-feature LR (ceiling)", *(f"headroom closed, {m}" for m in modes)]
    rows = []
    for site in sites:
        ref = references[site]
        aucs = [float(runs[m].evaluations.get(site, {}).get("metrics", {}).get("clahdm.auc_macro", np.nan)) for m in modes]
        row = [site, fmt(ref.get("n_cases"), 0), fmt(ref["histogram"]), *(fmt(a) for a in aucs)]
        if has_ceiling:
            ceiling = ref.get("drawn_feature", np.nan)
            row += [fmt(ceiling), *(_percent(headroom(a, ref["histogram"], ceiling)) for a in aucs)]
        rows.append(row)
    note = ("Macro one-vs-rest AUC on each site's held-out cohort. Both references are logistic regressions fitted "
            "on the training sites' pre-hold-out cases: the floor on global image statistics (grey and colour "
            "histograms), the ceiling on the features the synthetic generator drew for each case (what a perfect "
            "reader would record). Headroom closed = (CLA-HDM − floor) / (ceiling − floor).")
    return [heading("Learning against the references"), table_block(header, rows), text_block(note)]


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.0f} %"


def recall_block(run: RunRecords) -> list[Block]:
    """Per-class recall of the gated 4-class prediction at every site."""
    sites = [s for s in site_order(run.evaluations) if run.evaluations[s].get("metrics", {}).get("n_cases")]
    if not sites:
        return []
    rows = []
    for site in sites:
        metrics = run.evaluations[site]["metrics"]
        rows.append([site, *(fmt(r, 2) for r in gated_recall(metrics))])
    chosen = run.info.get("decision_thresholds") or {}
    note = ("Share of each class's held-out cases that the gated prediction names correctly (the hierarchy's "
            "answer a clinician reads).")
    if chosen:
        how = run.info.get("thresholds_chosen_by", "chosen by Youden's J of each level on pooled validation scores")
        if not how.startswith(("chosen", "kept")):  # the wording of runs before the thresholds rule
            how = f"chosen by the {how}"
        note += (f" Decision thresholds, {how}: "
                 + ", ".join(f"{key} {value:.3f}" for key, value in chosen.items()) + ".")
    return [heading("Recall per class (gated prediction)", 3), table_block(["site", *CLASSES], rows), text_block(note)]


def validation_curves(run: RunRecords, title: str = "Federated validation") -> list[Block]:
    """Training loss and pooled validation loss/AUC per round of each phase."""
    records = rd.read_jsonl(run.path / rd.VALIDATION_FILE)
    if not records:
        return []
    phases: dict[str, list[dict]] = {}
    for record in records:
        phases.setdefault(str(record["level"]), []).append(record)
    training: dict[str, dict[int, float]] = {}
    for record in run.rounds:
        training.setdefault(str(record["level"]), {})[int(record["round"])] = float(record.get("loss", np.nan))
    fig = Figure(figsize=(9, 3.6), dpi=100)
    axes = fig.subplots(1, 2)
    rows = []
    for k, (phase, items) in enumerate(phases.items()):
        items = sorted(items, key=lambda r: r["round"])
        rounds = [r["round"] for r in items]
        colour = f"C{k}"
        axes[0].plot(rounds, [r.get("loss", np.nan) for r in items], marker="o", color=colour, label=f"{phase} validation")
        train = training.get(phase, {})
        axes[0].plot(sorted(train), [train[r] for r in sorted(train)], ls="--", color=colour, alpha=0.6,
                     label=f"{phase} training")
        axes[1].plot(rounds, [r.get("auc", np.nan) for r in items], marker="o", color=colour, label=phase)
        best = max(items, key=lambda r: np.nan_to_num(r.get("auc", np.nan), nan=-1.0))
        rows.append([phase, len(items), fmt(items[-1].get("auc")), fmt(items[-1].get("loss")),
                     f"{fmt(best.get('auc'))} (round {best['round']})", fmt(items[-1].get("n"), 0)])
    axes[0].set(xlabel="round", ylabel="loss (training includes auxiliary heads)")
    axes[1].set(xlabel="round", ylabel="pooled validation AUC", ylim=(0.4, 1.0))
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    note = ("Each round's global network scored on the training sites' validation cases (a stratified share of "
            "their pre-hold-out cases that never trains). Sites return score histograms, so the AUC is pooled over "
            "sites without any per-case value leaving a site. The shared phase's AUC is the 4-class macro average.")
    name = "validation_" + "".join(c if c.isalnum() else "_" for c in title.lower())
    return [heading(title, 3), plot_block(name, png_bytes(fig), f"{run.mode}: validation per round"),
            table_block(["phase", "rounds", "last AUC", "last loss", "best AUC", "validation cases"], rows),
            text_block(note)]


def learning_blocks(run_dir: Path, primary: RunRecords, compared: Mapping[str, RunRecords]) -> list[Block]:
    """The learning sections, for a single run or a comparison of modes."""
    runs = dict(compared) if compared else {primary.mode: primary}
    references = rd.read_json(Path(run_dir) / rd.REFERENCES_FILE, {}) or {}
    blocks = references_block(runs, references) + recall_block(primary)
    for mode, run in runs.items():
        blocks += validation_curves(run, f"Federated validation: {mode}" if compared else "Federated validation")
    return blocks
