"""The node localiser: box coding, augmentation, learning where the node is, and its phase."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from common.config import get_profile
from common.localiser import (
    LocaliserDataset,
    NodeLocaliser,
    _random_view,
    box_iou,
    box_to_target,
    letterbox,
    localiser_loss,
    propose_boxes,
    propose_missing_rois,
    target_to_box,
)
from common.localiser_training import train_localiser
from common.manifest import Case
from common.model import CLAHDM
from common.training import train_phases


def test_box_survives_the_letterbox_both_ways():
    image = np.zeros((300, 500, 3), np.uint8)
    square, scale = letterbox(image, 100)
    assert square.shape == (100, 100, 3) and scale == pytest.approx(0.2)
    box = (120, 40, 200, 90)
    target = box_to_target(box, scale, 100)
    assert target.tolist() == pytest.approx([0.44, 0.17, 0.4, 0.18])
    assert target_to_box(target, scale, 100, image.shape) == box
    assert target_to_box([0.99, 0.5, 0.5, 0.5], scale, 100, image.shape)[0] + 1 <= 500  # clipped into the image


def test_random_views_keep_the_whole_box_and_flip_it_with_the_image():
    image = np.zeros((120, 200, 3), np.uint8)
    box = (70.0, 30.0, 50.0, 40.0)
    image[30:70, 70:120] = 255
    flips = 0
    for seed in range(40):
        view, (x, y, w, h) = _random_view(image, box, np.random.default_rng(seed))
        assert 0 <= x and 0 <= y and x + w <= view.shape[1] + 1e-6 and y + h <= view.shape[0] + 1e-6
        inside = view[int(round(y)):int(round(y + h)), int(round(x)):int(round(x + w))]
        assert inside.size and inside.mean() > 250  # the white node is where the box says
        flips += view.shape[1] < 200 or x != 70.0
    assert flips > 10


def test_loss_is_smallest_for_the_right_box():
    target = torch.tensor([[0.5, 0.5, 0.3, 0.2]])
    assert localiser_loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    assert localiser_loss(torch.tensor([[0.6, 0.5, 0.3, 0.2]]), target) > localiser_loss(
        torch.tensor([[0.52, 0.5, 0.3, 0.2]]), target)


def _node_cases(tmp_path, n, seed):
    """Frames of speckle with a dark oval node at a random place; the ROI is its box."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        frame = rng.integers(90, 160, (96, 128), dtype=np.uint8)
        w, h = int(rng.integers(20, 40)), int(rng.integers(14, 28))
        x, y = int(rng.integers(2, 128 - w - 2)), int(rng.integers(2, 96 - h - 2))
        cv2.ellipse(frame, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 20, -1)
        path = tmp_path / f"n{seed}-{i}.png"
        cv2.imwrite(str(path), frame)
        cases.append(Case(f"n{seed}-{i}", path, path, "reactive", "2020-01-01", roi=(x, y, w, h)))
    return cases


def test_the_localiser_learns_where_the_node_is(tmp_path):
    torch.manual_seed(0)
    train, test = _node_cases(tmp_path, 64, 0), _node_cases(tmp_path, 24, 1)
    profile = get_profile("tiny", {"train": {"progress": False, "lr": 3e-3, "warmup": 0.05}})
    model = NodeLocaliser("resnet10")
    history = train_localiser(model, LocaliserDataset(train, 64, train=True), profile.train, epochs=25,
                              device=torch.device("cpu"))
    assert history[-1].loss < history[0].loss
    boxes = propose_boxes(model, [cv2.cvtColor(cv2.imread(str(c.bus_path)), cv2.COLOR_BGR2RGB) for c in test], 64)
    learned = np.mean([box_iou(b, c.roi) for b, c in zip(boxes, test)])
    centred = np.mean([box_iou((49, 34, 30, 28), c.roi) for c in test])  # a mean-sized box at the centre
    assert learned > 0.45 and learned > 2 * centred


def test_missing_rois_are_proposed_and_given_ones_kept(tmp_path):
    cases = _node_cases(tmp_path, 3, 2)
    cases[1] = dataclasses.replace(cases[1], roi=None)
    filled, proposed = propose_missing_rois(NodeLocaliser("resnet10"), cases, 64)
    assert proposed == 1 and filled[0].roi == cases[0].roi and filled[2].roi == cases[2].roi
    assert filled[1].roi is not None and len(filled[1].roi) == 4


def test_the_model_says_it_has_a_localiser_only_after_its_phase():
    profile = get_profile("tiny")
    trained = []

    def train_phase(phase, network):
        trained.append(phase)

    model = CLAHDM(profile.model)
    train_phases(model, 0, lambda: None, train_phase, untrained=lambda key: False, localiser_rounds=0)
    assert not model.has_localiser and "localiser" not in trained
    train_phases(model, 0, lambda: None, train_phase, untrained=lambda key: key == "localiser", localiser_rounds=2)
    assert not model.has_localiser and trained[-1] == "localiser"  # skipped (no ROI anywhere): no localiser
    train_phases(model, 0, lambda: None, train_phase, untrained=lambda key: False, localiser_rounds=2)
    assert model.has_localiser
    assert "localiser_trained" in model.state_dict()  # travels, and is signed, with the weights
