"""A SuperLink that dies mid-run comes back with its database: the sites reconnect, the run resumes.

The loopback deployment of test_e2e (TLS, node authentication, three SuperNodes), but with
`clafed server --database FILE`. After the run's first completed round the SuperLink and
everything it started (SuperExec, the ServerApp) are SIGKILLed, as in a crash of the coordinator's
machine; the same command then starts it again on the same database. Nobody registers a site
again: the SuperNodes, never restarted, reconnect by themselves. Flower does not restart the
ServerApp of the interrupted run (its task stops heartbeating and the run is marked failed), so
the coordinator submits the run again with `resume=true` and the same `run-dir`, and the run goes
on from its last completed round.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from common.cli import main as clafed
from server.certs import generate_credentials
from simulation.loopback import (
    CLAFED,
    READY,
    REPO,
    SITES,
    Processes,
    env_with,
    flower_home,
    free_port,
    run_flwr,
    site_yaml,
    wait_for,
)
from tests.deploy.test_e2e import FEDERATION

pytestmark = pytest.mark.slow


def read_json(path: Path):
    """The file's JSON, or None while it does not exist (the run's records are replaced atomically)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def completed(run_dir: Path) -> dict[str, int]:
    """Rounds committed per phase (state.json, the records' commit point)."""
    return (read_json(run_dir / "state.json") or {}).get("completed", {})


def start_superlink(procs: Processes, name: str, creds, port: int, base: Path, database: Path):
    superlink = procs.start(name, [*CLAFED, "server", "--certs", str(creds.out), "--host", "0.0.0.0",
                                   "--port", str(port), "--database", str(database), "--control-host", "127.0.0.1"],
                            cwd=base / "superlink", env=env_with(FLWR_HOME=str(base / "superlink" / "home")))
    wait_for(lambda: READY in superlink.text() or not superlink.alive(), 60, f"the SuperLink ({name})", procs.dump)
    assert superlink.alive(), procs.dump()
    return superlink


def supernodes(home: Path, base: Path) -> dict[str, str]:
    """`flwr supernode list`: each registered node's id and status."""
    result = run_flwr(["supernode", "list", FEDERATION, "--format", "json"], home, 60, cwd=base)
    assert result.returncode == 0, result.stdout
    listing = json.loads(result.stdout[result.stdout.index("{"):])
    return {str(node["node-id"]): node["status"] for node in listing["nodes"]}


def runs(home: Path, base: Path) -> dict[str, str]:
    """`flwr list`: each run's id and status."""
    result = run_flwr(["list", "--format", "json"], home, 60, cwd=base)
    assert result.returncode == 0, result.stdout
    listing = json.loads(result.stdout[result.stdout.index("{"):])
    return {str(run["run-id"]): run["status"] for run in listing["runs"]}


def test_a_killed_superlink_restarts_with_its_database_and_the_run_resumes(tmp_path):
    base = tmp_path
    procs = Processes(base / "logs")
    try:
        assert clafed(["synth", "--preset", "small", "--seed", "0", "--out", str(base / "data")]) == 0
        creds = generate_credentials(base / "credentials", ["127.0.0.1", "127.0.0.2", "localhost"], list(SITES))
        port = free_port()
        address = f"127.0.0.1:{port}"
        procs.markers.append(address)
        database = base / "superlink" / "state.db"
        superlink = start_superlink(procs, "superlink", creds, port, base, database)
        home = flower_home(base / "coordinator", FEDERATION, address, creds.ca_cert)
        node_ids = {}
        for site in SITES:
            result = run_flwr(["supernode", "register", str(creds.site_keys[site][1]), FEDERATION, "--name", site],
                              home, 60, cwd=base)
            registered = re.search(r"SuperNode (\d+) registered successfully", result.stdout)
            assert result.returncode == 0 and registered, result.stdout
            node_ids[site] = registered.group(1)
        nodes = {}
        for site in SITES:
            path = site_yaml(base, site, base / "data", creds, f"127.0.0.2:{port}")
            runtime = free_port()
            procs.markers.append(f"127.0.0.1:{runtime}")
            nodes[site] = procs.start(site, [*CLAFED, "client", "--site", str(path), "--runtime-port", str(runtime)],
                                      cwd=base / "work" / site, env=env_with())
        for site, node in nodes.items():
            wait_for(lambda node=node: "SuperNode ID" in node.text() or not node.alive(), 60, f"{site} to connect",
                     procs.dump)
            assert node.alive(), procs.dump()

        # Four rounds (shared, then one per sub-model) and the final evaluation; no localiser round.
        run_dir = base / "run"
        config = (f'profile="tiny" rounds=1 localiser-rounds=0 run-dir="{run_dir}" signing-key="{creds.signing_key}" '
                  'min-sites=3 bootstrap=50 connect-timeout=120.0 round-timeout=300.0 eval-timeout=300.0')
        first = run_flwr(["run", str(REPO), FEDERATION, "--run-config", config], home, 120, cwd=base)
        assert first.returncode == 0, first.stdout
        wait_for(lambda: completed(run_dir).get("shared", 0) >= 1 or not superlink.alive(), 420,
                 "the run's first completed round", procs.dump)
        assert superlink.alive(), procs.dump()
        (interrupted,) = runs(home, base)

        # The coordinator's machine crashes: SuperLink, SuperExec and ServerApp die at once.
        procs.kill(superlink)
        at_kill = completed(run_dir)
        lines_at_kill = len((run_dir / "metrics.jsonl").read_text().splitlines())
        assert at_kill["shared"] == 1 and all(at_kill.get(p, 0) == 0 for p in ("submodel2", "submodel3")), at_kill
        assert all(node.alive() for node in nodes.values()), procs.dump()

        restarted = start_superlink(procs, "superlink-restarted", creds, port, base, database)
        # The registrations are in the database: no site is registered again, each reconnects by itself
        # (the resumed run below needs all three).
        assert set(supernodes(home, base)) == set(node_ids.values())
        wait_for(lambda: all(status == "online" for status in supernodes(home, base).values()), 180,
                 "the three SuperNodes to be online", procs.dump)
        # Flower does not restart the interrupted run's ServerApp: the coordinator resumes the run.
        resumed = run_flwr(["run", str(REPO), FEDERATION, "--run-config", config + " resume=true"], home, 120,
                           cwd=base)
        assert resumed.returncode == 0, resumed.stdout

        figures = [run_dir / "evaluation" / f"{site}.json" for site in SITES]
        failures = run_dir / "evaluation_failures.json"
        wait_for(lambda: all(f.is_file() for f in figures) or failures.is_file() or not restarted.alive(), 600,
                 "the resumed run's final evaluation", procs.dump)
        assert not failures.is_file(), f"{failures.read_text()}\n{procs.dump()}"
        assert restarted.alive(), procs.dump()

        # It went on from its last completed round: the shared round was not trained again.
        assert completed(run_dir) == {**at_kill, "shared": 1, "submodel1": 1, "submodel2": 1, "submodel3": 1}
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [(m["level"], m["round"]) for m in metrics].count(("shared", 1)) == 1, metrics
        assert len(metrics) > lines_at_kill
        info = read_json(run_dir / "run.json")
        assert len(info["resumed"]) == 1, info
        from common.signing import verify_checkpoint
        verify_checkpoint(run_dir / "model.pt", creds.signing_public_key)

        assert "RegisterNode" not in restarted.text()
        for site, node in nodes.items():
            assert node.alive(), f"{site} stopped\n{procs.dump()}"
            assert "Failed to activate SuperNode" not in node.text(), node.text()[-3000:]
            assert f"SuperNode ID: {node_ids[site]}" in node.text()
        # The interrupted run is not left "running" for ever: Flower fails it once its task stops heartbeating.
        wait_for(lambda: runs(home, base).get(interrupted, "").startswith("finished"), 180,
                 "the interrupted run to be marked finished", procs.dump)
        assert "completed" not in runs(home, base)[interrupted]
    finally:
        procs.stop_all()
