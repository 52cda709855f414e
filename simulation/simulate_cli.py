"""`clafed simulate`: the whole federation on this machine, by default on synthetic paper-like data."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from common.config import PROFILES
from server.settings import STRATEGIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="run folder (default: runs/<timestamp>)")
    parser.add_argument("--profile", choices=tuple(PROFILES), default="cpu")
    parser.add_argument("--rounds", type=int, default=0, help="federated rounds per sub-model (default: the profile's)")
    parser.add_argument("--shared-rounds", type=int, default=-1,
                        help="rounds of the shared 4-class phase before the sub-models (0: none; default: the profile's)")
    parser.add_argument("--localiser-rounds", type=int, default=-1,
                        help="rounds of the node localiser, after the sub-models (0: none; default: the profile's)")
    parser.add_argument("--local-epochs", type=int, default=0, help="local epochs per round (default: the profile's)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="fedavg",
                        help="Flower's aggregation; fedmedian, fedtrimmedavg and krum resist a poisoned site")
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (default: the profile's)")
    parser.add_argument("--mask-weight", type=float, default=-1.0,
                        help="weight of the shared phase's node-mask target where manifests have node_mask_path "
                             "(0: off; default: the profile's)")
    parser.add_argument("--transfer", choices=("fp32", "fp16"), default="fp32",
                        help="weights in training rounds: fp16 halves the bytes each way (averaged in fp32)")
    data = parser.add_argument_group("data (default: synthetic paper-like hospitals, cached)")
    data.add_argument("--data", default=None, help="a folder of <site>/manifest.csv, or a pooled manifest.csv to split")
    data.add_argument("--preset", choices=("paper", "small"), default="paper", help="synthetic preset")
    data.add_argument("--seed", type=int, default=0, help="seed of data, split and training")
    split = data.add_mutually_exclusive_group()
    split.add_argument("--by", metavar="COLUMN", help="split a pooled manifest by this column")
    split.add_argument("--like", choices=("paper",), help="split a pooled manifest like the paper (default)")
    split.add_argument("--dirichlet", type=float, metavar="ALPHA", help="split with Dirichlet label skew")
    data.add_argument("--sites", type=int, default=3, help="number of sites for --dirichlet")
    data.add_argument("--holdout", default="date:2021-01-01", help="held-out part: date:YYYY-MM-DD or fraction:F")
    parser.add_argument("--protocol", choices=("federated", "paper"), default="federated",
                        help="federated: every hospital trains; paper: hospital 1 trains, the others only evaluate")
    parser.add_argument("--mode", default="federated",
                        help="federated, pooled, local, or several comma-separated (same splits for all)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Flower's, Ray's and the sites' lines too (always kept in RUN_DIR/flower/run.log)")
    parser.add_argument("--resume", action="store_true", help="continue the federated run in --out after a crash")
    parser.add_argument("--cpus-per-client", type=float, default=None,
                        help="whole CPU cores per simulated site (default: all, so sites train one after another)")
    parser.add_argument("--gpus-per-client", type=float, default=0.0, help="GPU fraction per simulated site")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--heatmaps", type=int, default=1, help="heatmap pictures per class per site (0: none)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    parser.add_argument("--dp-noise", type=float, default=0.0,
                        help="differential privacy: Gaussian noise multiplier on each round's average (0: off)")
    parser.add_argument("--dp-clip", type=float, default=1.0, help="differential privacy: L2 clip norm of a site's update")
    parser.add_argument("--evaluate-model", choices=("best", "final"), default="best",
                        help="evaluate each sub-model at its best round by pooled validation NLL (default) or its last")
    parser.add_argument("--thresholds", choices=("auto", "joint", "youden", "fixed"), default="auto",
                        help="the gated answer's decision thresholds: chosen on pooled validation (joint: together, "
                             "youden: level by level), fixed at 0.5, or auto (joint when every class has enough "
                             "validation cases, else fixed)")
    parser.add_argument("--temperature-scaling", action="store_true",
                        help="divide each level's logit by a temperature fitted on the pooled validation NLL")
    parser.add_argument("--stop-on-missing-class", action="store_true",
                        help="stop before round 1 when a training site has no case of some class")


def run(args: argparse.Namespace) -> int:
    import logging

    from common.config import ConfigError
    from server import run_dir as rd
    from server.federation import FederationError
    from server.settings import Settings
    from simulation.runner import Federation, simulate, site_manifests
    from simulation.summary import print_summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("flwr", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    run_dir = Path(args.out or Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    try:
        if args.resume and (modes != ["federated"] or not args.out):
            raise ConfigError("--resume continues one federated run: give its --out and no other --mode")
        settings = Settings(profile=args.profile, rounds=args.rounds, shared_rounds=args.shared_rounds,
                            localiser_rounds=args.localiser_rounds,
                            local_epochs=args.local_epochs,
                            strategy=args.strategy, transfer=args.transfer, lr=args.lr, mask_weight=args.mask_weight,
                            run_dir=str(run_dir),
                            resume=args.resume,
                            seed=args.seed, bootstrap=args.bootstrap, connect_timeout=120.0,
                            dp_noise=args.dp_noise, dp_clip=args.dp_clip, evaluate_model=args.evaluate_model,
                            temperature_scaling=args.temperature_scaling, thresholds=args.thresholds,
                            stop_on_missing_class=args.stop_on_missing_class)
        federation = Federation(protocol=args.protocol, holdout=args.holdout, heatmaps_per_class=args.heatmaps,
                                device=args.device, cpus_per_client=args.cpus_per_client,
                                gpus_per_client=args.gpus_per_client)
        manifests = site_manifests(args.data, run_dir, preset=args.preset, seed=args.seed, by=args.by,
                                   like=args.like, dirichlet=args.dirichlet, sites=args.sites)
        print(f"run folder: {run_dir}", flush=True)
        folders = simulate(run_dir, settings, federation, manifests, modes, verbose=args.verbose)
    except (ConfigError, FederationError, ValueError) as err:
        print(f"clafed simulate: {err}", file=sys.stderr)
        return 2
    print_summary(run_dir, folders)
    problems = [f"{mode}: {p}" for mode, folder in folders.items() for p in rd.run_problems(folder)]
    if problems:
        print(f"clafed simulate: the run finished with {len(problems)} site problem(s) (listed above and in "
              "the report)", file=sys.stderr)
        return 1
    return 0
