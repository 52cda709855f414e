"""One format for a figure with its CI, one Markdown table: terminal, report and reader study agree."""
from __future__ import annotations

import math

from common.formatting import figure_ci, format_ci, md_table


def test_a_figure_reads_the_same_everywhere():
    figures = {"auc": 0.85, "auc.low": 0.808, "auc.high": 0.8834, "spec": 0.5, "spec.low": math.nan}
    assert figure_ci(figures, "auc") == format_ci(0.85, 0.808, 0.8834) == "0.850 (0.808–0.883)"
    assert figure_ci(figures, "spec") == "0.500"  # an undefined interval: the point alone
    assert figure_ci(figures, "absent") == format_ci(math.nan) == "n/a"


def test_markdown_tables_escape_pipes():
    assert md_table(["a", "b"], [["x|y", 1]]) == "| a | b |\n|---|---|\n| x\\|y | 1 |"
