"""Fixtures of the web tests: a site with one evaluation in its output folder."""
from __future__ import annotations

import pytest
import torch

from client.evaluation import evaluate_site
from client.heatmaps import write_heatmaps
from common.checkpoint import load_checkpoint
from common.config import HeatmapSelection
from common.labels import CLASSES
from common.validation import load_cases
from tests.sitegen import write_site


@pytest.fixture(scope="module")
def evaluated_site(tmp_path_factory, checkpoint):
    """A site with one evaluation (heatmaps for one case per class) in its output_dir."""
    root = tmp_path_factory.mktemp("results")
    manifest = write_site(root / "data", {c: 2 for c in CLASSES})
    out = root / "outputs"
    yaml = root / "h1.yaml"
    yaml.write_text(f"name: h1\nmanifest: {manifest}\noutput_dir: {out}\nholdout: {{kind: fraction, fraction: 0.5}}\n")
    loaded = load_checkpoint(checkpoint)
    cases = load_cases(manifest)
    device = torch.device("cpu")
    evaluate_site(loaded.model, cases, loaded.data_config, out / "run1" / "evaluation", n_resamples=20, device=device)
    write_heatmaps(loaded.model, cases, loaded.data_config, HeatmapSelection(per_class=1), out / "run1" / "heatmaps", device)
    (out / "not-an-evaluation").mkdir()
    return yaml, out, cases
