"""How well CLA-HDM's Layer-CAM heatmaps sit on the node, measured on synthetic data with known masks.

    python -m simulation.faithfulness --model CKPT --data DIR [--out FILE.json]

For every case and every level of the hierarchy the case used: the fraction of the heatmap's
energy inside the node (BUS) and inside node ∪ vessels (CDFI), and the pointing game (is the
heatmap's maximum inside that mask). Per case the levels are averaged; per true class the
cases are. The baseline is a centred Gaussian: a map the size of the image, peaked at the
centre of the square the model sees (sigma a quarter of its side) and zero outside it, as the
model's heatmap is. A heatmap that is zero everywhere counts as energy 0 and a miss.
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


def case_scores(model, masked: MaskedCase, data_cfg, device) -> tuple[dict[str, float], dict[str, float]]:
    """(model, gaussian) metrics of one case; the model's are averaged over the levels it used."""
    from client.heatmaps import explain_images
    from common.imaging import read_image

    case = masked.case
    bus, cdfi = read_image(case.bus_path), read_image(case.cdfi_path)
    node = read_mask(masked.node_mask, case.case_id, bus.shape)
    vessels = read_mask(masked.vessel_mask, case.case_id, cdfi.shape)
    explanation = explain_images(model, bus, cdfi, case.roi, data_cfg, device, case.case_id)
    per_level = [score_maps(s.bus, s.cdfi, node, vessels) for s in explanation.steps]
    ours = {k: float(np.mean([m[k] for m in per_level])) for k in METRICS}
    baseline = score_maps(centred_gaussian(explanation.bus_box, bus.shape),
                          centred_gaussian(explanation.cdfi_box, cdfi.shape), node, vessels)
    return ours, baseline


def summarise(rows: list[tuple[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-class means of (label, metrics) rows, in CLASSES order, with the case count n."""
    from common.labels import CLASSES

    out = {}
    for label in CLASSES:
        chosen = [m for lab, m in rows if lab == label]
        if chosen:
            out[label] = {k: float(np.mean([m[k] for m in chosen])) for k in METRICS}
            out[label]["n"] = len(chosen)
    return out


def measure(model, cases: list[MaskedCase], data_cfg, device) -> dict:
    """{"model": {class: metrics}, "gaussian": {class: metrics}} over `cases`."""
    ours, baseline = [], []
    for masked in cases:
        m, g = case_scores(model, masked, data_cfg, device)
        ours.append((masked.case.label, m))
        baseline.append((masked.case.label, g))
    return {"model": summarise(ours), "gaussian": summarise(baseline)}


def format_table(result: dict) -> str:
    """A Markdown table: per class, the model's and the Gaussian's four metrics side by side."""
    lines = ["| class | n | BUS energy (model / gaussian) | CDFI energy | BUS pointing | CDFI pointing |",
             "|---|---|---|---|---|---|"]
    for label, m in result["model"].items():
        g = result["gaussian"][label]
        cells = " | ".join(f"{m[k]:.3f} / {g[k]:.3f}" for k in METRICS)
        lines.append(f"| {label} | {m['n']} | {cells} |")
    return "\n".join(lines)


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
    result = measure(loaded.model, cases, loaded.data_config, resolve_device(args.device))
    result["settings"] = {"model": str(args.model), "data": str(args.data), "cohort": args.cohort,
                          "cases": len(cases), "backbone": loaded.model_config.backbone,
                          "input_size": loaded.data_config.input_size}
    print(format_table(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
