"""Site data: level filtering, ROI preprocessing, hue-preserving augmentation, balancing, hold-out."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from common.augment import cdfi_photometric
from common.config import AugmentConfig, DataConfig, HoldoutRule
from common.dataset import CaseDataset, CaseError, balanced_sampler, class_weights
from common.holdout import split_holdout
from common.imaging import MEAN, STD
from common.labels import LEVELS
from common.validation import load_cases


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.key)
def test_submodel_datasets_hold_only_their_classes(site_manifest, level):
    dataset = CaseDataset(load_cases(site_manifest), DataConfig(input_size=32), level=level)
    assert {c.label for c in dataset.cases} == set(level.labels)
    assert dataset.targets().tolist() == [level.target(c.label) for c in dataset.cases]
    bus, cdfi, target = dataset[0]
    assert bus.shape == cdfi.shape == (3, 32, 32) and target in (0, 1)


def test_manifest_extras_are_kept_and_roi_is_read(site_manifest):
    case = load_cases(site_manifest)[0]
    assert case.extras["site_note"] == "kept" and case.roi == (8, 8, 80, 80)
    assert case.bus_path.is_absolute()


def test_eval_tensor_is_the_roi_crop_normalised(site_manifest):
    case = load_cases(site_manifest)[0]
    cfg = DataConfig(input_size=40, roi_margin=0.0)
    bus, _, _ = CaseDataset([case], cfg)[0]
    grey = cv2.imread(str(case.bus_path), cv2.IMREAD_GRAYSCALE)[8:88, 8:88]
    expected = cv2.resize(grey, (40, 40), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    restored = bus[0].numpy() * STD[0] + MEAN[0]
    assert np.abs(restored - expected).max() < 0.02


def test_cdfi_augmentation_never_changes_hue():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 30, 10)  # a saturated red that naive gain would clip
    for seed in range(5):
        out = cdfi_photometric(rgb, AugmentConfig(gain=0.5), np.random.default_rng(seed))
        hue_in = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)[..., 0]
        hue_out = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 0]
        assert np.abs(hue_in - hue_out).max() < 1e-3


def test_training_items_are_augmented_and_repeatable(site_manifest):
    cases = load_cases(site_manifest)
    dataset = CaseDataset(cases, DataConfig(input_size=32), train=True, seed=1)
    first, again = dataset[0][0], dataset[0][0]
    dataset.set_epoch(1)
    assert torch.equal(first, again) and not torch.equal(first, dataset[0][0])


def test_unreadable_image_names_the_case(site_manifest):
    cases = load_cases(site_manifest)
    cases[0].bus_path.write_bytes(b"broken")
    with pytest.raises(CaseError, match=f"case {cases[0].case_id}: unreadable image"):
        CaseDataset(cases, DataConfig(input_size=32))[0]


def test_balanced_sampler_draws_classes_equally():
    targets = np.array([0] * 90 + [1] * 10)
    drawn = targets[list(balanced_sampler(targets, seed=0))]
    assert 35 <= (drawn == 1).sum() <= 65
    np.testing.assert_allclose(class_weights(targets), [100 / 90 / 2, 100 / 10 / 2])


def test_holdout_rules(site_manifest):
    cases = load_cases(site_manifest)
    train, held = split_holdout(cases, HoldoutRule(kind="date", date="2020-03-01"))
    assert all(c.exam_date < "2020-03-01" for c in train) and all(c.exam_date >= "2020-03-01" for c in held)
    assert len(train) + len(held) == len(cases)
    train, held = split_holdout(cases, HoldoutRule(kind="fraction", fraction=0.25, seed=3))
    assert sorted(c.label for c in held) == ["lymphoma", "metastatic", "reactive", "tuberculous"]
    assert split_holdout(cases, HoldoutRule(kind="all"))[0] == []


def test_roi_crop_keeps_the_axis_ratio():
    """A 2:1 node must stay 2:1 in the model input: the long/short-axis ratio is diagnostic."""
    from common.dataset import input_box, prepare
    image = np.zeros((200, 300, 3), np.uint8)
    image[80:120, 100:180] = 255  # an 80 x 40 bright "node" near the middle
    cfg = DataConfig(input_size=64, roi_margin=0.25, augment=AugmentConfig(box_jitter=0.0))
    assert input_box((100, 80, 80, 40), 0.25, image.shape) == (80, 40, 120, 120)
    prepared = prepare(image, (100, 80, 80, 40), cfg)
    bright = np.argwhere(prepared.image[..., 0] > 127)
    height, width = np.ptp(bright, axis=0) + 1
    assert prepared.image.shape[:2] == (64, 64) and abs(width / height - 2.0) < 0.15


def test_roi_reaching_past_the_image_is_padded_black():
    from common.dataset import prepare
    image = np.full((100, 100, 3), 200, np.uint8)
    prepared = prepare(image, (70, 10, 30, 60), DataConfig(input_size=32, roi_margin=0.0,
                                                           augment=AugmentConfig(box_jitter=0.0)))
    assert prepared.image.shape[:2] == (32, 32)
    assert prepared.image[:, -3:].max() == 0 and prepared.image[:, :3].min() == 200


def test_a_site_decodes_each_image_once_for_all_its_datasets(site_manifest, tiny_profile, monkeypatch):
    """Shared phase, sub-models, validation and held-out cohort reuse one decoded copy per case."""
    from common import dataset as dataset_module
    from common.config import SiteConfig
    from common.site import SiteData

    reads = []
    real = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path, *a: reads.append(path) or real(path, *a))
    site = SiteData.load(SiteConfig(name="s", manifest=site_manifest, validation_fraction=0.25,
                                    holdout=HoldoutRule(kind="fraction", fraction=0.25)))
    cfg = tiny_profile.data
    datasets = [site.train_dataset(None, cfg), *(site.train_dataset(lv, cfg) for lv in LEVELS),
                site.validation_dataset(None, cfg), site.validation_dataset(LEVELS[0], cfg), site.heldout_dataset(cfg)]
    for _ in range(2):
        for ds in datasets:
            for i in range(len(ds)):
                ds[i]
    assert len(reads) == len(set(reads)) == 2 * 16  # a BUS and a CDFI image per case, each read once


def test_a_site_is_reloaded_when_its_manifest_or_an_image_changes(tmp_path):
    import os

    import yaml

    from common.site import load_site
    from tests.sitegen import write_site

    manifest = write_site(tmp_path / "data", {"reactive": 2, "metastatic": 2})
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"name": "h1", "manifest": str(manifest), "holdout": {"kind": "none"},
                                    "validation_fraction": 0.0}))
    first = load_site(path)
    assert load_site(path) is first  # nothing changed: the same loaded site
    image = next((manifest.parent / "images").glob("*_bus.png"))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))  # the image was replaced
    second = load_site(path)
    assert second is not first
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[:-1]) + "\n")  # one case removed from the manifest
    third = load_site(path)
    assert third is not second and len(third.train_cases) == len(second.train_cases) - 1
