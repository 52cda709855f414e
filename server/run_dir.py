"""The layout of a run directory: everything the server keeps about a run, and nothing per case.

    RUN_DIR/
      run.json             settings, mode, protocol, the sites (name, role, aggregate counts), times
      state.json           rounds completed per sub-model (what --resume continues from)
      metrics.jsonl        one line per completed round (aggregated and per-site training figures,
                           timings, bytes moved)
      validation.jsonl     one line per round: pooled validation loss, accuracy and AUC of the round's
                           global network (from the sites' aggregate score histograms)
      ledger.jsonl         one line per round: SHA-256 of the global weights, contributing sites
                           and their example counts (audit trail)
      checkpoints/latest.pt  the CLA-HDM after the last completed round (written atomically)
      checkpoints/shared.pt  the shared phase's 4-class network after its last completed round
      checkpoints/best_SUBMODEL_roundN.pt  each sub-model at its best round by pooled validation NLL
      model.pt, model.sig  the assembled CLA-HDM the sites evaluated (the best or the final one, run.json
                           `evaluated_model`) and the coordinator's signature of it (common.signing)
      model_final.pt / model_best.pt (+ .sig)  the other of the two, when they differ
      model_card.md, model_card.json  what the evaluated model is for, how it was trained and how it did
      preflight.json       each site's aggregate data-quality figures before round 1 (client/preflight.py)
      evaluation/SITE.json what each site returned from its final evaluation (aggregate figures)
      evaluation_failures.json  sites whose final evaluation failed, with the reason they gave
      references.json      (simulation) histogram floor and drawn-feature ceiling on the same split
      report.md, report.html, report_plots/   the report (server/report.py)
      faithfulness.json, readers.md           optional inputs of the report, when present
      sites/, site_outputs/  (simulation) the virtual sites' YAMLs and their local outputs
      models/SITE/           (local mode) each site's own model and records

A comparison (`clafed simulate --mode federated,pooled,local`) holds one such run per mode in
RUN_DIR/federated, RUN_DIR/pooled, RUN_DIR/local, all evaluated on the same held-out cohorts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.names import checked_name

RUN_FILE = "run.json"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.jsonl"
LEDGER_FILE = "ledger.jsonl"
VALIDATION_FILE = "validation.jsonl"
REFERENCES_FILE = "references.json"
CHECKPOINT_FILE = "checkpoints/latest.pt"
SHARED_CHECKPOINT_FILE = "checkpoints/shared.pt"
# A stateful strategy's state (FedAdam's moments) after the last completed round of a phase.
STRATEGY_STATE_FILE = "checkpoints/strategy_state.pt"
MODEL_FILE = "model.pt"
# The candidate the sites did not evaluate (best by federated validation, or the final rounds').
ALTERNATIVE_MODEL_FILES = {"final": "model_final.pt", "best": "model_best.pt"}
MODEL_CARD_MD = "model_card.md"
MODEL_CARD_JSON = "model_card.json"
PREFLIGHT_FILE = "preflight.json"
SIGNATURE_FILE = "model.sig"
EVALUATION_DIR = "evaluation"
FAILURES_FILE = "evaluation_failures.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "report_plots"
FAITHFULNESS_FILE = "faithfulness.json"
READERS_FILE = "readers.md"
SITES_DIR = "sites"
SITE_OUTPUTS_DIR = "site_outputs"
MODELS_DIR = "models"
MODES = ("federated", "pooled", "local")


def best_checkpoint(phase: str, server_round: int) -> str:
    """Where a sub-model's weights at its best validated round are kept (one file per round, so
    that state.json never names a file a crash left half-replaced)."""
    return f"checkpoints/best_{checked_name(phase, 'phase')}_round{int(server_round)}.pt"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (write-then-rename): a crash never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, or return `default` when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else default


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record and flush it to disk before the round is reported complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """All records of a JSON-lines file (none when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def update_run_info(run_dir: Path, **fields: Any) -> None:
    """Set `fields` in the run's run.json, keeping everything else it holds."""
    path = Path(run_dir) / RUN_FILE
    write_json(path, {**read_json(path, {}), **fields})


def evaluation_path(run_dir: Path, site: str) -> Path:
    """A site's evaluation record; the site's name must be a plain file name (common.names)."""
    return Path(run_dir) / EVALUATION_DIR / f"{checked_name(site, 'site name')}.json"


def read_evaluations(run_dir: Path) -> dict[str, dict]:
    """{site: its evaluation record} of one run."""
    folder = Path(run_dir) / EVALUATION_DIR
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def compared_runs(run_dir: Path) -> dict[str, Path]:
    """{mode: run folder} when RUN_DIR is a comparison, else {} ."""
    run_dir = Path(run_dir)
    return {mode: run_dir / mode for mode in MODES if (run_dir / mode / RUN_FILE).is_file()}


# Settings a resumed run may change: where and how long to wait, not what is trained.
RESUMABLE_SETTINGS = frozenset({"resume", "connect_timeout", "round_timeout", "eval_timeout", "min_sites",
                                "min_train_sites", "run_dir", "evaluate_model",
                                "stop_on_missing_class"})


def changed_settings(before: dict, now: dict) -> list[str]:
    """Names of the settings that differ between a run's first attempt and its resumption."""
    return sorted(k for k in set(before) | set(now) if k not in RESUMABLE_SETTINGS and before.get(k) != now.get(k))


def run_problems(run_dir: Path, running: bool = False) -> list[str]:
    """Every way a finished (or stopped) run fell short: sites that failed to join, failed or stayed
    silent in a round, failed their evaluation, or a run that never finished (unless `running`:
    a run still in progress has not finished yet)."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / RUN_FILE, {})
    problems = [f"could not take part: {reason}" for reason in info.get("site_failures", [])]
    for record in read_jsonl(run_dir / METRICS_FILE):
        where = f"{record['level']} round {record['round']}"
        problems += [f"{where}: {site} failed: {reason}" for site, reason in record.get("failed_sites", {}).items()]
        problems += [f"{where}: {site} sent no reply" for site in record.get("silent_sites", [])]
    problems += [f"evaluation at {site} failed: {reason}"
                 for site, reason in read_json(run_dir / FAILURES_FILE, {}).items()]
    if not running and "finished" in info and not info["finished"]:  # set to None when a run starts, to a time at its end
        problems.append("the run did not finish (see its log; resume it with --resume / resume=true)")
    return problems
