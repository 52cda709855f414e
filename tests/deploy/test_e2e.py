"""A real deployment on loopback: SuperLink with TLS + node authentication, three SuperNodes.

Every process is separate and started through the same `clafed server` / `clafed client`
commands the containers run; the hospitals' YAMLs are the repository's examples with local paths.
"""
from __future__ import annotations

import json
import shutil

import pytest

from common.cli import main as clafed
from simulation.loopback import (
    CLAFED,
    REPO,
    SITES,
    Processes,
    env_with,
    flower_home,
    free_port,
    run_flwr,
    site_yaml,
    start_deployment,
    wait_for,
)

pytestmark = pytest.mark.slow

FEDERATION = "clafed-e2e"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Data, credentials, a running SuperLink with the three sites registered and connected."""
    base = tmp_path_factory.mktemp("deploy")
    procs = Processes(base / "logs")
    try:
        assert clafed(["synth", "--preset", "small", "--seed", "0", "--out", str(base / "data")]) == 0
        # The sites reach the Fleet API like remote hosts do (127.0.0.2); the Control API answers
        # only on the control address 127.0.0.1, which a remote host can never reach.
        dep = start_deployment(base, base / "data", federation=FEDERATION, extra_keys=("rogue",),
                               site_host="127.0.0.2", procs=procs)
        yield {"base": base, "creds": dep.creds, "address": dep.address, "port": dep.port, "home": dep.home,
               "procs": procs, "nodes": dep.nodes}
    finally:
        procs.stop_all()


def test_a_supernode_with_an_unregistered_key_is_refused(deployment):
    base, procs = deployment["base"], deployment["procs"]
    path = site_yaml(base, "hospital1", base / "data", deployment["creds"], deployment["address"], key_of="rogue")
    rogue = procs.start("rogue", [*CLAFED, "client", "--site", str(path), "--runtime-port", str(free_port()),
                                  "--max-retries", "2"], cwd=base / "work" / "rogue", env=env_with())
    wait_for(lambda: not rogue.alive(), 60, "the unregistered SuperNode to give up", procs.dump)
    assert rogue.popen.returncode != 0
    log = rogue.text()
    assert "Failed to activate SuperNode" in log and "SuperNode ID" not in log, log
    assert "registered" in log  # clafed's hint: ask the coordinator to register the key


def test_a_supernode_without_the_ca_cannot_connect_and_says_why(deployment):
    base, procs = deployment["base"], deployment["procs"]
    path = site_yaml(base, "hospital2", base / "data", deployment["creds"], deployment["address"], with_ca=False)
    node = procs.start("no-ca", [*CLAFED, "client", "--site", str(path), "--runtime-port", str(free_port()),
                                 "--max-retries", "2"], cwd=base / "work" / "no-ca", env=env_with())
    wait_for(lambda: not node.alive(), 60, "the SuperNode without the CA to give up", procs.dump)
    assert node.popen.returncode != 0
    log = node.text()
    assert "CERTIFICATE_VERIFY_FAILED" in log and "root_certificates" in log, log


def test_an_outsider_holding_the_ca_can_neither_register_a_node_nor_start_a_run(deployment):
    base, creds, procs = deployment["base"], deployment["creds"], deployment["procs"]
    outside = flower_home(base / "outsider", "outside", f"127.0.0.2:{deployment['port']}", creds.ca_cert)
    register = run_flwr(["supernode", "register", str(creds.site_keys["rogue"][1]), "outside", "--name", "rogue"],
                        outside, 60, cwd=base)
    assert register.returncode != 0 and "registered successfully" not in register.stdout, register.stdout
    assert "answers only on the coordinator's control address" in register.stdout, register.stdout
    run = run_flwr(["run", str(REPO), "outside", "--run-config", 'profile="tiny"'], outside, 120, cwd=base)
    assert run.returncode != 0 and "control address" in run.stdout, run.stdout
    listing = run_flwr(["list"], outside, 60, cwd=base)
    assert listing.returncode != 0, listing.stdout
    # The coordinator, on the control address, sees no run and no rogue node.
    nodes = run_flwr(["supernode", "list", FEDERATION], deployment["home"], 60, cwd=base)
    assert nodes.returncode == 0 and "rogue" not in nodes.stdout, nodes.stdout
    assert "refused an app" not in procs.dump()  # nothing even reached a site


def test_an_app_other_than_the_installed_clafed_never_runs_at_a_site(deployment):
    """Even a run the coordinator starts is refused by the sites when its code differs from theirs."""
    base, procs = deployment["base"], deployment["procs"]
    app = base / "altered-app"
    for package in ("client", "common", "server", "simulation"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", app / "pyproject.toml")
    marker = base / "altered-app-ran"
    client_app = app / "client" / "client_app.py"
    client_app.write_text(client_app.read_text() + f"\nfrom pathlib import Path\nPath({str(marker)!r}).touch()\n")
    config = (f'profile="tiny" rounds=1 run-dir="{base / "altered-run"}" min-sites=3 connect-timeout=60.0 '
              'round-timeout=60.0')
    run_flwr(["run", str(app), FEDERATION, "--run-config", config], deployment["home"], 120, cwd=base)
    nodes = deployment["nodes"]
    wait_for(lambda: all("refused an app sent by the SuperLink" in n.text() for n in nodes.values()), 120,
             "every site to refuse the altered app", procs.dump)
    assert not marker.exists()
    assert "client/client_app.py: differs from the clafed installed here" in nodes["hospital1"].text()
    assert all(node.alive() for node in nodes.values()), procs.dump()


def test_a_one_round_tiny_run_completes_and_every_site_evaluates_the_signed_model(deployment):
    base, procs, creds = deployment["base"], deployment["procs"], deployment["creds"]
    if not (REPO / "server" / "server_app.py").is_file():
        pytest.skip("server/server_app.py does not exist yet")
    run_dir = base / "run"
    # No localiser round: each round costs half a minute here (a fresh ClientApp per message), and the
    # localiser's messages take the same path in tests/simulation/test_dicom_pipeline.py.
    config = (f'profile="tiny" rounds=1 localiser-rounds=0 run-dir="{run_dir}" signing-key="{creds.signing_key}" '
              f'min-sites=3 bootstrap=50 connect-timeout=60.0 round-timeout=300.0 eval-timeout=300.0')
    result = run_flwr(["run", str(REPO), FEDERATION, "--run-config", config, "--stream"],
                      deployment["home"], 420, cwd=base)
    # `flwr run` can return (even with 0) before the ServerApp has finished, or although it failed:
    # the run directory is the evidence, so wait for every site's figures or a recorded failure.
    figures = [run_dir / "evaluation" / f"{site}.json" for site in SITES]
    failures = run_dir / "evaluation_failures.json"
    context = lambda: f"flwr run (rc={result.returncode}):\n{result.stdout[-4000:]}\n{procs.dump()}"  # noqa: E731
    wait_for(lambda: all(f.is_file() for f in figures) or failures.is_file(), 240,
             "the final evaluation of all three sites", context)
    assert not failures.is_file(), f"{failures.read_text()}\n{context()}"
    for path in figures:
        assert json.loads(path.read_text()), context()
    # RUN_DIR/model.sig is the coordinator's signature of model.pt: anyone holding the public key can check it.
    from common.signing import verify_checkpoint
    verify_checkpoint(run_dir / "model.pt", creds.signing_public_key)
    for site, node in deployment["nodes"].items():
        assert node.alive(), f"{site} stopped during the run\n{context()}"
