"""Layer-CAM heatmaps: geometry, sensitivity, hygiene, faithfulness by perturbation, pictures."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from client.cam import layer_cam, to_image
from client.heatmaps import explain_case, explain_images, model_input, select_cases, write_heatmaps
from common.config import HeatmapSelection, get_profile
from common.dataset import CaseDataset, input_box
from common.imaging import read_image
from common.labels import CLASSES, LEVEL_BY_KEY
from common.manifest import Case
from common.model import CLAHDM
from common.training import evaluating, train_submodel
from common.validation import load_cases
from tests.sitegen import draw_case, write_site

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def profile():
    return get_profile("tiny", {"model": {"dropout": 0.0}, "train": {"progress": False}})


@pytest.fixture(scope="module")
def model(profile):
    torch.manual_seed(0)
    return CLAHDM(profile.model).eval()


def _pair(label: str, seed: int, size: int = 96):
    bus, cdfi = draw_case(label, np.random.default_rng(seed), size)
    return cv2.cvtColor(bus, cv2.COLOR_GRAY2RGB), cv2.cvtColor(cdfi, cv2.COLOR_BGR2RGB)


def test_heatmaps_have_the_original_size_range_and_zero_outside_the_models_view(model, profile):
    bus, cdfi = _pair("metastatic", 0)
    bus = np.pad(bus, ((0, 30), (0, 50), (0, 0)))  # BUS and CDFI of different, non-square sizes
    roi = (30, 20, 40, 30)
    e = explain_images(model, bus, cdfi, roi, profile.data, CPU, "c1")
    assert len(e.steps) == 2 and e.steps[0].level.key == "submodel1"
    x, y, side, _ = input_box(roi, profile.data.roi_margin, bus.shape)
    for step in e.steps:
        assert step.bus.shape == bus.shape[:2] and step.cdfi.shape == cdfi.shape[:2]
        for heat in (step.bus, step.cdfi):
            assert heat.dtype == np.float32 and heat.min() >= 0.0 and heat.max() <= 1.0
        assert step.bus.max() == pytest.approx(1.0, abs=1e-6)  # the box lies inside the image here
        outside = np.ones(bus.shape[:2], bool)
        outside[y:y + side, x:x + side] = False
        assert not step.bus[outside].any()


def test_to_image_maps_a_cam_cell_onto_its_part_of_the_box():
    cam = np.zeros((4, 4), np.float32)
    cam[0, 3] = 2.0  # top-right cell
    heat = to_image(cam, (-10, 20, 80, 80), (120, 90))  # the box reaches past the left edge
    assert heat.shape == (120, 90) and heat.max() == pytest.approx(1.0)
    peak_y, peak_x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 20 <= peak_y < 40 and 50 <= peak_x < 70
    assert not heat[:20].any() and not heat[100:].any()
    assert not to_image(np.zeros((2, 2)), (0, 0, 10, 10), (10, 10)).any()


def test_model_input_is_what_the_dataset_gives_the_model(site_manifest, profile):
    case = load_cases(site_manifest)[5]
    bus_t, cdfi_t, _ = CaseDataset([case], profile.data)[0]
    assert torch.equal(model_input(read_image(case.bus_path), case.roi, profile.data), bus_t)
    assert torch.equal(model_input(read_image(case.cdfi_path), case.roi, profile.data), cdfi_t)


@pytest.mark.parametrize("temperatures", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.5)])
def test_probabilities_and_path_match_the_assembled_model(site_manifest, model, profile, temperatures):
    model.temperatures = temperatures  # a calibrated model's explanation gives its calibrated probabilities
    for case in load_cases(site_manifest)[::5]:
        e = explain_case(model, case, profile.data, CPU)
        bus_t, cdfi_t, _ = CaseDataset([case], profile.data)[0]
        with evaluating(model):
            out = model(bus_t[None], cdfi_t[None])
        np.testing.assert_allclose(e.probabilities, out.soft[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(e.gated, out.hard[0].numpy(), atol=1e-6)
        expected_second = "submodel3" if bool(out.malignant[0]) else "submodel2"
        assert [s.level.key for s in e.steps] == ["submodel1", expected_second]
        assert e.steps[0].name == ("malignant" if bool(out.malignant[0]) else "benign")
        assert e.diagnosis == e.steps[1].name == CLASSES[int(out.hard[0].argmax())]
        assert e.path_text == f"{e.steps[0].name} {e.steps[0].probability:.2f} \u2192 " \
                              f"{e.steps[1].name} {e.steps[1].probability:.2f}"
        second = out.levels[0, 2 if bool(out.malignant[0]) else 1].item()
        assert e.steps[1].probability == pytest.approx(second if e.steps[1].target else 1 - second, abs=1e-6)
    model.temperatures = (1.0, 1.0, 1.0)


def test_heatmap_changes_with_the_class_and_with_the_input(model, profile):
    sub = model.submodels["submodel1"]
    a = [model_input(img, None, profile.data)[None] for img in _pair("reactive", 1)]
    b = [model_input(img, None, profile.data)[None] for img in _pair("metastatic", 2)]
    cams_a, cams_b = layer_cam(sub, *a), layer_cam(sub, *b)
    assert cams_a.bus.shape == (1, 2, 2, 2)  # the default, layer4 alone: a 2x2 final stage at 64 px
    assert layer_cam(sub, *a, stages=("layer2", "layer4")).bus.shape == (1, 2, 8, 8)  # fused up to layer2
    for branch in ("bus", "cdfi"):
        first, second = getattr(cams_a, branch)[0]
        assert not torch.allclose(first, second)
        assert not torch.allclose(getattr(cams_a, branch), getattr(cams_b, branch))


def test_cam_leaves_the_model_as_it_found_it(profile):
    torch.manual_seed(1)
    sub = CLAHDM(profile.model).submodels["submodel2"].train()
    sub.bus.requires_grad_(False)  # a partly frozen model still gets maps
    flags = [p.requires_grad for p in sub.parameters()]
    inputs = [model_input(img, None, profile.data)[None] for img in _pair("tuberculous", 3)]
    with torch.no_grad():
        cams = layer_cam(sub, *inputs)
    assert cams.bus.abs().sum() > 0 and cams.cdfi.abs().sum() > 0
    assert sub.training and [p.requires_grad for p in sub.parameters()] == flags
    assert all(p.grad is None for p in sub.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in sub.modules())


def test_selection_none_all_and_first_n_per_class_in_a_seeded_order(site_manifest):
    cases = load_cases(site_manifest)
    assert select_cases(cases, HeatmapSelection("none")) == []
    assert select_cases(cases, HeatmapSelection("all")) == cases
    chosen = select_cases(cases, HeatmapSelection("per_class", 2), seed=4)
    assert [c.label for c in chosen] == [c for c in CLASSES for _ in range(2)]
    assert chosen == select_cases(cases, HeatmapSelection("per_class", 2), seed=4)
    others = [select_cases(cases, HeatmapSelection("per_class", 2), seed=s) for s in range(5, 10)]
    assert any(o != chosen for o in others)
    assert len(select_cases(cases, HeatmapSelection("per_class", 9))) == len(cases)


def test_write_heatmaps_writes_one_picture_per_selected_case(site_manifest, model, profile, tmp_path):
    cases = load_cases(site_manifest)
    paths = write_heatmaps(model, cases, profile.data, HeatmapSelection("per_class", 1), tmp_path / "h", CPU)
    assert len(paths) == 4 and all(p.parent == tmp_path / "h" for p in paths)
    for path in paths:
        picture = cv2.imread(str(path))
        assert picture is not None and picture.shape[0] > 2 * 300  # header + two level rows
    assert write_heatmaps(model, cases, profile.data, HeatmapSelection("none"), tmp_path / "n", CPU) == []
    assert not (tmp_path / "n").exists()


# ---- faithfulness by perturbation -------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Sub-model 1 trained briefly on hand-made cases (the others stay random: only level 1 is tested).

    128 px rather than the tiny profile's 64: resnet10's final stage is then 4x4; a 2x2 map,
    upsampled, peaks in a corner of the box whatever the model looks at.
    """
    cfg = get_profile("tiny", {"model": {"dropout": 0.0}, "train": {"progress": False},
                               "data": {"input_size": 128}})
    torch.manual_seed(0)
    model = CLAHDM(cfg.model)
    manifest = write_site(tmp_path_factory.mktemp("train"), {c: 6 for c in CLASSES}, seed=3)
    dataset = CaseDataset(load_cases(manifest), cfg.data, level=LEVEL_BY_KEY["submodel1"])
    train_submodel(model.submodels["submodel1"], dataset, cfg.train, epochs=3, device=CPU)
    return model.eval(), cfg.data


def _level1_log_odds(model, data_cfg, pairs, rois, targets) -> np.ndarray:
    """Level-1 log-odds of each target class for a batch of (BUS, CDFI) image pairs."""
    bus = torch.stack([model_input(b, roi, data_cfg) for (b, _), roi in zip(pairs, rois)])
    cdfi = torch.stack([model_input(c, roi, data_cfg) for (_, c), roi in zip(pairs, rois)])
    with evaluating(model):
        logp = torch.log_softmax(model.submodels["submodel1"](bus, cdfi), dim=1)
    targets = torch.as_tensor(targets)
    return (logp.gather(1, targets[:, None]) - logp.gather(1, 1 - targets[:, None]))[:, 0].numpy()


def test_masking_what_the_heatmap_marks_lowers_the_probability_more_than_masking_at_random(trained, tmp_path):
    # Log-odds rather than probability: a briefly trained model is ~1.0 sure of these easy cases,
    # where probabilities hardly move; the log-odds falls with the probability and keeps its scale.
    model, data_cfg = trained
    cases = load_cases(write_site(tmp_path, {c: 3 for c in CLASSES}, seed=9))
    images = [(read_image(c.bus_path), read_image(c.cdfi_path)) for c in cases]
    rois = [c.roi for c in cases]
    # All cases in one batch: the level-1 maps for the predicted class, mapped back to the images.
    inputs = [torch.stack([model_input(pair[i], roi, data_cfg) for pair, roi in zip(images, rois)]) for i in (0, 1)]
    cams = layer_cam(model.submodels["submodel1"], *inputs)
    targets = cams.probabilities.argmax(1)
    rng = np.random.default_rng(0)
    draws = 4
    pairs, case_rois, case_targets = [], [], []
    for (bus, cdfi), roi, target, bus_cam, cdfi_cam in zip(images, rois, targets, cams.bus, cams.cdfi):
        heat = [to_image(cam[target].numpy(), input_box(roi, data_cfg.roi_margin, image.shape), image.shape)
                for cam, image in ((bus_cam, bus), (cdfi_cam, cdfi))]
        count = int(0.1 * bus.shape[0] * bus.shape[1])  # the heatmap's top 10 % of pixels
        side = int(round(np.sqrt(count)))

        def blacken(image, region):
            out = image.copy()
            out[region] = 0
            return out

        def top(h, count=count):
            region = np.zeros(h.size, bool)
            region[np.argsort(h.ravel(), kind="stable")[::-1][:count]] = True
            return region.reshape(h.shape)

        def square(shape, side=side):
            region = np.zeros(shape[:2], bool)
            y, x = rng.integers(0, shape[0] - side + 1), rng.integers(0, shape[1] - side + 1)
            region[y:y + side, x:x + side] = True
            return region

        pairs += [(bus, cdfi), (blacken(bus, top(heat[0])), blacken(cdfi, top(heat[1])))]
        pairs += [(blacken(bus, square(bus.shape)), blacken(cdfi, square(cdfi.shape))) for _ in range(draws)]
        case_rois += [roi] * (2 + draws)
        case_targets += [int(target)] * (2 + draws)
    odds = _level1_log_odds(model, data_cfg, pairs, case_rois, case_targets).reshape(len(cases), 2 + draws)
    marked, random = odds[:, 0] - odds[:, 1], odds[:, :1] - odds[:, 2:]
    assert marked.mean() > 1.1 * random.mean() > 0, (marked.mean(), random.mean())


def test_case_ids_that_differ_only_in_odd_characters_get_different_pictures():
    from client.heatmaps import picture_name

    names = {picture_name(c) for c in ("pat 7", "pat/7", "pat_7", "../../pat7")}
    assert len(names) == 4 and all("/" not in n and not n.startswith(".") for n in names)
    assert picture_name("h1-007") == "h1-007_heatmap.png"  # plain ids keep their name


def test_fusion_keeps_each_stage_normalised_and_takes_the_maximum():
    from client.cam import GAMMA, fuse

    deep = torch.zeros(1, 1, 2, 2)
    deep[0, 0, 0, 0] = 4.0  # hot top-left quarter
    shallow = torch.zeros(1, 1, 8, 8)
    shallow[0, 0, 7, 7] = 0.5  # one fine spike bottom-right, at a scale of its own
    fused = fuse([shallow, deep], "max")
    assert fused.shape == (1, 1, 8, 8) and float(fused.max()) <= 1.0
    assert float(fused[0, 0, 7, 7]) == pytest.approx(float(np.tanh(GAMMA)), abs=1e-6)  # normalised, then tanh
    assert float(fused[0, 0, 0, 0]) == pytest.approx(1.0)  # the deep map's peak survives upsampling
    assert float(fused[0, 0, 0, 7]) < 0.1  # nothing where neither stage has evidence
    # product: the shallow spike lies where the deep map has no evidence, so it vanishes
    shallow[0, 0, 1, 1] = 0.25  # a weaker fine detail inside the deep map's hot quarter survives
    gated = fuse([shallow, deep], "product")
    assert float(gated[0, 0, 7, 7]) == 0.0 and float(gated[0, 0, 1, 1]) == pytest.approx(1.0)
    for mode in ("max", "product"):
        empty = fuse([torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 2, 2)], mode)
        assert float(empty.abs().sum()) == 0.0  # no evidence stays no evidence
    with pytest.raises(ValueError, match="max, product"):
        fuse([deep], "mean")


def test_a_hot_spot_in_input_space_lands_on_the_right_pixels():
    from client.cam import to_image

    cam = np.zeros((8, 8), np.float32)
    cam[2, 5] = 1.0  # one cell of the square the model saw
    box = (40, 10, 80, 80)  # the model's input square in the image: x 40..120, y 10..90
    heat = to_image(cam, box, (100, 160, 3))
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert (40 + 5 * 10 <= x < 40 + 6 * 10) and (10 + 2 * 10 <= y < 10 + 3 * 10)
    assert not heat[:, :40].any() and not heat[90:].any()


def test_unknown_stages_are_refused():
    from client.cam import check_stages

    assert check_stages(["layer4", "layer2"]) == ("layer2", "layer4")
    with pytest.raises(ValueError, match="layer1"):
        check_stages(["layer5"])


def test_a_known_node_is_outlined_on_the_picture(model, profile, tmp_path):
    from client.heatmaps import NODE_OUTLINE, node_outline, overlay

    image = np.full((60, 80, 3), 90, np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[20:40, 30:50] = 255
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "masks" / "n.png"), mask)
    case = Case("c1", tmp_path / "b.png", tmp_path / "c.png", "reactive", "2020-01-01",
                extras={"node_mask_path": "masks/n.png"})
    outline = node_outline(case, image.shape, tmp_path)
    assert outline is not None and outline.sum() == 400
    drawn = overlay(image, np.zeros((60, 80), np.float32), outline=outline)
    assert (drawn == NODE_OUTLINE).all(axis=2).any()
    assert node_outline(case, image.shape, None) is None  # no manifest folder, no outline
    assert node_outline(case, (10, 10, 3), tmp_path) is None  # a mask of another size is not drawn


def test_the_localisers_box_is_drawn_in_its_own_colour_only_when_it_proposed_the_roi():
    from client.heatmaps import PROPOSED_BOX, overlay

    image, heat = np.zeros((60, 80, 3), np.uint8), np.zeros((60, 80))
    drawn = overlay(image, heat, proposed=(10, 12, 30, 20))
    assert tuple(drawn[12, 20]) == PROPOSED_BOX and tuple(drawn[31, 39]) == PROPOSED_BOX  # top and bottom edges
    assert (overlay(image, heat) == PROPOSED_BOX).all(axis=2).sum() == 0
