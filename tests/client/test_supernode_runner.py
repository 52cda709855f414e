"""The SuperNode asks for work every --poll seconds, not every 3 s."""
from __future__ import annotations

import time

import pytest

from client import supernode_runner


def test_the_idle_wait_is_capped_and_everything_else_is_time():
    capped = supernode_runner.capped_time(0.05)
    started = time.monotonic()
    capped.sleep(3)
    assert time.monotonic() - started < 1.0
    assert abs(capped.time() - time.time()) < 1.0 and capped.monotonic is time.monotonic


def test_install_reaches_the_supernodes_loop(monkeypatch):
    import flwr.supernode.start_client_internal as internal

    monkeypatch.setattr(internal, "time", time)  # undone after the test
    assert supernode_runner.install(0.2)
    started = time.monotonic()
    internal.time.sleep(3)  # the loop's `time.sleep(3)` when the SuperLink has nothing
    assert time.monotonic() - started < 1.0
    assert not supernode_runner.install(0.2)  # not twice, and not on a module shaped otherwise


def test_only_a_supernode_command_is_run():
    with pytest.raises(SystemExit):
        supernode_runner.main(["--poll", "0.5", "--", "sh", "-c", "echo hi"])
    with pytest.raises(SystemExit):
        supernode_runner.main(["--poll", "0", "--", "flower-supernode"])
