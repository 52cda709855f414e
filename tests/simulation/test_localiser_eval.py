"""`python -m simulation.localiser_eval`: IoU and AUC with proposed vs drawn boxes, per site."""
from __future__ import annotations

import pytest
import torch

from common.checkpoint import save_checkpoint
from common.config import DataConfig, get_profile
from common.model import CLAHDM
from common.validation import load_cases
from simulation.localiser_eval import evaluate_run, markdown, site_figures
from tests.sitegen import write_site


def test_figures_compare_drawn_and_proposed_boxes_on_the_same_cases(tmp_path):
    cases = load_cases(write_site(tmp_path / "site", {c: 3 for c in ("reactive", "tuberculous", "lymphoma",
                                                                     "metastatic")}))
    torch.manual_seed(0)
    model = CLAHDM(get_profile("tiny").model).eval()
    figures = site_figures(model, DataConfig(input_size=64, localiser_size=64), cases, torch.device("cpu"),
                           n_resamples=50)
    assert figures["n"] == 12 and 0.0 <= figures["iou_low"] <= figures["iou_mean"] <= figures["iou_high"] <= 1.0
    for name in ("true", "proposed"):
        assert 0.0 <= figures[f"{name}_macro"] <= 1.0 and 0.0 <= figures[f"{name}_micro"] <= 1.0
    assert figures["macro_drop"] == pytest.approx(figures["true_macro"] - figures["proposed_macro"])
    assert "| site (12) |" in markdown({"site": figures})


def test_a_model_without_a_trained_localiser_is_refused(tmp_path):
    save_checkpoint(tmp_path / "model.pt", CLAHDM(get_profile("tiny").model), DataConfig(input_size=64))
    with pytest.raises(SystemExit, match="no trained localiser"):
        evaluate_run(tmp_path)
