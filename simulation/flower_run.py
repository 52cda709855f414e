"""Submit clafed's Flower App to the run's SuperLink (`flwr run --stream`) and follow it to its end."""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping

from server.federation import FederationError
from simulation.local_superlink import CONNECTION, SuperLink, flower_command

STARTED = re.compile(r"Successfully started run (\d+)")
COMPLETED = "finished:completed"
FINISH_POLLS = 30


def app_dir() -> Path:
    """The clafed source tree: `flwr run` builds the app (FAB) from its pyproject.toml."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise FederationError(f"no pyproject.toml in {root}: `clafed simulate` builds its Flower App from the clafed "
                              "source tree (install it with `pip install -e .`)")
    return root


def federation_config_arg(config: Mapping[str, object]) -> str:
    """`--federation-config` text: Flower's simulation settings (num-supernodes, client-resources-...)."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in config.items())


def run_and_follow(link: SuperLink, run_config: Path, federation_config: Mapping[str, object],
                   on_line: Callable[[str], None]) -> tuple[int, str, str]:
    """Submit the run, pass each line of its log (and the CLI's) to `on_line` and into run.log.

    Returns (run id, status, details), status as `flwr ls` writes it (finished:completed, ...).
    """
    command = [flower_command("flwr"), "run", str(app_dir()), CONNECTION, "--run-config", str(run_config),
               "--federation-config", federation_config_arg(federation_config), "--stream"]
    run_id = None
    with open(link.run_log, "a", encoding="utf-8") as log, \
            subprocess.Popen(command, env=link.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, errors="replace") as cli:
        try:
            assert cli.stdout is not None
            for line in cli.stdout:
                log.write(line)
                log.flush()
                if run_id is None and (started := STARTED.search(line)):
                    run_id = int(started.group(1))
                on_line(line)
        finally:
            if cli.poll() is None:
                cli.terminate()
    if run_id is None:
        raise FederationError(f"Flower did not start the run (`flwr run` exit code {cli.returncode}); see {link.run_log}")
    status, details = run_status(link, run_id)
    for _ in range(FINISH_POLLS):  # the log stream can end a moment before the status is final
        if status.startswith("finished"):
            break
        time.sleep(1)
        status, details = run_status(link, run_id)
    return run_id, status, details


def run_status(link: SuperLink, run_id: int) -> tuple[str, str]:
    """The run's status and status details from the Control API (`flwr ls --run-id`)."""
    done = subprocess.run([flower_command("flwr"), "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
                          env=link.env, capture_output=True, text=True, timeout=120)
    try:
        run = json.loads(done.stdout)["runs"][0]
    except (ValueError, KeyError, IndexError):
        raise FederationError(f"no status of Flower run {run_id} ({done.stdout[-500:]}{done.stderr[-500:]}); "
                              f"see {link.run_log}") from None
    return str(run.get("status", "")), str(run.get("status-details", ""))
