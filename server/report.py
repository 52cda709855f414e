"""The federation report: a run directory's saved records rendered as Markdown and one HTML page.

Everything here reads what the server kept (run.json, metrics.jsonl, evaluation/SITE.json and,
when present, faithfulness.json and readers.md). The sections are in server/report_sections.py
and server/report_learning.py, the Markdown/HTML primitives in server/report_format.py.
"""
from __future__ import annotations

import html
from pathlib import Path

from server import run_dir as rd
from server.model_card import write_model_card
from server.report_clinical import clinical_blocks
from server.report_format import Block, heading, text_block
from server.report_learning import learning_blocks
from server.report_sections import (
    RunRecords,
    comparison,
    failures_block,
    faithfulness,
    load_run,
    privacy_block,
    readers,
    run_summary,
    site_details,
    table1,
    training_curves,
)

# ---- the whole report -------------------------------------------------------------------------

def primary_run(run_dir: Path) -> tuple[RunRecords, dict[str, RunRecords]]:
    """The run the main tables describe (the federated one of a comparison) and every compared run."""
    compared = {mode: load_run(path) for mode, path in rd.compared_runs(run_dir).items()}
    if compared:
        return compared.get("federated", next(iter(compared.values()))), compared
    if not (Path(run_dir) / rd.RUN_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: no {rd.RUN_FILE} here nor in federated/, pooled/ or local/ "
                                "(is this a clafed run directory?)")
    return load_run(run_dir), {}


def _extra_file(run_dir: Path, primary: RunRecords, name: str) -> Path | None:
    """An optional input, looked for in RUN_DIR first, then in the primary run's folder."""
    for folder in (Path(run_dir), primary.path):
        if (folder / name).is_file():
            return folder / name
    return None


def build_blocks(run_dir: Path) -> list[Block]:
    """Every section of the report for RUN_DIR (a single run or a comparison of modes)."""

    run_dir = Path(run_dir)
    primary, compared = primary_run(run_dir)
    title = f"clafed report: {run_dir.resolve().name}"
    blocks = [heading(title, 1)]
    if compared:
        blocks.append(text_block(f"A comparison of {', '.join(compared)}; the tables below describe the "
                                 f"**{primary.mode}** run unless labelled otherwise."))
    blocks += run_summary(primary, compared)
    blocks += table1(primary) + failures_block(primary) + privacy_block(primary)
    blocks += learning_blocks(run_dir, primary, compared)
    blocks += clinical_blocks(primary)
    blocks += site_details(primary)
    if compared:
        blocks += comparison(compared)
        blocks.append(heading("Training"))
        for mode, run in compared.items():
            blocks += training_curves(run, f"Training: {mode}")
            for model_dir in sorted((run.path / rd.MODELS_DIR).glob(f"*/{rd.METRICS_FILE}")):  # local: one model per site
                blocks += training_curves(load_run(model_dir.parent), f"Training: {mode}, {model_dir.parent.name}")
    else:
        blocks += training_curves(primary)
    faith = _extra_file(run_dir, primary, rd.FAITHFULNESS_FILE)
    blocks += faithfulness(rd.read_json(faith) if faith else None)
    reader_md = _extra_file(run_dir, primary, rd.READERS_FILE)
    blocks += readers(reader_md.read_text(encoding="utf-8") if reader_md else None)
    return blocks


STYLE = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:left}thead th{background:#f0f3f7}figure{margin:1em 0}img{max-width:100%}code{background:#f4f4f4}"""


def render_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(b.md for b in blocks) + "\n"


def render_html(blocks: list[Block], title: str = "clafed report") -> str:
    """One self-contained page: inline style, images as data URIs, no external resources."""
    body = "\n".join(b.html for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(run_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Build report.md (+ report_plots/) and report.html from RUN_DIR's saved records, and the model
    card beside each model.pt the run holds (server/model_card.py).

    Args:
        run_dir: a run directory, or a comparison holding federated/, pooled/, local/.
        out_dir: where to write (default: RUN_DIR).

    Returns:
        (path of report.md, path of report.html).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    blocks = build_blocks(run_dir)
    plots = out_dir / rd.PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        for name, png in block.plots.items():
            (plots / name).write_bytes(png)
    for folder in rd.compared_runs(run_dir).values() or [run_dir]:  # the card lives beside its model
        write_model_card(folder)
    md_path, html_path = out_dir / rd.REPORT_MD, out_dir / rd.REPORT_HTML
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    html_path.write_text(render_html(blocks, f"clafed report: {run_dir.resolve().name}"), encoding="utf-8")
    return md_path, html_path
