"""A `small` synthetic dataset rendered once per test session (through the CLI)."""
from __future__ import annotations

import pytest

from common.cli import main


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """Folder holding hospital1..3 of the `small` preset, seed 0."""
    out = tmp_path_factory.mktemp("synth") / "small"
    assert main(["synth", "--preset", "small", "--seed", "0", "--out", str(out), "--workers", "2"]) == 0
    return out
