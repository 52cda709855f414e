"""The Run monitor (server/web_monitor.py): what a run folder says, as it grows, read-only."""
from __future__ import annotations

import json

from server import run_dir as rd
from tests.web.harness import client


def start_run(folder, finished=None):
    rd.write_json(folder / rd.RUN_FILE, {
        "mode": "federated", "profile": "tiny", "strategy": "fedavg", "protocol": "federated", "rounds": 2,
        "shared_rounds": 1, "settings": {"localiser_rounds": 0}, "started": "2026-12-02T08:00:00", "finished": finished,
        "sites": [{"name": "hospital1", "role": "train", "cohort": "n=12"}, {"name": "hospital2", "role": "evaluate"}],
        "site_failures": []})


def complete_round(folder, level, number, **extra):
    record = {"level": level, "round": number, "loss": 1.0 / number, "accuracy": 0.5, "round_seconds": 3.0,
              "sites": {"hospital1": {}}, "time": f"2026-12-02T08:0{number}:00", **extra}
    rd.append_jsonl(folder / rd.METRICS_FILE, record)
    rd.append_jsonl(folder / rd.VALIDATION_FILE, {"level": level, "round": number, "loss": 0.9, "accuracy": 0.6, "auc": 0.7})
    rd.append_jsonl(folder / rd.LEDGER_FILE, {"level": level, "round": number, "sha256": f"{number:064x}",
                                              "sites": {"hospital1": 12}})
    state = rd.read_json(folder / rd.STATE_FILE, {"completed": {}})
    state["completed"][level] = number
    rd.write_json(folder / rd.STATE_FILE, state)


def test_the_status_follows_the_run_as_rounds_complete(tmp_path):
    web = client("--run", tmp_path / "run")
    assert web.get("/api/run").json()["status"] == "waiting for round 1"  # the folder does not exist yet
    start_run(tmp_path / "run")
    complete_round(tmp_path / "run", "shared", 1)
    status = web.get("/api/run").json()
    assert status["status"] == "running" and status["rounds_completed"] == 1
    assert status["current"]["phase"] == "shared" and status["sites"][1] == {"name": "hospital2", "role": "evaluate",
                                                                              "cohort": None}
    complete_round(tmp_path / "run", "submodel1", 1)
    complete_round(tmp_path / "run", "submodel1", 2, failed_sites={"hospital2": "out of memory"},
                   silent_sites=["hospital3"])
    status = web.get("/api/run").json()
    assert status["rounds_completed"] == 3 and status["current"] == {"phase": "submodel1", "round": 2,
                                                                       "time": "2026-12-02T08:02:00"}
    phases = {p["phase"]: p for p in status["phases"]}
    assert phases["shared"] == {"phase": "shared", "completed": 1, "planned": 1}
    assert phases["submodel1"]["completed"] == 2 and phases["submodel3"] == {"phase": "submodel3", "completed": 0,
                                                                             "planned": 2}
    assert "localiser" not in phases  # 0 rounds planned and none run
    assert [p["round"] for p in status["series"]["submodel1"]] == [1, 2]
    assert status["series"]["submodel1"][1]["val_auc"] == 0.7 and status["series"]["submodel1"][1]["loss"] == 0.5
    assert status["ledger"][-1]["sha256"] == f"{2:064x}"
    assert "submodel1 round 2: hospital2 failed: out of memory" in status["problems"]
    assert "submodel1 round 2: hospital3 sent no reply" in status["problems"]
    assert not any("did not finish" in p for p in status["problems"])  # still running, not stopped
    assert not status["report"] and web.get("/run/report").status_code == 404


def test_a_finished_run_links_its_report_served_without_scripts(tmp_path):
    start_run(tmp_path, finished="2026-12-02T09:00:00")
    (tmp_path / rd.REPORT_HTML).write_text("<html><style>p{}</style><p>report</p></html>")
    web = client("--run", tmp_path)
    status = web.get("/api/run").json()
    assert status["status"] == "finished" and status["report"]
    report = web.get("/run/report")
    assert report.status_code == 200 and "<p>report</p>" in report.text
    policy = report.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in policy and "script" not in policy and policy.startswith("default-src 'none'")
    assert "Run monitor" in web.get("/run").text


def test_a_comparison_folder_shows_each_mode(tmp_path):
    for mode in ("federated", "pooled"):
        start_run(tmp_path / mode)
        complete_round(tmp_path / mode, "submodel1", 1)
    web = client("--run", tmp_path)
    assert web.get("/api/run").json()["run"] == "federated"
    assert web.get("/api/run", params={"mode": "pooled"}).json()["run"] == "pooled"
    assert web.get("/api/run", params={"mode": "../etc"}).status_code == 404
    assert "/run?mode=pooled" in web.get("/run").text


def test_the_monitor_sends_only_what_the_run_folder_holds_as_aggregates(tmp_path):
    start_run(tmp_path)
    complete_round(tmp_path, "submodel1", 1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    text = json.dumps(client("--run", tmp_path).get("/api/run").json())
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # read-only
    assert "case_id" not in text and "bus_path" not in text
