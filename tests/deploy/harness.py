"""Process management for the loopback deployment tests: every process dies with the test.

Each process gets its own session (process group), so stopping it also stops the helpers Flower
spawns (flower-superexec, flwr-serverapp, flwr-clientapp); logs go to files the assertions read.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLAFED = [sys.executable, "-m", "common.cli"]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port free right now on loopback (the OS picks it; the tiny race is acceptable in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Processes:
    """Starts processes in new sessions and stops every one of them in `stop_all` (a finalizer)."""

    logs: Path
    procs: list[Proc] = field(default_factory=list)
    # Strings (e.g. "127.0.0.1:PORT") that only this test's processes have on their command line:
    # helpers orphaned when Flower's own supervisor crashed are found by them.
    markers: list[str] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 10.0) -> None:
        # Flower starts some helpers in sessions of their own (flwr-serverapp): collect every
        # descendant before the tree is broken up, so none outlives the test.
        descendants = _descendants(proc.popen.pid)
        _signal_group(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.popen.pid, signal.SIGKILL)
        for pid in descendants:
            _signal_pid(pid, signal.SIGKILL)
        try:
            proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def kill(self, proc: Proc) -> None:
        """SIGKILL `proc`, its process group and every descendant at once: a crash, no clean shutdown."""
        descendants = _descendants(proc.popen.pid)
        _signal_group(proc.popen.pid, signal.SIGKILL)
        for pid in descendants:
            _signal_pid(pid, signal.SIGKILL)
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        for pid in _pids_with(self.markers):
            _signal_pid(pid, signal.SIGKILL)

    def dump(self) -> str:
        """The tail of every log, for an assertion message."""
        return "\n".join(f"----- {p.name} (rc={p.popen.poll()}) -----\n{p.text()[-3000:]}" for p in self.procs)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(root: int) -> list[int]:
    """Every live descendant of `root` (Linux /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pids_with(markers: list[str]) -> list[int]:
    """Live processes whose command line contains one of `markers` (never this test process)."""
    if not markers:
        return []
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if pid != os.getpid() and any(m in text for m in markers):
            found.append(pid)
    return found


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(condition: Callable[[], bool], timeout: float, what: str, context: Callable[[], str] = str) -> None:
    """Poll until `condition()` holds, else fail naming `what` and showing the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{context()}")


def flower_home(folder: Path, name: str, address: str, ca_cert: Path) -> Path:
    """An isolated FLWR_HOME whose default SuperLink connection is `name` (for `flwr` commands)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n'
        f'root-certificates = "{ca_cert}"\n')
    return folder


def env_with(**extra: str) -> dict[str, str]:
    """This interpreter's bin folder first on PATH (Flower spawns its helpers by name)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("CLAFED_RUN_CONFIG", None)
    env.update(extra)
    return env


def run_flwr(args: list[str], flwr_home: Path, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    """A `flwr` CLI call against the deployment, killed (with its group) on timeout."""
    popen = subprocess.Popen([str(BIN / "flwr"), *args], cwd=cwd, env=env_with(FLWR_HOME=str(flwr_home)),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(popen.pid, signal.SIGKILL)
        out, _ = popen.communicate()
        raise AssertionError(f"flwr {' '.join(args)} did not finish in {timeout:.0f} s:\n{out[-4000:]}") from None
    return subprocess.CompletedProcess(popen.args, popen.returncode, out, None)
