"""A private Flower SuperLink in simulation mode for one `clafed simulate` run.

What Flower 1.42 supports for simulations: a SuperLink started with `--simulation` and a run
submitted to it (`flwr run`). This one binds loopback on a free port, installs nothing at run time
(the app runs on the clafed installed here: offline), keeps FLWR_HOME, its logs and the unpacked
app in the run folder, and is stopped with every process it started (SuperExec, flwr-simulation,
Ray) however the run ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from server.federation import FederationError
from simulation.orphan_guard import alive, process_tree, send

FLOWER_DIR = "flower"  # inside the run folder
CONNECTION = "clafed-simulation"  # the SuperLink connection's name in FLWR_HOME/config.toml
STARTUP_TIMEOUT = 120.0
STOP_GRACE = 10.0


@dataclass
class SuperLink:
    folder: Path  # FLOWER_DIR of the run: home/ (FLWR_HOME), superlink.log, run.log
    port: int
    process: subprocess.Popen
    env: dict[str, str]  # what the SuperLink and the Flower CLI calls run with
    guard: subprocess.Popen  # simulation/orphan_guard.py

    @property
    def log_file(self) -> Path:
        return self.folder / "superlink.log"

    @property
    def run_log(self) -> Path:
        return self.folder / "run.log"


def flower_command(name: str) -> str:
    """A Flower executable of this Python's environment (found without an activated venv)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_superlink(run_dir: Path, environ: Mapping[str, str]) -> SuperLink:
    """Start the SuperLink and wait until it answers; its environment reaches every process it spawns."""
    folder = run_dir / FLOWER_DIR
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    env = dict(environ, FLWR_HOME=str(home), FLWR_DISABLE_UPDATE_CHECK="1",
               FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
               # The SuperLink starts `flower-superexec`, which starts `flwr-simulation`, by name.
               PATH=os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")]))
    command = [flower_command("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
               "--port", str(port), "--disable-runtime-dependency-installation"]
    with open(folder / "superlink.log", "ab") as log:
        # Own session: the terminal's Ctrl-C reaches clafed, which stops the whole tree in order.
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    # Killed clafed must not leave the run going on: the guard ends the tree then.
    guard = subprocess.Popen([sys.executable, "-m", "simulation.orphan_guard", str(os.getpid()), str(process.pid)],
                             env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    link = SuperLink(folder, port, process, env, guard)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while not _healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise FederationError(f"Flower's SuperLink did not start (exit code {process.returncode}); "
                                      f"see {link.log_file}")
            time.sleep(0.3)
    except BaseException:  # Ctrl-C included
        stop_superlink(link)
        raise
    return link


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_superlink(link: SuperLink) -> None:
    """SIGTERM to the SuperLink and all its descendants, SIGKILL to what is left after STOP_GRACE."""
    # Read before any is signalled: a process whose parent ends drops out of the tree.
    tree = process_tree(link.process.pid)
    send(tree, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(alive(pid) for pid in tree):
        link.process.poll()  # reaps the SuperLink itself
        time.sleep(0.2)
    send([pid for pid in tree if alive(pid)], signal.SIGKILL)
    for process in (link.process, link.guard):  # the guard ends with the SuperLink
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
