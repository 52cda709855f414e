"""Shared fixtures: tiny hand-made sites, the `tiny` profile and a tiny model checkpoint."""
from __future__ import annotations

import pytest
import torch

from common.checkpoint import save_checkpoint
from common.config import get_profile
from common.model import CLAHDM
from tests.sitegen import write_site

torch.set_num_threads(2)


@pytest.fixture
def tiny_profile():
    """The tests' profile without augmentation noise or dropout, and no progress bars."""
    return get_profile("tiny", {"model": {"dropout": 0.0}, "train": {"progress": False}})


@pytest.fixture
def site_manifest(tmp_path):
    """A 16-case site, 4 per class."""
    return write_site(tmp_path / "site", {c: 4 for c in ("reactive", "tuberculous", "lymphoma", "metastatic")})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded random-init `tiny` CLA-HDM checkpoint, one per test module (tests may sign it)."""
    profile = get_profile("tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, CLAHDM(profile.model), profile.data)
    return path


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Flower gives every message built inside a running app its task's identity; tests build
    messages outside one, so each test gets a fixed identity (restored afterwards)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_run_id", "_task_id", "_node_id"):  # what its run_id/task_id/node_id properties read
        monkeypatch.setattr(TaskIdentity, attribute, 1)
