"""Local training and inference of sub-models and of the assembled CLA-HDM."""
from __future__ import annotations

import numpy as np
import torch

from common.dataset import CaseDataset
from common.labels import LEVEL_BY_KEY
from common.model import CLAHDM, SubModel
from common.training import evaluating, predict_clahdm, predict_submodel, train_submodel
from common.validation import load_cases


def test_tiny_submodel_overfits_16_cases_through_both_branches(site_manifest, tiny_profile):
    level = LEVEL_BY_KEY["submodel1"]
    cfg = tiny_profile
    dataset = CaseDataset(load_cases(site_manifest), cfg.data, level=level)  # no augmentation: memorise
    torch.manual_seed(0)
    model = SubModel(cfg.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train_submodel(model, dataset, cfg.train, epochs=15)
    preds = predict_submodel(model, dataset)
    accuracy = ((preds.scores > 0.5) == preds.targets).mean()
    assert accuracy >= 0.95, (accuracy, [h.loss for h in history])
    assert history[-1].loss < history[0].loss and history[-1].num_examples == 16
    for branch in ("bus", "cdfi"):
        key = f"{branch}.layer1.0.conv1.weight"
        assert not torch.equal(before[key], model.state_dict()[key])
    assert not torch.equal(before["cdfi_attention.fc.0.weight"], model.state_dict()["cdfi_attention.fc.0.weight"])


def test_training_is_seeded(site_manifest, tiny_profile):
    dataset = CaseDataset(load_cases(site_manifest), tiny_profile.data, level=LEVEL_BY_KEY["submodel3"], train=True)
    losses = []
    for _ in range(2):
        torch.manual_seed(1)
        model = SubModel(tiny_profile.model)
        losses.append([h.loss for h in train_submodel(model, dataset, tiny_profile.train, epochs=1)])
    assert losses[0] == losses[1]


def test_empty_dataset_trains_nothing(site_manifest, tiny_profile):
    cases = [c for c in load_cases(site_manifest) if c.label == "reactive"]
    dataset = CaseDataset(cases, tiny_profile.data, level=LEVEL_BY_KEY["submodel3"])
    assert train_submodel(SubModel(tiny_profile.model), dataset, tiny_profile.train) == []


def test_clahdm_predictions_and_eval_mode_restored(site_manifest, tiny_profile):
    model = CLAHDM(tiny_profile.model).train()
    preds = predict_clahdm(model, CaseDataset(load_cases(site_manifest), tiny_profile.data))
    assert model.training
    assert preds.scores.shape == preds.hard.shape == (16, 4) and preds.levels.shape == (16, 3)
    np.testing.assert_allclose(preds.scores.sum(1), 1.0, atol=1e-5)
    assert sorted(set(preds.targets.tolist())) == [0, 1, 2, 3]
    with evaluating(model):
        assert not model.training and not torch.is_grad_enabled()
