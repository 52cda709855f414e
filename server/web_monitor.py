"""`clafed serve --run RUN_DIR`: the coordinator's Run monitor, read-only. Sites and their roles,
the sub-model and round in progress, each phase's training and validation curves (the page polls
/api/run, so they grow while the run goes), the ledger's hashes, failed or silent sites, and the
report once the run has one. Everything shown is what the run folder already holds: aggregates.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from common.labels import LEVELS, LOCALISER, SHARED
from common.web.app import Page, bad_request, render
from server import run_dir as rd

PHASES = (SHARED, *(lv.key for lv in LEVELS), LOCALISER)
LEDGER_SHOWN = 12
# The report's own inline style is allowed on its page; scripts stay forbidden.
REPORT_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _planned(info: dict) -> dict[str, int | None]:
    """Rounds each phase will run, as far as run.json says."""
    train = info.get("profile_config", {}).get("train", {})
    localiser = info.get("settings", {}).get("localiser_rounds", -1)
    planned = {SHARED: info.get("shared_rounds"), LOCALISER: localiser if localiser >= 0 else train.get("localiser_rounds"),
               **{lv.key: info.get("rounds") for lv in LEVELS}}
    return {phase: n if isinstance(n, int) and n > 0 else None for phase, n in planned.items()}


def run_status(folder: Path) -> dict:
    """Everything the monitor shows, from the run folder's records (aggregate figures only)."""
    info = rd.read_json(folder / rd.RUN_FILE, {})
    state = rd.read_json(folder / rd.STATE_FILE, {})
    records = rd.read_jsonl(folder / rd.METRICS_FILE)
    validation = {(v["level"], v["round"]): v for v in rd.read_jsonl(folder / rd.VALIDATION_FILE)}
    series: dict[str, list[dict]] = {}
    for r in records:
        v = validation.get((r["level"], r["round"]), {})
        series.setdefault(r["level"], []).append({
            "round": r["round"], "loss": r.get("loss"), "accuracy": r.get("accuracy"),
            "val_loss": v.get("loss"), "val_accuracy": v.get("accuracy"), "val_auc": v.get("auc"),
            "seconds": r.get("round_seconds"), "sites": sorted(r.get("sites", {})),
            "failed": r.get("failed_sites", {}), "silent": r.get("silent_sites", [])})
    last = records[-1] if records else None
    finished = info.get("finished")
    ledger = rd.read_jsonl(folder / rd.LEDGER_FILE)
    planned = _planned(info)
    return {
        "run": folder.name, "mode": info.get("mode"), "profile": info.get("profile"),
        "strategy": info.get("strategy"), "protocol": info.get("protocol"), "started": info.get("started"),
        "finished": finished, "status": "finished" if finished else ("waiting for round 1" if not records else "running"),
        "sites": [{"name": s.get("name"), "role": s.get("role"), "cohort": s.get("cohort")}
                  for s in info.get("sites", [])],
        "site_failures": info.get("site_failures", []),
        "phases": [{"phase": p, "completed": state.get("completed", {}).get(p, 0), "planned": planned[p]}
                   for p in PHASES if p in series or planned[p]],
        "current": {"phase": last["level"], "round": last["round"], "time": last.get("time")} if last else None,
        "rounds_completed": len(records),
        "series": series,
        "ledger": [{"phase": e.get("level"), "round": e.get("round"), "sha256": e.get("sha256"),
                    "sites": e.get("sites", {})} for e in ledger[-LEDGER_SHOWN:]],
        "problems": rd.run_problems(folder, running=not finished),
        "report": (folder / rd.REPORT_HTML).is_file(),
        "read_at": dt.datetime.now().isoformat(timespec="seconds"),
    }


class RunMonitor:
    """One run folder, or the runs of a comparison (federated, pooled, local) chosen by mode."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def runs(self) -> dict[str, Path]:
        return rd.compared_runs(self.folder) or {"run": self.folder}

    def run(self, mode: str | None) -> Path:
        runs = self.runs()
        if mode is None:
            return next(iter(runs.values()))
        if mode not in runs:
            raise bad_request(f"no run {mode!r} here (have: {', '.join(runs)})", 404)
        return runs[mode]


def monitor_page(monitor: RunMonitor) -> Page:
    router = APIRouter()

    @router.get("/run", response_class=HTMLResponse)
    def page(request: Request, mode: str | None = None) -> HTMLResponse:
        monitor.run(mode)
        return render(request, "monitor.html", folder=str(monitor.folder), modes=list(monitor.runs()),
                      mode=mode or next(iter(monitor.runs())))

    @router.get("/api/run")
    def status(mode: str | None = None) -> dict:
        return run_status(monitor.run(mode))

    @router.get("/run/report")
    def report(mode: str | None = None) -> Response:
        path = monitor.run(mode) / rd.REPORT_HTML
        if not path.is_file():
            raise bad_request("the run has no report yet (it is written when the run ends)", 404)
        return Response(path.read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": REPORT_POLICY})

    return Page(router, "/run", "Run monitor", "sites, rounds and curves of a federation run while it goes")
