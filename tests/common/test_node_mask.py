"""The shared phase's node-mask target: masks follow their images, bad masks are named, the heads learn."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from common.config import DataConfig, get_profile
from common.dataset import MASK_MISSING, CaseDataset, CaseError
from common.labels import LEVELS, SHARED
from common.model import SubModel, initial_model, initial_network
from common.training import evaluating, mask_loss, train_submodel
from common.validation import load_cases, validate_manifest
from tests.sitegen import write_site

COUNTS = {c: 4 for c in ("reactive", "tuberculous", "lymphoma", "metastatic")}


@pytest.fixture
def masked_manifest(tmp_path):
    return write_site(tmp_path / "site", COUNTS, masks=True)


def brightness_inside(image: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Mean of the image's first channel inside and outside a [0, 1] mask."""
    grey, inside = image[0], mask > 0.5
    return float(grey[inside].mean()), float(grey[~inside].mean())


def test_each_branch_mask_follows_its_own_augmentation(masked_manifest):
    dataset = CaseDataset(load_cases(masked_manifest), DataConfig(input_size=48), train=True, seed=3, masks=True)
    for index in range(len(dataset)):
        bus, cdfi, _, masks = dataset[index]
        assert masks.shape == (2, 48, 48) and 0.0 <= float(masks.min()) and float(masks.max()) <= 1.0
        # The node is the bright blob: under its own view's mask each image is far brighter.
        for image, mask in ((bus, masks[0]), (cdfi, masks[1])):
            inside, outside = brightness_inside(image, mask)
            assert inside > outside + 1.0, (index, inside, outside)
    # The two branches are augmented independently, so their views differ somewhere.
    assert any(not torch.equal(dataset[i][3][0], dataset[i][3][1]) for i in range(len(dataset)))


def test_an_unaugmented_mask_is_the_roi_crop_of_the_file(masked_manifest):
    case = load_cases(masked_manifest)[0]
    _, _, _, masks = CaseDataset([case], DataConfig(input_size=40, roi_margin=0.0), masks=True)[0]
    assert torch.equal(masks[0], masks[1])
    import cv2
    expected = cv2.resize(cv2.imread(str(case.node_mask), cv2.IMREAD_GRAYSCALE)[8:88, 8:88], (40, 40),
                          interpolation=cv2.INTER_AREA) / 255.0
    assert np.abs(masks[0].numpy() - expected).max() < 0.02


def test_a_case_without_a_mask_is_marked_and_trains_without_one(tmp_path, masked_manifest, tiny_profile):
    table = pd.read_csv(masked_manifest, dtype=str, keep_default_na=False)
    table.loc[table.index[:8], "node_mask_path"] = ""
    table.to_csv(masked_manifest, index=False)
    cases = load_cases(masked_manifest)
    assert [c.node_mask is None for c in cases] == [True] * 8 + [False] * 8
    dataset = CaseDataset(cases, tiny_profile.data, train=True, masks=True)
    assert bool((dataset[0][3] == MASK_MISSING).all()) and bool((dataset[8][3] >= 0).all())
    # Without a single mask the heads get no gradient at all (a site without masks leaves them as received).
    unmasked = CaseDataset(cases[:8], tiny_profile.data, train=True, masks=True)
    cfg = replace(tiny_profile.train, mask_weight=1.0, aux_weight=0.0)
    network = initial_network(tiny_profile.model, 4, mask_heads=True)
    before = {k: v.clone() for k, v in network.state_dict().items() if "mask_head" in k}
    train_submodel(network, unmasked, cfg, epochs=1)
    assert all(torch.equal(before[k], network.state_dict()[k]) for k in before)


def test_a_missing_or_mis_sized_mask_is_named(masked_manifest):
    import cv2
    cases = load_cases(masked_manifest)
    cases[0].node_mask.unlink()
    cv2.imwrite(str(cases[1].node_mask), np.zeros((50, 60), np.uint8))
    problems = [str(p) for p in validate_manifest(masked_manifest)]
    assert any(cases[0].case_id in p and "node_mask_path" in p and "missing" in p for p in problems), problems
    assert any(cases[1].case_id in p and "60x50" in p for p in problems), problems
    with pytest.raises(CaseError, match=f"case {cases[0].case_id}: node mask .* missing"):
        CaseDataset(cases[:1], DataConfig(input_size=32), masks=True)[0]
    with pytest.raises(CaseError, match=f"case {cases[1].case_id}: node mask .* must match"):
        CaseDataset(cases[1:2], DataConfig(input_size=32), masks=True)[0]


def test_mask_loss_is_low_only_for_the_right_mask():
    truth = torch.zeros(2, 32, 32)
    truth[:, 8:24, 8:24] = 1.0
    right = torch.full((2, 1, 4, 4), -8.0)
    right[:, :, 1:3, 1:3] = 8.0
    assert float(mask_loss(right, truth)) < 0.05 < 0.5 < float(mask_loss(-right, truth))


def test_the_mask_heads_learn_the_node(masked_manifest, tiny_profile):
    cases = load_cases(masked_manifest)
    cfg = replace(tiny_profile.train, mask_weight=1.0, lr=3e-3, batch_size=8)
    network = initial_network(tiny_profile.model, 4, mask_heads=True)
    train_submodel(network, CaseDataset(cases, tiny_profile.data, train=True, masks=True), cfg, epochs=12)
    evaluation = CaseDataset(cases, tiny_profile.data, masks=True)
    with evaluating(network):
        ious = []
        for index in range(len(evaluation)):
            bus, cdfi, _, masks = evaluation[index]
            out = network.forward_all(bus[None], cdfi[None])
            for logits, mask in ((out.bus_mask, masks[0]), (out.cdfi_mask, masks[1])):
                truth = torch.nn.functional.adaptive_avg_pool2d(mask[None, None], logits.shape[-2:]) > 0.5
                guess = logits > 0
                ious.append(float((guess & truth).sum() / (guess | truth).sum().clamp(min=1)))
    assert np.mean(ious) > 0.6, ious


def test_mask_heads_stay_in_the_shared_network(tiny_profile):
    profile = get_profile("tiny", {"train": {"mask_weight": 0.5}})
    shared = initial_network(profile.model, 4, mask_heads=profile.train.mask_target)
    assert any("mask_head" in k for k in shared.state_dict())
    from client.local_training import phase_network
    assert phase_network(profile, SHARED).state_dict().keys() == shared.state_dict().keys()
    assert not any("mask_head" in k for k in phase_network(profile, LEVELS[0].key).state_dict())
    # The sub-models (and so CLA-HDM, its checkpoints and signatures) take the extractors, not the heads.
    model = initial_model(profile.model)
    copied = model.submodel(LEVELS[0].key).initialise_from(shared)
    assert copied == len(SubModel(profile.model).state_dict()) - 2 * 3  # all but the three output layers' weights and biases
    assert not any("mask_head" in k for k in model.state_dict())
