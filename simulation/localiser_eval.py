"""How well a model's node localiser replaces the hand-drawn ROI, on a run's held-out cohorts.

    python -m simulation.localiser_eval --run RUN_DIR [--model RUN_DIR/model.pt] [--out FILE.json]

For every site of the run (its `sites/*.yaml`), and for their held-out cases pooled: the IoU of
the proposed box with the manifest's ROI (mean with a bootstrap CI, median, share >= 0.5), and
CLA-HDM's micro and macro AUC on the same held-out cases with the true boxes and with the
proposed ones. At a hospital the same comparison is `clafed evaluate` on its manifest with and
without the ROI columns.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

ALL_SITES = "all sites"


def site_figures(model, data_cfg, cases, device, n_resamples: int = 1000, seed: int = 0) -> dict:
    """IoU figures and AUCs with true vs proposed boxes on one cohort (cases with an ROI)."""
    from common.bootstrap import bootstrap_ci
    from common.dataset import CaseDataset
    from common.imaging import read_image
    from common.localiser import box_iou, propose_boxes
    from common.training import predict_clahdm

    cases = [c for c in cases if c.roi is not None and c.label is not None]
    boxes = propose_boxes(model.localiser, [read_image(c.bus_path, None) for c in cases],
                          data_cfg.localiser_size, device)
    iou = np.array([box_iou(b, c.roi) for b, c in zip(boxes, cases)])
    rng = np.random.default_rng(seed)
    mean = bootstrap_ci(lambda x: float(x.mean()), iou, n_resamples=n_resamples, rng=rng)["value"]
    out = {"n": len(cases), "iou_mean": mean.point, "iou_low": mean.low, "iou_high": mean.high,
           "iou_median": float(np.median(iou)), "found": float((iou >= 0.5).mean())}
    for name, cohort in (("true", cases), ("proposed", [dataclasses.replace(c, roi=b) for c, b in zip(cases, boxes)])):
        preds = predict_clahdm(model, CaseDataset(cohort, data_cfg), device=device)
        ci = bootstrap_ci("multiclass", preds.targets, preds.scores, n_resamples=n_resamples, rng=rng)
        out[f"{name}_micro"], out[f"{name}_macro"] = ci["auc_micro"].point, ci["auc_macro"].point
        out[f"{name}_micro_ci"] = [ci["auc_micro"].low, ci["auc_micro"].high]
    out["macro_drop"] = out["true_macro"] - out["proposed_macro"]
    out["micro_drop"] = out["true_micro"] - out["proposed_micro"]
    return out


def evaluate_run(run: Path, model_path: Path | None = None, device_name: str = "auto") -> dict[str, dict]:
    """{site: figures} over the run's sites' held-out cohorts."""
    from common.checkpoint import load_checkpoint
    from common.config import load_site_config
    from common.site import SiteData
    from common.training import resolve_device

    loaded = load_checkpoint(model_path or run / "model.pt")
    if not loaded.model.has_localiser:
        raise SystemExit(f"{model_path or run / 'model.pt'}: this model has no trained localiser "
                         "(its run had localiser_rounds 0, or no site had ROIs)")
    device = resolve_device(device_name)
    results, every = {}, []
    for yaml_path in sorted((run / "sites").glob("*.yaml")):
        site = SiteData.load(load_site_config(yaml_path))
        if site.heldout_cases:
            results[site.config.name] = site_figures(loaded.model, loaded.data_config, site.heldout_cases, device)
            every += site.heldout_cases
    if len(results) > 1:  # small sites' cohorts give wide CIs: the pooled cohort is the steadier figure
        results[ALL_SITES] = site_figures(loaded.model, loaded.data_config, every, device)
    return results


def markdown(results: dict[str, dict]) -> str:
    """The table of the note: IoU, and AUCs with true vs proposed boxes."""
    lines = ["| site (n) | IoU mean (95 % CI) | IoU median | IoU >= 0.5 | macro AUC true / proposed (drop) | "
             "micro AUC true / proposed (drop) |", "|---|---|---|---|---|---|"]
    for site, r in results.items():
        lines.append(f"| {site} ({r['n']}) | {r['iou_mean']:.3f} ({r['iou_low']:.3f}–{r['iou_high']:.3f}) | "
                     f"{r['iou_median']:.3f} | {r['found']:.2f} | {r['true_macro']:.3f} / {r['proposed_macro']:.3f} "
                     f"({r['macro_drop']:+.3f}) | {r['true_micro']:.3f} / {r['proposed_micro']:.3f} "
                     f"({r['micro_drop']:+.3f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder (its sites/*.yaml and model.pt)")
    parser.add_argument("--model", type=Path, default=None, help="another checkpoint to score on the run's cohorts")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    results = evaluate_run(args.run, args.model, args.device)
    print(markdown(results))
    if args.out:  # NaN (a cohort without every class has no macro AUC) as null: plain JSON
        clean = {site: {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
                 for site, r in results.items()}
        args.out.write_text(json.dumps(clean, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
