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
                                   start_new_session=True, preexec_fn=_end_with_parent)
    link = SuperLink(folder, port, process, env)
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


def _end_with_parent() -> None:
    """Linux: SIGTERM to the SuperLink when clafed dies, even by SIGKILL (its SuperExec and
    flwr-simulation follow their parents), so a killed run leaves no SuperLink behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_superlink(link: SuperLink) -> None:
    """SIGTERM to the SuperLink and all its descendants, SIGKILL to what is left after STOP_GRACE."""
    tree = process_tree(link.process.pid)
    for pid in tree:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(_alive(pid) for pid in tree):
        link.process.poll()  # reaps the SuperLink itself
        time.sleep(0.2)
    for pid in tree:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    try:
        link.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (Linux /proc; elsewhere `root` only), read before any is signalled:
    a process whose parent ends is re-parented and would drop out of the tree."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # The command name in brackets may hold spaces: fields start after its last ')'.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        if not Path("/proc").is_dir():  # not Linux: ask the process itself
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass
