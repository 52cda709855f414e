"""Seconds to explain and draw one case: both levels used, both branches, picture written.

    python -m simulation.heatmap_benchmark [--profile cpu] [--repeats 3]

A randomly initialised CLA-HDM of the profile (weights do not change the cost) on one synthetic
case; the first run (allocations, lazy initialisation) is reported apart from the best of the
others. Target on a 2-core CPU with the `cpu` profile: <= 3 s.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def synthetic_case(seed: int = 0):
    """A rendered synthetic case (RGB BUS, RGB CDFI, ROI) without touching the disk."""
    import cv2

    from simulation.synth.cohort import cohort_plan
    from simulation.synth.render import render_case

    plan = next(p for p in cohort_plan("small", seed) if p.label == "metastatic")
    case = render_case(plan, seed)
    return (cv2.cvtColor(case.bus, cv2.COLOR_GRAY2RGB), cv2.cvtColor(case.cdfi, cv2.COLOR_BGR2RGB), case.roi)


def time_picture(profile: str = "cpu", repeats: int = 3, device_name: str = "auto") -> tuple[float, float]:
    """(first, best of the rest) seconds of explain_images + render_picture + write_picture."""
    import torch

    from client.heatmaps import explain_images, render_picture, write_picture
    from common.config import get_profile
    from common.model import CLAHDM
    from common.training import resolve_device

    cfg = get_profile(profile, {"model": {"pretrained": "none"}})  # random init: no download, same cost
    torch.manual_seed(0)
    model = CLAHDM(cfg.model).eval()
    device = resolve_device(device_name)
    bus, cdfi, roi = synthetic_case()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(2, repeats + 1)):
            start = time.perf_counter()
            explanation = explain_images(model, bus, cdfi, roi, cfg.data, device, "benchmark")
            write_picture(Path(tmp) / "case.png", render_picture(explanation, bus, cdfi))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.heatmap_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", help="tiny | cpu | paper (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the first (default 3)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    first, best = time_picture(args.profile, args.repeats, args.device)
    print(f"heatmap picture, profile {args.profile}: first {first:.2f} s, then {best:.2f} s per case "
          "(2 levels x 2 branches, Layer-CAM + picture)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
