"""`clafed evaluate --model CKPT --site SITE.yaml`: a site's standalone evaluation of a CLA-HDM.

Runs the same evaluation as the federation's final step; everything is written into the site's
own folder and nothing is sent anywhere.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

COHORTS = ("heldout", "train", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed evaluate`."""
    parser.add_argument("--model", type=Path, required=True, help="CLA-HDM checkpoint (model.pt)")
    parser.add_argument("--site", type=Path, required=True, help="the site's YAML (sites/NAME.yaml)")
    parser.add_argument("--cohort", choices=COHORTS, default="heldout",
                        help="which of the site's cases to evaluate (default: heldout, the site's hold-out rule)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the site's output_dir/evaluate-<timestamp>)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per CI (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, ... (default: the site's device)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the site's batch_size")
    parser.add_argument("--unsigned", action="store_true",
                        help="evaluate even if the site has a coordinator_public_key and the model is not signed by it")


def summary_lines(figures: dict[str, float]) -> list[str]:
    """A short plain-text table of the headline figures."""
    from common.formatting import figure_ci
    from common.labels import CLASSES, LEVELS

    def ci(key: str) -> str:
        return figure_ci(figures, key)

    counts = ", ".join(f"{c} {int(figures.get(f'n.{c}', 0))}" for c in CLASSES)
    lines = [f"cases: {int(figures['n_cases'])} labelled ({counts}); {int(figures.get('n_unlabeled', 0))} unlabeled",
             f"{'model':<34} {'AUC (95% CI)':<22} {'ACC':<22} {'SENS':<22} {'SPEC':<22}"]
    for i, level in enumerate(LEVELS):
        k = level.key
        lines.append(f"{f'sub-model {i + 1} ({level.title})':<34} {ci(f'{k}.auc'):<22} {ci(f'{k}.accuracy'):<22} "
                     f"{ci(f'{k}.sensitivity'):<22} {ci(f'{k}.specificity'):<22}")
    lines.append(f"{'CLA-HDM (micro AUC, gated ACC)':<34} {ci('clahdm.auc_micro'):<22} {ci('clahdm.accuracy'):<22}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Load the site and the model, evaluate the chosen cohort, print the headline figures."""
    from client.evaluation import cases_with_boxes, evaluate_site
    from common.checkpoint import load_checkpoint
    from common.config import ConfigError, load_site_config
    from common.manifest import ManifestError
    from common.signing import SignatureError, verify_checkpoint
    from common.site import SiteData
    from common.training import resolve_device

    if args.resamples < 1:
        print("--resamples must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_site_config(args.site)
        site = SiteData.load(config)
        if config.coordinator_public_key and not args.unsigned:
            verify_checkpoint(args.model, config.coordinator_public_key)
        loaded = load_checkpoint(args.model)
    except SignatureError as err:
        print(f"{err}\n(the site's coordinator_public_key does not verify this model; pass --unsigned to "
              "evaluate it anyway)", file=sys.stderr)
        return 2
    except (ConfigError, ManifestError, FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    # "train": every case before the hold-out rule, the validation share included.
    before = site.train_cases + site.validation_cases
    cases = {"heldout": site.heldout_cases, "train": before, "all": before + site.heldout_cases}[args.cohort]
    if not cases:
        print(f"site {config.name}: the {args.cohort} cohort has no cases (role {config.role}, hold-out rule "
              f"{config.holdout.kind}); choose another --cohort", file=sys.stderr)
        return 2
    out = args.out or config.output_dir / f"evaluate-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    device = resolve_device(args.device or config.device)
    cases = cases_with_boxes(loaded.model, cases, loaded.data_config, device)
    figures = evaluate_site(loaded.model, cases, loaded.data_config, out, n_resamples=args.resamples, seed=args.seed,
                            batch_size=args.batch_size or config.batch_size, device=device,
                            num_workers=config.num_workers)
    print(f"site {config.name}, {args.cohort} cohort, model {args.model}")
    print("\n".join(summary_lines(figures)))
    print(f"predictions, ROC, confusion matrix and all figures: {out}")
    return 0
