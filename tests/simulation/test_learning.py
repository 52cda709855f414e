"""The training recipe learns what only the images' layout shows, where a histogram model cannot."""
from __future__ import annotations

import pytest
import yaml

from common.dataset import CaseDataset
from common.training import predict_clahdm
from server import run_dir as rd
from server.settings import Settings
from simulation.baselines import load_sites, train_centrally
from simulation.difficulty import histogram_baseline_auc, macro_ovr_auc
from tests.sitegen import draw_spatial_case, write_site

pytestmark = pytest.mark.slow  # trains a tiny CLA-HDM through every phase: about a minute


@pytest.fixture(scope="module")
def spatial_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("spatial")
    manifest = write_site(root / "data", {c: 40 for c in ("reactive", "tuberculous", "lymphoma", "metastatic")},
                          seed=3, draw=draw_spatial_case)
    site_yaml = root / "site.yaml"
    site_yaml.write_text(yaml.safe_dump({"name": "spatial", "manifest": str(manifest), "device": "cpu",
                                         "holdout": {"kind": "fraction", "fraction": 0.25, "seed": 1},
                                         "output_dir": str(root / "out")}))
    return load_sites([site_yaml])[0]


def test_the_recipe_beats_the_histogram_floor_on_spatial_patterns(spatial_site, tmp_path):
    site = spatial_site
    assert len(site.validation_cases) > 0 and len(site.heldout_cases) == 40
    floor = histogram_baseline_auc(site.train_cases + site.validation_cases, site.heldout_cases)
    settings = Settings(profile="tiny", shared_rounds=6, rounds=4, localiser_rounds=0, run_dir=str(tmp_path / "run"),
                        lr=2e-3)
    model = train_centrally(settings, "spatial", [site], tmp_path / "run")
    profile = settings.build_profile()
    preds = predict_clahdm(model, CaseDataset(site.heldout_cases, profile.data))
    auc = macro_ovr_auc(preds.targets, preds.scores)
    assert floor < 0.7, floor  # the layout, not the histograms, carries the class
    assert auc > floor + 0.2, (auc, floor)
    # The recipe's parts ran: shared phase first, every round validated, a gate chosen on validation data.
    phases = [r["level"] for r in rd.read_jsonl(tmp_path / "run" / rd.METRICS_FILE)]
    assert phases[:6] == ["shared"] * 6 and len(phases) == 6 + 3 * 4
    assert len(rd.read_jsonl(tmp_path / "run" / rd.VALIDATION_FILE)) == len(phases)
    chosen = rd.read_json(tmp_path / "run" / rd.RUN_FILE)["decision_thresholds"]
    assert model.decision_thresholds == tuple(chosen[k] for k in ("submodel1", "submodel2", "submodel3"))
