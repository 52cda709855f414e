"""`python -m simulation.ablation`: one training recipe, pooled, scored on hospital 1's internal test.

The quick bench behind the recipe's choices: every training site's cases before the hold-out date
pooled (no Flower, no validation split), the same training function as a federated round, then
CLA-HDM's macro and micro AUC, each sub-model's AUC and the gated recall per class on hospital 1's
held-out cohort. One line of JSON per run, so runs with different knobs line up:

    python -m simulation.ablation --shared-epochs 8 --epochs 4            # the cpu profile's recipe
    python -m simulation.ablation --shared-epochs 0 --epochs 8            # no shared phase
    python -m simulation.ablation --size 128 --shared-epochs 8 --epochs 4 # input size
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of <site>/manifest.csv (default: the cached "
                        "synthetic paper data)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--size", type=int, default=None, help="input size in px")
    parser.add_argument("--shared-epochs", type=int, default=8, help="epochs of the shared 4-class phase (0: none)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of each sub-model")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--balance", choices=("none", "sampler", "loss"), default=None)
    parser.add_argument("--holdout", default="2021-01-01", help="hold-out date of every site")
    parser.add_argument("--mask-weight", type=float, default=None, help="weight of the shared phase's node-mask target")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from common import metrics as m
    from common.config import HoldoutRule, SiteConfig, get_profile
    from common.dataset import CaseDataset
    from common.labels import CLASSES, SHARED, phase_level
    from common.model import SubModel, initial_model, initial_shared_network
    from common.site import SiteData
    from common.training import predict_clahdm, seed_everything, train_phases, train_submodel
    from simulation.difficulty import macro_ovr_auc
    from simulation.runner import synthetic_data

    manifests = ({p.parent.name: p for p in sorted(args.data.glob("*/manifest.csv"))} if args.data
                 else synthetic_data("paper", 0))
    overrides = {"model": {k: v for k, v in {"backbone": args.backbone}.items() if v},
                 "data": {k: v for k, v in {"input_size": args.size}.items() if v},
                 "train": {k: v for k, v in {"lr": args.lr, "batch_size": args.batch_size,
                                             "balance": args.balance, "mask_weight": args.mask_weight}.items()
                                   if v is not None} | {"progress": False}}
    profile = get_profile(args.profile, overrides)
    rule = HoldoutRule(kind="date", date=args.holdout)
    sites = {name: SiteData.load(SiteConfig(name=name, manifest=path, holdout=rule, validation_fraction=0.0))
             for name, path in sorted(manifests.items())}
    cases = [c for s in sites.values() for c in s.train_cases]
    test = sites["hospital1"].heldout_cases if "hospital1" in sites else next(iter(sites.values())).heldout_cases
    images: dict = {}
    seed_everything(args.seed)
    model = initial_model(profile.model)
    started = time.time()

    def train_phase(phase: str, network: SubModel) -> None:
        dataset = CaseDataset(cases, profile.data, level=phase_level(phase), train=True, seed=args.seed, cache=images,
                              masks=network.has_mask_heads)
        train_submodel(network, dataset, replace(profile.train, seed=args.seed),
                       epochs=args.shared_epochs if phase == SHARED else args.epochs)

    train_phases(model, args.shared_epochs, lambda: initial_shared_network(profile), train_phase)
    preds = predict_clahdm(model, CaseDataset(test, profile.data, cache=images))
    y, pred = preds.targets, preds.hard.argmax(1)
    levels = [m.auc_or_nan(targets, preds.levels[rows, k]) for k, (rows, targets) in enumerate(m.level_subsets(y))]
    print(json.dumps({
        "recipe": {"backbone": profile.model.backbone, "size": profile.data.input_size, "lr": profile.train.lr,
                   "batch_size": profile.train.batch_size, "balance": profile.train.balance,
                   "shared_epochs": args.shared_epochs, "epochs": args.epochs, "seed": args.seed,
                   "mask_weight": profile.train.mask_weight},
        "train_cases": len(cases), "test_cases": len(test), "seconds": round(time.time() - started),
        "macro_auc": round(macro_ovr_auc(y, preds.scores), 4),
        "micro_auc": round(float(roc_auc_score(np.eye(len(CLASSES))[y].ravel(), preds.scores.ravel())), 4),
        "level_auc": [None if np.isnan(a) else round(a, 3) for a in levels],
        "gated_recall": [round(float((pred[y == k] == k).mean()), 2) if (y == k).any() else None
                         for k in range(len(CLASSES))]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
