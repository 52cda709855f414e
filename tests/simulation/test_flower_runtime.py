"""`clafed simulate` on a local SuperLink: what the terminal shows, what is left running, failures."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from server.settings import Settings, load_settings, run_config_toml
from simulation.orphan_guard import alive, process_tree
from simulation.run_view import RunView

NOISE = ("DEPRECATED", "alembic", "FutureWarning", "httpx")
ROUNDS = {"submodel1": 1, "submodel2": 1, "submodel3": 1}


def test_the_run_config_file_gives_back_the_settings():
    settings = Settings(profile="tiny", run_dir='/tmp/a "quoted" run', lr=1e-3, dp_delta=1e-5, resume=True)
    assert load_settings(tomllib.loads(run_config_toml(settings)), environ={}) == settings


def test_the_quiet_view_keeps_clafed_lines_and_counts_rounds():
    out = io.StringIO()
    view = RunView(ROUNDS, {}, out=out)
    for line in ("WARNING :   DEPRECATED FEATURE: ...",
                 "2026-01-01 10:00:00,000 alembic.runtime.plugins INFO setup plugin",
                 "2026-01-01 10:00:00,000 flwr INFO [ROUND 1/1]",
                 "2026-01-01 10:00:01,000 clafed.server INFO submodel1: federating rounds 1..1 over h1 (3 cases)",
                 "2026-01-01 10:00:02,000 clafed.server INFO submodel1 round 1: loss 0.9, accuracy 0.5 over 3 cases"):
        view.line(line + "\n")
    view.close()
    text = out.getvalue()
    assert "clafed.server INFO submodel1 round 1: loss" in text and "progress: 1/3 rounds" in text
    assert not any(marker in text for marker in ("DEPRECATED", "alembic", "[ROUND"))
    verbose = io.StringIO()
    view = RunView(ROUNDS, {"submodel1": 1}, verbose=True, out=verbose)
    view.line("2026-01-01 10:00:00,000 flwr INFO [ROUND 1/1]\n")
    assert "[ROUND 1/1]" in verbose.getvalue() and view.done == 1  # resumed: round 1 already counted


def test_the_superlink_binds_loopback_and_stops_with_its_children(tmp_path):
    from simulation.local_superlink import start_superlink, stop_superlink

    link = start_superlink(tmp_path, dict(os.environ))
    try:
        tree = process_tree(link.process.pid) + [link.guard.pid]
        assert len(tree) >= 3  # the SuperLink, the SuperExec it started, the orphan guard
        assert f"127.0.0.1:{link.port}" in (tmp_path / "flower" / "home" / "config.toml").read_text()
    finally:
        stop_superlink(link)
    assert not [pid for pid in tree if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]
    assert (tmp_path / "flower" / "superlink.log").is_file()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def processes_of(run: Path) -> list[int]:
    """Live processes started for this run (Flower's and Ray's inherit FLWR_HOME)."""
    marker = f"FLWR_HOME={run / 'flower' / 'home'}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (entry / "environ").read_bytes() and _state(int(entry.name)) != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def simulate(cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLAFED_CACHE=str(cache))
    args = [sys.executable, "-m", "common.cli", "simulate", "--profile", "tiny", "--preset", "small", "--rounds", "1",
            "--shared-rounds", "0", "--localiser-rounds", "0", "--bootstrap", "10", "--heatmaps", "0",
            "--out", str(out), *extra]
    return subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400)


def test_the_guard_kills_the_tree_when_its_parent_dies():
    tree = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                             "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"])
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    time.sleep(0.3)  # the child's child is up
    members = process_tree(tree.pid)
    guard = subprocess.run([sys.executable, "-m", "simulation.orphan_guard", str(parent.pid), str(tree.pid)], timeout=30)
    parent.wait()
    tree.wait(timeout=10)
    assert guard.returncode == 0 and len(members) == 2 and not [pid for pid in members if alive(pid)]


@pytest.mark.slow
def test_a_failing_run_exits_non_zero_naming_the_problem_and_verbose_shows_flower(cache, tmp_path):
    data = tmp_path / "data"
    synth = cache / "synth" / "small-seed0"
    for site in ("hospital1", "hospital2"):
        (data / site).mkdir(parents=True)
        (data / site / "manifest.csv").symlink_to(synth / site / "manifest.csv")
    (data / "hospital3").mkdir()
    shutil.copy(synth / "hospital3" / "manifest.csv", data / "hospital3")  # its images are not there
    run = tmp_path / "run"
    done = simulate(cache, run, "--data", str(data), "--verbose")
    assert done.returncode != 0
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("clafed simulate: the federated run failed") and "manifest cannot be used" in last, last
    assert str(run / "flower" / "run.log") in last
    assert "Starting Flower Simulation" in done.stdout  # --verbose: Flower's own lines too
    assert not processes_of(run)
