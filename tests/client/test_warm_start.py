"""The ClientApp Flower starts for each message is forked from clafed's warm server when one runs."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from client import app_guard, warm_start
from simulation.loopback import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path):
    """A warm server (child of this test), its socket and its log."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"clafed-test-{os.getpid()}-{tmp_path.name}.sock"
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "client.warm_start", str(path)], stderr=out, cwd=REPO)
    try:
        wait_for(lambda: "ready" in log.read_text() or process.poll() is not None, 120, "the warm server")
        assert process.poll() is None, log.read_text()
        yield path, log
    finally:
        process.terminate()
        process.wait(10)
    assert not path.exists()  # removed on the way out


def launch(script: Path, *args: str, socket_path: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != warm_start.ENV_SOCKET}
    if socket_path is not None:
        env[warm_start.ENV_SOCKET] = str(socket_path)
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, env=env)


def test_a_launch_runs_flowers_clientapp_in_a_warm_child(server, tmp_path):
    path, log = server
    script = app_guard.write_launcher(tmp_path / "bin")
    result = launch(script, "--help", socket_path=path)
    assert result.returncode == 0 and "--runtime-api-address" in result.stdout, result.stdout + result.stderr
    assert "started warm" in log.read_text()
    # The child's exit code comes back (argparse: 2 for an unknown argument), and its stderr.
    bad = launch(script, "--no-such-flag", socket_path=path)
    assert bad.returncode == 2 and "flwr-clientapp: error" in bad.stderr
    assert log.read_text().count("started warm") == 2


def test_without_a_server_the_launch_is_cold(tmp_path):
    script = app_guard.write_launcher(tmp_path / "bin")
    result = launch(script, "--help", socket_path=tmp_path / "nobody-listens.sock")
    assert result.returncode == 0 and "--runtime-api-address" in result.stdout, result.stderr


def test_a_signal_to_the_launcher_reaches_the_child(server, tmp_path):
    path, log = server
    script = app_guard.write_launcher(tmp_path / "bin")
    env = dict(os.environ, **{warm_start.ENV_SOCKET: str(path)})
    # A ClientApp that keeps retrying a Runtime API nobody serves, until it is stopped.
    launcher = subprocess.Popen([str(script), "--runtime-api-address", "127.0.0.1:9", "--token", "t", "--insecure"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_for(lambda: "started warm" in log.read_text(), 60, "the warm child")
    child = int(log.read_text().split("ClientApp process ")[1].split()[0])
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(60)
    wait_for(lambda: not Path(f"/proc/{child}").exists(), 30, "the child to stop")


def test_the_server_stops_when_clafed_client_does(tmp_path):
    path = tmp_path / "s.sock"
    # The server's parent (a shell standing in for `clafed client`) exits after a few seconds.
    parent = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -m client.warm_start "{path}" & sleep 20'], cwd=REPO,
                              stderr=subprocess.DEVNULL)
    wait_for(path.exists, 120, "the warm server")
    parent.kill()
    parent.wait()
    wait_for(lambda: not path.exists(), 30, "the orphaned server to stop")


def test_only_the_servers_own_user_may_launch(monkeypatch):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        monkeypatch.setattr(warm_start.os, "getuid", lambda: os.geteuid() + 1)
        monkeypatch.setattr(warm_start.os, "fork", lambda: pytest.fail("forked for another user"))
        assert warm_start._fork_for(ours, theirs) is None
