"""CLA-HDM structure: shapes, probability sums, gating, attention, checkpoints, initialisation."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from common.backbone import build_extractor, load_pretrained
from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import DataConfig, ModelConfig
from common.model import CLAHDM, ChannelAttention, SubModel, assemble

TINY = ModelConfig(backbone="resnet10", fusion_hidden=(16,), aux_hidden=8, dropout=0.0)


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)


def test_clahdm_shapes_and_probability_sums(batch):
    out = CLAHDM(TINY).eval()(*batch)
    assert out.soft.shape == out.hard.shape == (3, 4)
    assert out.levels.shape == (3, 3)
    torch.testing.assert_close(out.soft.sum(1), torch.ones(3))
    torch.testing.assert_close(out.hard.sum(1), torch.ones(3))
    assert (out.soft >= 0).all() and (out.hard >= 0).all()


@pytest.mark.parametrize("threshold, expect_malignant", [(0.3, [True, True, False]), (0.7, [False, True, False])])
def test_gate_routes_by_threshold(threshold, expect_malignant):
    p1 = torch.tensor([0.5, 0.9, 0.1])
    p_tb, p_met = torch.tensor([0.2, 0.4, 0.6]), torch.tensor([0.7, 0.8, 0.1])
    out = assemble(p1, p_tb, p_met, threshold=threshold)
    assert out.malignant.tolist() == expect_malignant
    for i, malignant in enumerate(expect_malignant):
        expected = [0, 0, 1 - p_met[i], p_met[i]] if malignant else [1 - p_tb[i], p_tb[i], 0, 0]
        torch.testing.assert_close(out.hard[i], torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(out.soft[0], torch.tensor([0.5 * 0.8, 0.5 * 0.2, 0.5 * 0.3, 0.5 * 0.7]))


def test_channel_attention_weights_sum_to_one_per_image(batch):
    attention = ChannelAttention()
    weights = attention.weights(batch[1])
    assert weights.shape == (3, 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    reweighted = attention(batch[1])
    torch.testing.assert_close(reweighted, batch[1] * 3 * weights[:, :, None, None])


def test_submodel_returns_fused_and_auxiliary_logits(batch):
    out = SubModel(TINY).forward_all(*batch)
    assert out.logits.shape == out.bus_logits.shape == out.cdfi_logits.shape == (3, 2)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, batch):
    model = CLAHDM(ModelConfig(**{**TINY.__dict__, "threshold": 0.4})).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, DataConfig(input_size=64), {"round": 3})
    loaded = load_checkpoint(path)
    before, after = model(*batch), loaded.model(*batch)
    torch.testing.assert_close(before.soft, after.soft)
    torch.testing.assert_close(before.hard, after.hard)
    assert loaded.model.threshold == 0.4
    assert loaded.data_config.input_size == 64 and loaded.metadata == {"round": 3}


def test_a_checkpoint_from_before_localisers_loads_without_one_and_a_cut_one_is_refused(tmp_path, batch):
    from common.checkpoint import checkpoint_payload

    model = CLAHDM(TINY).eval()
    model.localiser_trained.fill_(1.0)
    payload = checkpoint_payload(model, DataConfig(input_size=64))
    payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("localiser")}
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert not loaded.model.has_localiser  # an ROI (or the whole image) per case, as before
    torch.testing.assert_close(loaded.model(*batch).soft, model(*batch).soft)
    del payload["state_dict"]["submodels.submodel1.head.1.weight"]
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_checkpoint(tmp_path / "cut.pt")


def test_localiser_starts_from_imagenet_only_with_weights_for_its_trunk():
    from common.model import localiser_pretrained

    assert localiser_pretrained(ModelConfig(backbone="resnet50", pretrained="imagenet",
                                            localiser_backbone="resnet18")) == "imagenet"
    assert localiser_pretrained(ModelConfig(backbone="resnet50", pretrained="imagenet")) == "none"  # resnet10
    assert localiser_pretrained(ModelConfig(backbone="resnet18", pretrained="/w/r18.pth",
                                            localiser_backbone="resnet18")) == "/w/r18.pth"
    assert localiser_pretrained(ModelConfig(backbone="resnet50", pretrained="/w/r50.pth",
                                            localiser_backbone="resnet18")) == "none"  # a file for another net


def test_checkpoint_refuses_a_file_that_is_not_one(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a clafed CLA-HDM checkpoint"):
        load_checkpoint(path)


def test_local_pretrained_weights_file_is_loaded(tmp_path):
    source = build_extractor("resnet10")
    state = {f"{k}": v for k, v in source.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 512)  # a classifier from another task is ignored
    path = tmp_path / "resnet10.pth"
    torch.save(state, path)
    model = SubModel(ModelConfig(backbone="resnet10", fusion_hidden=(32,), aux_hidden=16))
    assert not torch.equal(model.bus.layer4[0].conv1.weight, source.layer4[0].conv1.weight)  # building never loads
    load_pretrained(model, "resnet10", str(path))
    for branch in (model.bus, model.cdfi):  # both extractors of the sub-model
        torch.testing.assert_close(branch.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_pretrained_errors_are_clear(tmp_path):
    model = build_extractor("resnet18")
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found"):
        load_pretrained(model, "resnet18", str(tmp_path / "absent.pth"))
    with pytest.raises(ValueError, match="resnet10 has no ImageNet weights"):
        load_pretrained(build_extractor("resnet10"), "resnet10", "imagenet")
    torch.save(build_extractor("resnet10").state_dict(), tmp_path / "r10.pth")
    with pytest.raises(ValueError, match="not a resnet18 state_dict"):
        load_pretrained(model, "resnet18", str(tmp_path / "r10.pth"))


def test_one_backbone_registry():
    from common.backbone import BACKBONES as BUILT
    from common.config import BACKBONES as NAMED

    assert tuple(BUILT) == NAMED


def test_the_shared_network_initialises_a_sub_model_except_its_output_layers():
    cfg = ModelConfig(backbone="resnet10", fusion_hidden=(32,), aux_hidden=16)
    shared, sub = SubModel(cfg, n_classes=4), SubModel(cfg)
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    copied = sub.initialise_from(shared)
    after, source = sub.state_dict(), shared.state_dict()
    outputs = {k for k, v in after.items() if v.shape != source[k].shape}
    assert outputs == {f"{head}.{i}.{p}" for head, i in (("head", 3), ("bus_head", 3), ("cdfi_head", 3))
                       for p in ("weight", "bias")}
    assert copied == len(after) - len(outputs)
    assert all(torch.equal(after[k], source[k]) for k in after if k not in outputs)
    assert all(torch.equal(after[k], before[k]) for k in outputs)
    assert sub(torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    assert shared(torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 64, 64)).shape == (2, 4)


def test_subtype_thresholds_move_the_gated_call_and_leave_the_soft_form_alone():
    p1, p2, p3 = torch.tensor([0.2, 0.8]), torch.tensor([0.3, 0.3]), torch.tensor([0.6, 0.6])
    plain = assemble(p1, p2, p3)
    moved = assemble(p1, p2, p3, subtype_thresholds=(0.25, 0.7))
    torch.testing.assert_close(moved.soft, plain.soft)
    assert plain.hard.argmax(1).tolist() == [0, 3]  # reactive, metastatic at 0.5
    assert moved.hard.argmax(1).tolist() == [1, 2]  # tuberculous above 0.25, lymphoma below 0.7
    torch.testing.assert_close(moved.hard.sum(1), torch.ones(2))


def test_decision_thresholds_survive_a_checkpoint(tmp_path, batch):
    model = CLAHDM(replace(TINY, threshold=0.35, subtype_thresholds=(0.2, 0.65))).eval()
    model.subtype_thresholds = (0.22, 0.6)  # what a run sets after validation
    save_checkpoint(tmp_path / "m.pt", model, DataConfig(input_size=64))
    loaded = load_checkpoint(tmp_path / "m.pt").model
    assert loaded.decision_thresholds == (0.35, 0.22, 0.6)
    with pytest.raises(ValueError, match="subtype_thresholds"):
        ModelConfig(subtype_thresholds=(0.5, 1.0))


def test_mirror_averaging_reads_an_image_and_its_mirror_alike(tmp_path, batch):
    """The eval-mode answer is the mean of both views' logits, so a mirrored case gets the same
    answer; with mirror_average off the model reads one view; the choice survives a checkpoint."""
    bus, cdfi = batch
    torch.manual_seed(1)
    model = CLAHDM(TINY).eval()
    mirrored = bus.flip(-1), cdfi.flip(-1)
    torch.testing.assert_close(model(*batch).soft, model(*mirrored).soft)
    sub = model.submodel("submodel1")
    expected = torch.softmax((sub(bus, cdfi) + sub(*mirrored)) / 2, 1)[:, 1]
    torch.testing.assert_close(model(*batch).levels[:, 0], expected)

    single = CLAHDM(replace(TINY, mirror_average=False)).eval()
    single.load_state_dict(model.state_dict())
    torch.testing.assert_close(single(*batch).levels[:, 0], torch.softmax(sub(bus, cdfi), 1)[:, 1])
    assert not torch.allclose(single(*batch).soft, single(*mirrored).soft)
    save_checkpoint(tmp_path / "m.pt", single, DataConfig(input_size=64))
    assert load_checkpoint(tmp_path / "m.pt").model.config.mirror_average is False
