"""The table `clafed simulate` ends with: one line per site cohort (and per mode when compared)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

from common.formatting import figure_ci, format_ci
from server import run_dir as rd

log = logging.getLogger("clafed.simulation")

COLUMNS = (("CLA-HDM micro AUC", "clahdm.auc_micro"), ("macro", "clahdm.auc_macro"), ("ACC", "clahdm.accuracy"),
           ("SM1 AUC", "submodel1.auc"), ("SM2 AUC", "submodel2.auc"), ("SM3 AUC", "submodel3.auc"))


def figure(metrics: dict, key: str, with_ci: bool = False) -> str:
    return figure_ci(metrics, key) if with_ci else format_ci(metrics.get(key))


def site_table(folders: dict[str, Path]) -> str:
    """Plain-text table of every mode's per-site figures."""
    header = f"{'mode':<10} {'site':<12} {'role':<9} {'n':>4}  " + "  ".join(f"{name:<24}" if i == 0 else f"{name:<8}"
                                                                            for i, (name, _) in enumerate(COLUMNS))
    lines = [header, "-" * len(header)]
    for mode, folder in folders.items():
        for site, record in rd.read_evaluations(folder).items():
            m = record["metrics"]
            cells = [f"{figure(m, COLUMNS[0][1], True):<24}"] + [f"{figure(m, key):<8}" for _, key in COLUMNS[1:]]
            lines.append(f"{mode:<10} {site:<12} {record['role']:<9} {record['n_cases']:>4}  " + "  ".join(cells))
        lines += [f"{mode:<10} PROBLEM: {problem}" for problem in rd.run_problems(folder)]
    return "\n".join(lines)


def reference_lines(run_dir: Path, folders: dict[str, Path]) -> list[str]:
    """Macro AUC beside the histogram floor and drawn-feature ceiling, with the headroom closed."""
    from server.report_learning import headroom

    references = rd.read_json(run_dir / rd.REFERENCES_FILE, {}) or {}
    lines = []
    for mode, folder in folders.items():
        for site, record in rd.read_evaluations(folder).items():
            ref, auc = references.get(site), record["metrics"].get("clahdm.auc_macro", math.nan)
            if not ref or auc is None or math.isnan(auc):  # macro AUC needs every class in the cohort
                continue
            text = f"{mode:<10} {site:<12} macro AUC {auc:.3f}; histogram floor {ref['histogram']:.3f}"
            if "drawn_feature" in ref:
                share = headroom(auc, ref["histogram"], ref["drawn_feature"])
                text += f", drawn-feature ceiling {ref['drawn_feature']:.3f}: {100 * share:.0f} % of the headroom closed"
            lines.append(text)
    return lines


def print_summary(run_dir: Path, folders: dict[str, Path]) -> None:
    """Print the table, build the report, and say where everything is."""
    print()
    print(site_table(folders))
    lines = reference_lines(run_dir, folders)
    if lines:
        print("\n" + "\n".join(lines))
    try:
        from server.report import write_report
        markdown, html = write_report(run_dir)
        print(f"\nreport: {markdown}\n        {html}")
    except Exception as err:  # the run's records are complete even if a plot fails
        log.error("report could not be built (%s); rebuild it with `clafed report %s`", err, run_dir)
    print(f"run records: {run_dir}  (site-local predictions and heatmaps: {run_dir}/**/site_outputs/)")
