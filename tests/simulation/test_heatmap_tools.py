"""The heatmap faithfulness measure (masks of synthetic cases) and the heatmap benchmark."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from common.checkpoint import save_checkpoint
from common.config import get_profile
from common.labels import CLASSES
from common.model import CLAHDM
from simulation import faithfulness, heatmap_benchmark


def test_energy_and_pointing_on_known_maps():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    heat = np.zeros((10, 10), np.float32)
    heat[3, 3], heat[8, 8] = 3.0, 1.0
    assert faithfulness.energy_inside(heat, mask) == pytest.approx(0.75)
    assert faithfulness.pointing_hit(heat, mask)
    assert not faithfulness.pointing_hit(heat.T[::-1, ::-1], mask)
    flat_top = np.zeros((10, 10), np.float32)
    flat_top[0:7, 0:7] = 1.0  # a plateau reaching the corner: its centre (3, 3) is in the mask
    assert faithfulness.pointing_hit(flat_top, mask)
    empty = np.zeros((10, 10), np.float32)
    assert faithfulness.energy_inside(empty, mask) == 0.0 and not faithfulness.pointing_hit(empty, mask)


def test_centred_gaussian_peaks_at_the_box_centre_and_is_zero_outside():
    heat = faithfulness.centred_gaussian((10, 20, 40, 40), (100, 80))
    assert heat.shape == (100, 80) and heat.max() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(heat), heat.shape) in {(39, 29), (39, 30), (40, 29), (40, 30)}
    assert not heat[:20].any() and not heat[60:].any() and not heat[:, :10].any() and not heat[:, 50:].any()


def test_faithfulness_script_writes_per_class_json(small_dataset, tmp_path, capsys):
    profile = get_profile("tiny")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", CLAHDM(profile.model), profile.data)
    out = tmp_path / "f.json"
    args = ["--model", str(tmp_path / "m.pt"), "--data", str(small_dataset / "hospital2"), "--out", str(out),
            "--cohort", "all", "--limit", "6"]
    assert faithfulness.main(args) == 0
    result = json.loads(out.read_text())
    classes = set(result["fused"])
    assert classes <= set(CLASSES) and all(set(result[name]) == classes for name in faithfulness.MAPS)
    assert sum(v["n"] for v in result["fused"].values()) == 6 == result["settings"]["cases"]
    for name in faithfulness.MAPS:
        for row in result[name].values():
            assert all(0.0 <= row[k] <= 1.0 for k in faithfulness.METRICS)
    assert set(result["deletion_insertion"]) == {"deletion", "deletion_random", "insertion", "insertion_random"}
    assert all(0.0 <= v <= 1.0 for v in result["deletion_insertion"].values())
    assert set(result["randomisation"]) == {"fused", "fused_max", "layer4"}
    assert all(-1.0 <= r["spearman_mean"] <= 1.0 for r in result["randomisation"].values())
    assert set(result["randomised"]) == {"fused"} and set(result["randomised"]["fused"]) == classes
    for row in result["randomised"]["fused"].values():
        assert all(0.0 <= row[k] <= 1.0 for k in faithfulness.METRICS)
    printed = capsys.readouterr().out
    assert "| class | n | fused | fused_max | layer4 | gaussian_box | gaussian_image |" in printed
    assert "fused maps, trained vs re-initialised network" in printed


def test_reinitialised_draws_every_layer_afresh_and_leaves_the_model_alone():
    profile = get_profile("tiny")
    torch.manual_seed(0)
    model = CLAHDM(profile.model)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scrambled = faithfulness.reinitialised(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    convs = [(name, m.weight) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    fresh = dict(scrambled.named_modules())
    assert convs and all(not torch.equal(w, fresh[name].weight) for name, w in convs)
    assert float(fresh[next(n for n, m in model.named_modules() if m is bn)].running_mean.abs().max()) == 0.0
    assert not scrambled.training


def test_the_randomisation_check_catches_maps_that_ignore_the_weights(small_dataset, monkeypatch):
    from client import cam

    profile = get_profile("tiny")
    torch.manual_seed(0)
    model = CLAHDM(profile.model)
    cases = faithfulness.find_cases(small_dataset / "hospital2", "all")[:3]

    def from_the_input_only(submodel, bus, cdfi, stages=cam.DEFAULT_STAGES, fusion=cam.DEFAULT_FUSION):
        maps = [image.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1).clamp_min(0) for image in (bus, cdfi)]
        return cam.BranchCAMs(torch.tensor([[0.4, 0.6]]), *maps)

    def from_the_weights(submodel, bus, cdfi, stages=cam.DEFAULT_STAGES, fusion=cam.DEFAULT_FUSION):
        seed = int(abs(float(next(submodel.parameters()).sum())) * 1e6) % 2 ** 31
        gen = torch.Generator().manual_seed(seed)
        maps = [torch.rand(1, 2, *image.shape[-2:], generator=gen) for image in (bus, cdfi)]
        return cam.BranchCAMs(torch.tensor([[0.4, 0.6]]), *maps)

    monkeypatch.setattr(cam, "layer_cam", from_the_input_only)
    ignoring = faithfulness.randomisation_check(model, cases, profile.data, torch.device("cpu"))
    assert ignoring["spearman_mean"] == pytest.approx(1.0) and ignoring["passed"] == 0.0
    monkeypatch.setattr(cam, "layer_cam", from_the_weights)
    assert faithfulness.randomisation_check(model, cases, profile.data, torch.device("cpu"))["passed"] == 1.0


def test_the_image_gaussian_peaks_at_the_image_centre():
    heat = faithfulness.image_gaussian((100, 160))
    assert np.unravel_index(np.argmax(heat), heat.shape) in {(49, 79), (49, 80), (50, 79), (50, 80)}


def test_faithfulness_needs_the_masks(small_dataset, tmp_path, capsys):
    site = small_dataset / "hospital2"
    table = pd.read_csv(site / "manifest.csv", dtype=str).head(2).drop(columns=["vessel_mask_path"])
    for column in ("bus_path", "cdfi_path", "node_mask_path"):
        table[column] = [str(site / p) for p in table[column]]
    table.to_csv(tmp_path / "manifest.csv", index=False)
    profile = get_profile("tiny")
    save_checkpoint(tmp_path / "m.pt", CLAHDM(profile.model), profile.data)
    assert faithfulness.main(["--model", str(tmp_path / "m.pt"), "--data", str(tmp_path)]) == 1
    assert "vessel_mask_path" in capsys.readouterr().err


def test_benchmark_times_one_picture(capsys):
    assert heatmap_benchmark.main(["--profile", "tiny", "--repeats", "1", "--device", "cpu"]) == 0
    assert "s per case" in capsys.readouterr().out
