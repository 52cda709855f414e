"""`clafed readers`: the reader study's tables (Markdown) from a predictions CSV and a reads CSV."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from common.formatting import format_ci, md_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed readers`."""
    parser.add_argument("--predictions", type=Path, required=True,
                        help="CSV: case_id, label, and predicted and/or p_reactive, p_tuberculous, p_lymphoma, "
                             "p_metastatic")
    parser.add_argument("--reads", type=Path, required=True,
                        help="CSV: case_id, reader, group, with_ai (yes/no), label (the reader's call)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown to this file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutations (default 0)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per CI (default 1000)")
    parser.add_argument("--permutations", type=int, default=10000,
                        help="relabellings per permutation test (default 10000)")


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _ci(ci) -> str:
    return format_ci(ci.point, ci.low, ci.high)


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return md_table(header, rows).splitlines()


def render_markdown(report) -> str:
    """The three tables of a ReaderReport as one Markdown document."""
    ai = {None: "—", False: "no", True: "yes"}
    perf = [[r["reader"], r["group"] or "—", ai[r["with_ai"]], r["n"], *(_ci(r["figures"][k]) for k in
            ("accuracy", "sensitivity", "specificity"))] for r in report.performance]
    mc = [[t.a, t.b, t.n, t.only_a_correct, t.only_b_correct, _p(t.p_value)] for t in report.mcnemar]
    perm = [[t.a, t.b, t.n_cases, _num(t.accuracy_a), _num(t.accuracy_b), _num(t.difference), _p(t.p_value)]
            for t in report.permutation]
    n_perm = report.permutation[0].n_permutations if report.permutation else 0
    lines = [f"## Diagnostic performance (95% CI, {report.n_resamples} bootstrap resamples)", "",
             "Accuracy: 4 classes. Sensitivity / specificity: benign vs malignant (malignant positive).", "",
             *_table(["reader", "group", "with AI", "n", "accuracy", "sensitivity", "specificity"], perf), "",
             "## McNemar's exact test (4-class correct / incorrect, cases both read)", "",
             *_table(["A", "B", "n", "only A correct", "only B correct", "p"], mc), "",
             f"## Permutation tests, mean 4-class accuracy ({n_perm} permutations, cases all read)", "",
             *_table(["A", "B", "cases", "accuracy A", "accuracy B", "A − B", "p"], perm), ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Validate the two tables, compute the study's statistics, print (and optionally write) Markdown."""
    from common.readers import ReadsError, analyse_readers, read_reader_csvs

    if args.resamples < 1 or args.permutations < 1:
        print("--resamples and --permutations must be at least 1", file=sys.stderr)
        return 2
    try:
        data = read_reader_csvs(args.predictions, args.reads)
    except ReadsError as err:
        print(err, file=sys.stderr)
        return 2
    text = render_markdown(analyse_readers(data, args.resamples, args.permutations, args.seed))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0
