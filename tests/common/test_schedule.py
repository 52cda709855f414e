"""One learning-rate schedule over a whole run: warm-up, cosine decay, and rounds that continue it."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from common.dataset import CaseDataset
from common.labels import LEVEL_BY_KEY
from common.model import SubModel
from common.training import lr_factor, train_submodel
from common.validation import load_cases


def test_warm_up_then_cosine_to_the_floor():
    assert lr_factor(0.0, 0.1, 0.02) == pytest.approx(0.02)
    assert lr_factor(0.05, 0.1, 0.02) == pytest.approx(0.51)
    assert lr_factor(0.1, 0.1, 0.02) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1, 0.02) == pytest.approx(0.51)
    assert lr_factor(1.0, 0.1, 0.02) == pytest.approx(0.02)
    values = [lr_factor(p / 100, 0.1, 0.02) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after the warm-up


def train_rounds(site_manifest, profile, rounds: int) -> list[float]:
    """Each round's last learning rate when a sub-model trains `rounds` rounds of one schedule."""
    dataset = CaseDataset(load_cases(site_manifest), profile.data, level=LEVEL_BY_KEY["submodel1"], train=True)
    torch.manual_seed(0)
    model = SubModel(profile.model)
    return [train_submodel(model, dataset, profile.train, epochs=1, span=((r - 1) / rounds, r / rounds))[-1].lr
            for r in range(1, rounds + 1)]


def test_the_last_round_ends_at_the_final_learning_rate(site_manifest, tiny_profile):
    profile = replace(tiny_profile, train=replace(tiny_profile.train, lr=1e-3, warmup=0.25, lr_floor=0.05))
    last = train_rounds(site_manifest, profile, rounds=4)
    assert last[0] == pytest.approx(1e-3)  # the warm-up ends with the first round
    assert last[-1] == pytest.approx(1e-3 * 0.05)
    assert last == sorted(last, reverse=True)


def test_a_round_is_placed_on_the_schedule_by_its_number_alone(site_manifest, tiny_profile):
    """What resume relies on: round 3 of 4 trains at the same rates whether or not 1 and 2 ran here."""
    dataset = CaseDataset(load_cases(site_manifest), tiny_profile.data, level=LEVEL_BY_KEY["submodel1"], train=True)
    fresh = train_submodel(SubModel(tiny_profile.model), dataset, tiny_profile.train, epochs=1, span=(0.5, 0.75))
    assert fresh[-1].lr == pytest.approx(tiny_profile.train.lr * lr_factor(0.75, tiny_profile.train.warmup,
                                                                            tiny_profile.train.lr_floor))
