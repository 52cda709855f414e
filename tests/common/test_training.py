"""Local training and inference of sub-models and of the assembled CLA-HDM."""
from __future__ import annotations

import numpy as np
import pytest
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
    # The sub-model figures a site's federated validation reports read the cases as CLA-HDM does.
    dataset = CaseDataset(load_cases(site_manifest), tiny_profile.data)
    for level in range(3):
        key = f"submodel{level + 1}"
        mirrored = predict_submodel(model.submodel(key), dataset, mirror=tiny_profile.model.mirror_average)
        np.testing.assert_allclose(mirrored.scores, preds.levels[:, level], atol=1e-5)


def test_a_carried_optimiser_continues_instead_of_restarting(site_manifest, tiny_profile):
    """Round 2 with the carry goes on from round 1's second moments (its step count adds up); the
    carry holds no first moment, which starts from zero each round."""
    from common.training import OptimizerCarry

    dataset = CaseDataset(load_cases(site_manifest), tiny_profile.data, level=LEVEL_BY_KEY["submodel1"], train=True)
    steps = -(-len(dataset) // tiny_profile.train.batch_size)
    torch.manual_seed(0)
    model, carry = SubModel(tiny_profile.model), OptimizerCarry()
    train_submodel(model, dataset, tiny_profile.train, epochs=1, carry=carry)
    assert carry.state is not None
    assert all(set(s) == {"step", "exp_avg_sq"} for s in carry.state["state"].values())
    counts = {float(s["step"]) for s in carry.state["state"].values()}
    assert counts == {float(steps)}
    assert all(t.device.type == "cpu" for s in carry.state["state"].values() for t in s.values()
               if isinstance(t, torch.Tensor))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    train_submodel(model, dataset, tiny_profile.train, epochs=1, span=(0.5, 1.0), carry=carry)
    assert {float(s["step"]) for s in carry.state["state"].values()} == {2.0 * steps}
    assert any(not torch.equal(first[k], v) for k, v in model.state_dict().items())
    # A call without a carry neither reads nor keeps one.
    before = carry.state
    train_submodel(model, dataset, tiny_profile.train, epochs=1)
    assert carry.state is before


def test_a_carried_state_of_another_network_leaves_the_optimiser_fresh():
    from common.training import carried_state, restore_optimizer

    small, other = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)
    source = torch.optim.AdamW(small.parameters())
    small(torch.ones(1, 3)).sum().backward()
    source.step()
    target = torch.optim.AdamW(other.parameters())
    assert restore_optimizer(target, carried_state(source)) is False and not target.state
    again = torch.optim.AdamW(small.parameters())
    assert restore_optimizer(again, carried_state(source)) is True
    assert all(torch.count_nonzero(s["exp_avg"]) == 0 for s in again.state.values())


def test_mixed_precision_is_chosen_per_device():
    from common.training import autocast_dtype

    assert autocast_dtype("auto", torch.device("cpu")) is None  # slower than fp32 on a CPU
    assert autocast_dtype("fp32", torch.device("cuda")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert autocast_dtype("fp16", torch.device("cuda")) == torch.float16


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_learns_and_keeps_fp32_weights(site_manifest, tiny_profile, precision):
    """The autocast path (what a GPU site runs) exercised on the CPU: the same 16 cases are learnt,
    with fp16's loss scaling, and the weights that travel stay fp32. At 32 px: a CPU has no fast
    fp16 convolutions (10 epochs at the tiny profile's 64 px took 99 s, bf16 3 s)."""
    from dataclasses import replace

    data = replace(tiny_profile.data, input_size=32)
    dataset = CaseDataset(load_cases(site_manifest), data, level=LEVEL_BY_KEY["submodel1"])
    torch.manual_seed(0)
    model = SubModel(tiny_profile.model)
    history = train_submodel(model, dataset, replace(tiny_profile.train, precision=precision), epochs=4)
    assert all(np.isfinite(h.loss) for h in history) and history[-1].loss < history[0].loss
    assert history[-1].accuracy >= 0.8, [h.loss for h in history]
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.dtype.is_floating_point)
