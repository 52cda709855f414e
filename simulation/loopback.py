"""A real deployment on this machine's loopback, for the deployment tests and benchmark.

A SuperLink with TLS and node authentication and one SuperNode per site, each started through the
same `clafed server` / `clafed client` commands a coordinator and the hospitals run. Each process
gets its own session (process group), so stopping it also stops the helpers Flower spawns
(flower-superexec, flwr-serverapp, flwr-clientapp) and nothing outlives its caller; logs go to
files that assertions and error messages read.
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

import yaml

CLAFED = [sys.executable, "-m", "common.cli"]
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
SITES = ("hospital1", "hospital2", "hospital3")
READY = "Uvicorn running on https"  # the SuperLink listens


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


def site_yaml(folder: Path, name: str, data: Path, creds, address: str, key_of: str | None = None,
              with_ca: bool = True) -> Path:
    """The repository's example YAML for `name` with this deployment's data, address and credentials."""
    example = REPO / "sites" / f"{name}.yaml"
    site = yaml.safe_load(example.read_text()) if example.is_file() else {"name": name, "role": "evaluate",
                                                                           "holdout": {"kind": "all"}}
    private, _ = creds.site_keys[key_of or name]
    site.update(manifest=str(data / name / "manifest.csv"), output_dir=str(folder / "outputs" / name),
                server_address=address, device="cpu", batch_size=8, auth_private_key=str(private),
                root_certificates=str(creds.ca_cert) if with_ca else None,
                coordinator_public_key=str(creds.signing_public_key),
                heatmaps={"mode": "per_class", "per_class": 1})
    site = {k: v for k, v in site.items() if v is not None}
    path = folder / "sites" / f"{name}-{key_of or 'own'}-{'ca' if with_ca else 'noca'}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


@dataclass
class Deployment:
    base: Path
    creds: object  # server.certs.Credentials
    port: int
    address: str
    home: Path  # the coordinator's FLWR_HOME (for `flwr` commands)
    procs: Processes
    superlink: Proc
    nodes: dict[str, Proc]
    federation: str


def start_deployment(base: Path, data: Path, *, federation: str = "clafed", sites: tuple[str, ...] = SITES,
                     extra_keys: tuple[str, ...] = (), site_host: str = "127.0.0.1",
                     client_args: tuple[str, ...] = (), procs: Processes | None = None) -> Deployment:
    """Credentials, a SuperLink (with its database), every site registered and connected.

    `site_host` is the address the SuperNodes dial (127.0.0.2 plays a remote host: the Control API
    answers only on 127.0.0.1); `extra_keys` are key pairs made but not registered.
    """
    from server.certs import generate_credentials

    procs = procs or Processes(base / "logs")
    creds = generate_credentials(base / "credentials", ["127.0.0.1", "127.0.0.2", "localhost"],
                                 [*sites, *extra_keys])
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs.markers.append(address)
    # cwd outside the source tree: the ServerApp must come from the submitted app, not the cwd.
    superlink = procs.start("superlink", [*CLAFED, "server", "--certs", str(creds.out), "--host", "0.0.0.0",
                                          "--port", str(port), "--control-host", "127.0.0.1"],
                            cwd=base / "superlink", env=env_with(FLWR_HOME=str(base / "superlink" / "home")))
    wait_for(lambda: READY in superlink.text() or not superlink.alive(), 60, "the SuperLink", procs.dump)
    if not superlink.alive():
        raise RuntimeError(f"the SuperLink did not start:\n{procs.dump()}")
    home = flower_home(base / "coordinator", federation, address, creds.ca_cert)
    for site in sites:
        result = run_flwr(["supernode", "register", str(creds.site_keys[site][1]), federation, "--name", site],
                          home, 60, cwd=base)
        if result.returncode != 0 or "registered successfully" not in result.stdout:
            raise RuntimeError(f"registering {site} failed:\n{result.stdout}")
    nodes = {}
    for site in sites:
        path = site_yaml(base, site, data, creds, f"{site_host}:{port}")
        runtime = free_port()
        procs.markers.append(f"127.0.0.1:{runtime}")  # the node's flwr-clientapp processes
        nodes[site] = procs.start(site, [*CLAFED, "client", "--site", str(path), "--runtime-port", str(runtime),
                                         *client_args], cwd=base / "work" / site, env=env_with())
    for site, node in nodes.items():
        wait_for(lambda node=node: "SuperNode ID" in node.text() or not node.alive(), 60, f"{site} to connect",
                 procs.dump)
        if not node.alive():
            raise RuntimeError(f"{site}'s SuperNode stopped:\n{procs.dump()}")
    return Deployment(base, creds, port, address, home, procs, superlink, nodes, federation)
