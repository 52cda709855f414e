"""How well CLA-HDM's Layer-CAM heatmaps sit on the node, measured on synthetic data with known masks.

    python -m simulation.faithfulness --model CKPT --data DIR [--out FILE.json]

For every case and every level of the hierarchy the case used: the fraction of the heatmap's
energy inside the node (BUS) and inside node ∪ vessels (CDFI), and the pointing game (is the
heatmap's maximum inside that mask). Per case the levels are averaged; per true class the
cases are, with percentile bootstrap CIs over the cases. Four maps are scored side by side:

- `fused`: Layer-CAM of layer2-4 fused by product (client/cam.py);
- `fused_max`: the same stages fused by the Layer-CAM paper's element-wise maximum;
- `layer4`: Layer-CAM of the last stage only, what the sites draw by default;
- `gaussian_box`: a Gaussian peaked at the centre of the square the model sees (sigma a
  quarter of its side), zero outside it. It knows where the clinician's box is, and the
  synthetic nodes sit near the box's centre, so it is a hard baseline;
- `gaussian_image`: a Gaussian at the image's centre, which knows nothing.

A heatmap that is zero everywhere counts as energy 0 and a miss. Two checks of the fused maps
follow: deletion / insertion (the explained probability of sub-model 1 as the most salient input
pixels are removed from, or inserted into, a blank input, against a random order; the area under
each curve), and the randomisation check (Adebayo et al., 2018): the maps of the same network with
re-initialised weights must differ (Spearman rank correlation with the trained maps), and, in
the metrics' own units, the fused maps of the whole CLA-HDM re-initialised are scored like the
trained ones (`randomised`): maps that find the node only with the trained weights owe it to them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

MASK_COLUMNS = ("node_mask_path", "vessel_mask_path")
METRICS = ("bus_energy", "cdfi_energy", "bus_pointing", "cdfi_pointing")
HELDOUT = "heldout"


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the heatmap's total inside the mask (0 for an all-zero heatmap)."""
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else 0.0


def pointing_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the heatmap's maximum lies inside the mask (False for an all-zero heatmap).

    An upsampled coarse map has flat tops; the point is the centre of the flat top, not its
    first pixel in raster order.
    """
    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0:
        return False
    ys, xs = np.nonzero(heat >= peak * (1 - 1e-4))
    return bool(mask[int(round(ys.mean())), int(round(xs.mean()))])


def centred_gaussian(box: tuple[int, int, int, int], shape: tuple[int, ...], sigma_fraction: float = 0.25) -> np.ndarray:
    """An image-sized map peaked at the centre of the square `box`, zero outside it, max 1."""
    x, y, side, _ = box
    rows, cols = np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32)
    sigma = max(1.0, sigma_fraction * side)
    gy = np.exp(-0.5 * ((rows - (y + side / 2 - 0.5)) / sigma) ** 2)
    gx = np.exp(-0.5 * ((cols - (x + side / 2 - 0.5)) / sigma) ** 2)
    gy[(rows < y) | (rows >= y + side)] = 0.0
    gx[(cols < x) | (cols >= x + side)] = 0.0
    heat = np.outer(gy, gx)
    peak = heat.max()
    return heat / peak if peak > 0 else heat


def image_gaussian(shape: tuple[int, ...], sigma_fraction: float = 0.25) -> np.ndarray:
    """An image-sized map peaked at the image's centre (sigma a quarter of the shorter side), max 1."""
    side = min(shape[:2])
    return centred_gaussian(((shape[1] - side) // 2, (shape[0] - side) // 2, side, side), shape, sigma_fraction)


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap CI of the mean of `values` (resampled cases)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_resamples, values.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def score_maps(bus_heat: np.ndarray, cdfi_heat: np.ndarray, node: np.ndarray, vessels: np.ndarray) -> dict[str, float]:
    """The four metrics of one BUS/CDFI heatmap pair (masks: bool, the images' sizes)."""
    flow = node | vessels
    return {"bus_energy": energy_inside(bus_heat, node), "cdfi_energy": energy_inside(cdfi_heat, flow),
            "bus_pointing": float(pointing_hit(bus_heat, node)), "cdfi_pointing": float(pointing_hit(cdfi_heat, flow))}


def read_mask(path: Path, case_id: str, shape: tuple[int, ...]) -> np.ndarray:
    """A 0/255 mask PNG as bool, checked against the image size."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"case {case_id}: mask {path} is missing or unreadable")
    if mask.shape != shape[:2]:
        raise ValueError(f"case {case_id}: mask {path} is {mask.shape[1]}x{mask.shape[0]} px, "
                         f"the image {shape[1]}x{shape[0]} px")
    return mask > 0


class MaskedCase(NamedTuple):
    """A case with the absolute paths of its node and vessel masks."""

    case: object  # common.manifest.Case
    node_mask: Path
    vessel_mask: Path


def find_cases(data: Path, cohort: str) -> list[MaskedCase]:
    """Cases of DIR/manifest.csv or of every DIR/*/manifest.csv, filtered by cohort.

    `heldout` keeps every case whose cohort column is not `train`; `all` keeps everything.
    """
    from common.validation import load_cases

    manifests = [data / "manifest.csv"] if (data / "manifest.csv").is_file() else sorted(data.glob("*/manifest.csv"))
    if not manifests:
        raise FileNotFoundError(f"{data}: no manifest.csv in it or its sub-folders (write one with `clafed synth`)")
    cases = []
    for manifest in manifests:
        for case in load_cases(manifest, check_images=False):
            missing = [c for c in MASK_COLUMNS if not case.extras.get(c)]
            if missing:
                raise ValueError(f"{manifest}: case {case.case_id} has no {', '.join(missing)} "
                                 "(faithfulness needs the masks `clafed synth` writes)")
            cases.append(MaskedCase(case, (manifest.parent / case.extras["node_mask_path"]).resolve(),
                                    (manifest.parent / case.extras["vessel_mask_path"]).resolve()))
    if cohort == "all":
        return cases
    if cohort == HELDOUT:
        return [c for c in cases if c.case.extras.get("cohort", "") != "train"]
    return [c for c in cases if c.case.extras.get("cohort", "") == cohort]


MAPS = ("fused", "fused_max", "layer4", "gaussian_box", "gaussian_image")
# The model's maps: (name, stages, fusion).
MODEL_MAPS = (("fused", ("layer2", "layer3", "layer4"), "product"), ("fused_max", ("layer2", "layer3", "layer4"), "max"),
              ("layer4", ("layer4",), "max"))


def case_scores(model, masked: MaskedCase, data_cfg, device,
                model_maps=MODEL_MAPS) -> dict[str, dict[str, float]]:
    """Each map's metrics for one case (`model_maps` and the two Gaussians); the model's are
    averaged over the levels it used."""
    from client.heatmaps import explain_images
    from common.imaging import read_image

    case = masked.case
    bus, cdfi = read_image(case.bus_path), read_image(case.cdfi_path)
    node = read_mask(masked.node_mask, case.case_id, bus.shape)
    vessels = read_mask(masked.vessel_mask, case.case_id, cdfi.shape)
    scores = {}
    for name, stages, fusion in model_maps:
        explanation = explain_images(model, bus, cdfi, case.roi, data_cfg, device, case.case_id, stages, fusion)
        per_level = [score_maps(s.bus, s.cdfi, node, vessels) for s in explanation.steps]
        scores[name] = {k: float(np.mean([m[k] for m in per_level])) for k in METRICS}
    scores["gaussian_box"] = score_maps(centred_gaussian(explanation.bus_box, bus.shape),
                                        centred_gaussian(explanation.cdfi_box, cdfi.shape), node, vessels)
    scores["gaussian_image"] = score_maps(image_gaussian(bus.shape), image_gaussian(cdfi.shape), node, vessels)
    return scores


def summarise(rows: list[tuple[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-class means of (label, metrics) rows, in CLASSES order, with 95 % bootstrap CIs
    (`<metric>.low`, `<metric>.high`) and the case count n."""
    from common.labels import CLASSES

    out = {}
    for label in CLASSES:
        chosen = [m for lab, m in rows if lab == label]
        if chosen:
            out[label] = {"n": len(chosen)}
            for k in METRICS:
                values = np.array([m[k] for m in chosen])
                low, high = bootstrap_mean_ci(values)
                out[label].update({k: float(values.mean()), f"{k}.low": low, f"{k}.high": high})
    return out


def measure(model, cases: list[MaskedCase], data_cfg, device, model_maps=MODEL_MAPS) -> dict:
    """{map: {class: metrics with CIs}} over `cases`, for `model_maps` and the two Gaussians."""
    rows: dict[str, list] = {}
    for masked in cases:
        for name, scores in case_scores(model, masked, data_cfg, device, model_maps).items():
            rows.setdefault(name, []).append((masked.case.label, scores))
    return {name: summarise(found) for name, found in rows.items()}


def reinitialised(network, seed: int = 0):
    """A copy of `network` with every layer's weights (and BatchNorm statistics) drawn afresh."""
    import copy

    import torch

    # A seed no training script uses: re-initialising under the seed a network was built with
    # would rebuild that very network.
    torch.manual_seed(1_000_003 + seed)
    scrambled = copy.deepcopy(network)
    for module in scrambled.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return scrambled.eval()


def randomised_localisation(model, cases: list[MaskedCase], data_cfg, device) -> dict:
    """The fused maps' metrics (as `measure`) for the same CLA-HDM re-initialised: the
    randomisation check in the metrics' own units. Rank correlation can stay high for maps whose
    fine detail follows the image's edges whatever the weights; whether the maps still find the
    node without the trained weights is what says their localisation comes from training."""
    fused = tuple(m for m in MODEL_MAPS if m[0] == "fused")
    return {"fused": measure(reinitialised(model), cases, data_cfg, device, fused)["fused"]}


def deletion_insertion(model, cases: list[MaskedCase], data_cfg, device, steps: int = 10,
                       seed: int = 0) -> dict[str, float]:
    """Mean area under sub-model 1's explained probability as salient input pixels are deleted
    (lower is better) or inserted into a blank input (higher is better), fused map vs random order.

    Both branches change together: at step i the top i/steps of each branch's input pixels (by
    its own fused map) are set to the blank value (0, the normalised mean) or, for insertion,
    taken from the image while the rest stays blank.
    """
    import torch
    import torch.nn.functional as F

    from client.cam import layer_cam
    from client.heatmaps import model_input
    from common.imaging import read_image

    rng = np.random.default_rng(seed)
    submodel = model.submodel("submodel1").to(device).eval()
    areas: dict[str, list[float]] = {k: [] for k in ("deletion", "deletion_random", "insertion", "insertion_random")}
    for masked in cases:
        case = masked.case
        inputs = [model_input(read_image(p), case.roi, data_cfg)[None].to(device) for p in (case.bus_path, case.cdfi_path)]
        cams = layer_cam(submodel, *inputs)
        target = int(cams.probabilities[0].argmax())
        size = inputs[0].shape[-2:]
        ranks = []
        for cam in (cams.bus, cams.cdfi):
            saliency = F.interpolate(cam[:, target:target + 1], size=tuple(size), mode="bilinear",
                                     align_corners=False)[0, 0].flatten().cpu().numpy()
            ranks.append(np.argsort(-saliency, kind="stable"))
        random_order = [rng.permutation(len(r)) for r in ranks]
        for order_name, orders in (("", ranks), ("_random", random_order)):
            for mode in ("deletion", "insertion"):
                batches = [_frames(image[0], order, steps, mode) for image, order in zip(inputs, orders)]
                with torch.no_grad():
                    p = torch.softmax(submodel(*batches), dim=1)[:, target].cpu().numpy()
                areas[mode + order_name].append(float(p.mean()))
    return {k: float(np.mean(v)) for k, v in areas.items()}


def _frames(image, order: np.ndarray, steps: int, mode: str):
    """The `steps + 1` inputs of a deletion (or insertion) curve: after step i the first i/steps of
    `order`'s pixels are blanked (or are the only ones kept)."""
    import torch

    frames = []
    for i in range(steps + 1):
        keep = np.zeros(order.size, bool)
        keep[order[:int(round(i / steps * order.size))]] = True
        mask = torch.from_numpy((~keep if mode == "deletion" else keep).reshape(image.shape[-2:])).to(image.device)
        frames.append(image * mask)
    return torch.stack(frames)


def randomisation_check(model, cases: list[MaskedCase], data_cfg, device, seed: int = 0,
                        stages=None, fusion: str = "max") -> dict[str, float]:
    """Spearman rank correlation between the maps of the trained sub-model 1 and of the same
    network with re-initialised weights (Adebayo et al., 2018); the maps pass when it is low.
    `stages` (default: the sites' default stages) and `fusion` choose the maps checked."""
    from scipy.stats import spearmanr

    from client.cam import DEFAULT_STAGES, layer_cam
    from client.heatmaps import model_input
    from common.imaging import read_image

    trained = model.submodel("submodel1").to(device).eval()
    scrambled = reinitialised(trained, seed)
    rhos = []
    for masked in cases:
        case = masked.case
        inputs = [model_input(read_image(p), case.roi, data_cfg)[None].to(device) for p in (case.bus_path, case.cdfi_path)]
        a = layer_cam(trained, *inputs, stages or DEFAULT_STAGES, fusion)
        b = layer_cam(scrambled, *inputs, stages or DEFAULT_STAGES, fusion)
        target = int(a.probabilities[0].argmax())
        for x, y in ((a.bus, b.bus), (a.cdfi, b.cdfi)):
            rho = spearmanr(x[0, target].flatten().cpu().numpy(), y[0, target].flatten().cpu().numpy()).statistic
            rhos.append(0.0 if np.isnan(rho) else float(rho))
    mean = float(np.mean(rhos)) if rhos else float("nan")
    return {"spearman_mean": mean, "spearman_max": float(np.max(rhos)) if rhos else float("nan"),
            "passed": float(mean < RANDOMISATION_MAX_RHO)}


# The randomisation check passes when the trained and re-initialised maps correlate less than this.
RANDOMISATION_MAX_RHO = 0.5


def randomised_table(result: dict) -> str:
    """Per class, each metric of the fused maps: the trained network's mean, then the
    re-initialised one's (the randomisation check in the metrics' units)."""
    from common.formatting import md_table

    trained, scrambled = result["fused"], result["randomised"]["fused"]
    rows = [[label, trained[label]["n"], *(f"{trained[label][k]:.3f} vs {scrambled[label][k]:.3f}" for k in METRICS)]
            for label in trained]
    return md_table(["class", "n", *METRICS], rows)


def format_table(result: dict) -> str:
    """A Markdown table per metric: per class, each map's mean with its CI."""
    from common.formatting import figure_ci, md_table

    blocks = []
    first = result[MAPS[0]]
    for metric in METRICS:
        rows = [[label, first[label]["n"], *(figure_ci(result[name][label], metric) for name in MAPS)]
                for label in first]
        blocks.append(f"**{metric}**\n\n" + md_table(["class", "n", *MAPS], rows))
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.faithfulness", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="CLA-HDM checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="`clafed synth` output folder, or one hospital's folder")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--cohort", default=HELDOUT,
                        help="heldout (every cohort but train; default), all, train, internal_test or external")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N cases (quick looks)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    from common.checkpoint import load_checkpoint
    from common.training import resolve_device

    try:
        loaded = load_checkpoint(args.model)
        cases = find_cases(args.data, args.cohort)[:args.limit]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not cases:
        print(f"error: {args.data}: no cases in cohort {args.cohort!r}", file=sys.stderr)
        return 1
    device = resolve_device(args.device)
    result = measure(loaded.model, cases, loaded.data_config, device)
    result["deletion_insertion"] = deletion_insertion(loaded.model, cases, loaded.data_config, device)
    result["randomisation"] = {
        name: randomisation_check(loaded.model, cases, loaded.data_config, device, stages=stages, fusion=fusion)
        for name, stages, fusion in MODEL_MAPS}
    result["randomised"] = randomised_localisation(loaded.model, cases, loaded.data_config, device)
    result["settings"] = {"model": str(args.model), "data": str(args.data), "cohort": args.cohort,
                          "cases": len(cases), "backbone": loaded.model_config.backbone,
                          "input_size": loaded.data_config.input_size}
    print(format_table(result))
    print("\n" + ", ".join(f"{k} {v:.3f}" for k, v in result["deletion_insertion"].items()))
    print("randomisation check (Spearman with a re-initialised network): " + ", ".join(
        f"{name} {r['spearman_mean']:.3f} ({'passed' if r['passed'] else 'FAILED'})"
        for name, r in result["randomisation"].items()))
    print("\nfused maps, trained vs re-initialised network:\n\n" + randomised_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
