"""A `small` synthetic dataset rendered once per test session (through the CLI)."""
from __future__ import annotations

from pathlib import Path

import pytest

from common.cli import main


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """Folder holding hospital1..3 of the `small` preset, seed 0."""
    out = tmp_path_factory.mktemp("synth") / "small"
    assert main(["synth", "--preset", "small", "--seed", "0", "--out", str(out), "--workers", "2"]) == 0
    return out


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """A CLAFED_CACHE with the synthetic `small` data generated once (what the runner would cache)."""
    from simulation.runner import synthetic_data
    folder = tmp_path_factory.mktemp("cache")
    synthetic_data("small", 0, folder)
    return folder
