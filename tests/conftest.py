"""Shared fixtures: tiny hand-made sites and the `tiny` profile."""
from __future__ import annotations

import pytest
import torch

from common.config import get_profile
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
