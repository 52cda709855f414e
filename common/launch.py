"""Run a Flower process in the foreground, passing signals on, as `clafed server`/`clafed client` do."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def flower_env(base: Mapping[str, str] | None = None, first_on_path: Sequence[Path] = (), **extra: str) -> dict[str, str]:
    """The environment for flower-superlink/-supernode: this interpreter's bin folder first on PATH.

    Flower starts helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name, so they must
    be found next to the interpreter clafed runs in, even when the venv is not activated;
    `first_on_path` goes before it (clafed's guarded flwr-clientapp).
    """
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([*map(str, first_on_path), bin_dir,
                                   *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    env.update(extra)
    return env


def run_forwarding(command: Sequence[str], env: Mapping[str, str], cwd: str | Path | None = None) -> int:
    """Run `command`, forwarding SIGTERM/SIGINT/SIGHUP to it, and return its exit code.

    A container stop or a systemd restart then shuts Flower down cleanly instead of orphaning it.
    """
    child: subprocess.Popen | None = None

    def forward(signum, _frame):
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    # Handlers first: a signal during start-up must not kill us and orphan a just-started child.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        child = subprocess.Popen(list(command), env=dict(env), cwd=cwd)
    except BaseException:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # SIGINT reached us too; the child got it from forward()
                continue
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
