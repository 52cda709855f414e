"""Reliability experiment (by hand, ~5 min): a training site's SuperNode is killed mid-run.

    python -m tests.deploy.reliability /tmp/reliability

Loopback deployment (TLS + node authentication), hospitals 1 and 2 train, 3 evaluates; after
sub-model 1's first round hospital 2's SuperNode is killed. Prints which sites contributed to
each round and how the final evaluation ended. Not collected by pytest: it takes too long.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from common.cli import main as clafed
from server.certs import generate_credentials
from simulation.loopback import (
    CLAFED,
    READY,
    REPO,
    Processes,
    env_with,
    flower_home,
    free_port,
    run_flwr,
    site_yaml,
    wait_for,
)


def main(base: Path) -> None:
    base.mkdir(parents=True, exist_ok=True)
    procs = Processes(base / "logs")
    SITES = ("hospital1", "hospital2", "hospital3")
    t0 = time.time()
    try:
        assert clafed(["synth", "--preset", "small", "--seed", "0", "--out", str(base / "data"), "--workers", "1"]) == 0
        creds = generate_credentials(base / "credentials", ["127.0.0.1"], list(SITES))
        port = free_port()
        address = f"127.0.0.1:{port}"
        procs.markers.append(address)
        link = procs.start("superlink", [*CLAFED, "server", "--certs", str(creds.out), "--host", "127.0.0.1",
                                         "--port", str(port), "--no-database"], cwd=base / "superlink",
                           env=env_with(FLWR_HOME=str(base / "superlink" / "home")))
        wait_for(lambda: READY in link.text(), 60, "superlink", procs.dump)
        home = flower_home(base / "coord", "rel", address, creds.ca_cert)
        for s in SITES:
            register = ["supernode", "register", str(creds.site_keys[s][1]), "rel", "--name", s]
            assert run_flwr(register, home, 60, base).returncode == 0
        nodes = {}
        for s in SITES:
            path = site_yaml(base, s, base / "data", creds, address)
            if s == "hospital2":  # a second training site, so a round can go on without one of them
                site = yaml.safe_load(path.read_text())
                site.update(role="train", holdout={"kind": "fraction", "fraction": 0.3})
                path.write_text(yaml.safe_dump(site))
            rt = free_port()
            procs.markers.append(f"127.0.0.1:{rt}")
            nodes[s] = procs.start(s, [*CLAFED, "client", "--site", str(path), "--runtime-port", str(rt)],
                                   cwd=base / "work" / s, env=env_with())
        for s, n in nodes.items():
            wait_for(lambda n=n: "SuperNode ID" in n.text(), 60, s, procs.dump)
        run_dir = base / "run"
        cfg = (f'profile="tiny" rounds=2 run-dir="{run_dir}" signing-key="{creds.signing_key}" min-sites=3 '
               f'min-train-sites=1 bootstrap=50 connect-timeout=60.0 round-timeout=60.0 eval-timeout=90.0')
        print("flwr run:", run_flwr(["run", str(REPO), "rel", "--run-config", cfg], home, 120, base).stdout[-300:])
        wait_for(lambda: (json.loads((run_dir / "state.json").read_text())["completed"]["submodel1"] >= 1
                          if (run_dir / "state.json").is_file() else False), 400, "round 1", procs.dump)
        killed = time.time()
        procs.stop(nodes["hospital2"], grace=0)
        print(f"killed hospital2's SuperNode at {killed - t0:.0f} s")
        failures = run_dir / "evaluation_failures.json"
        wait_for(lambda: (run_dir / "evaluation" / "hospital1.json").is_file()
                 and (failures.is_file() or (run_dir / "evaluation" / "hospital2.json").is_file()),
                 600, "the run to end", procs.dump)
        print(f"run ended {time.time() - killed:.0f} s after the kill")
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            print(r["level"], r["round"], "sites:", sorted(r["sites"]), "failed:", r["failed_sites"],
                  f"{r['round_seconds']:.0f} s")
        print("evaluated:", sorted(p.stem for p in (run_dir / "evaluation").glob("*.json")))
        print("failures:", failures.read_text() if failures.is_file() else None)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
