"""`clafed split`: turn a pooled manifest into one manifest per virtual hospital (no image copies)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed split`."""
    parser.add_argument("--manifest", required=True, help="the pooled manifest.csv")
    parser.add_argument("--out", required=True, help="output folder; one sub-folder per virtual site")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--by", metavar="COLUMN", help="one site per value of COLUMN (a natural split)")
    mode.add_argument("--like", choices=("paper",), help="the paper's three hospitals: sizes and class mixes")
    mode.add_argument("--dirichlet", metavar="ALPHA", type=float, help="label skew: class shares ~ Dir(ALPHA)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random deal (--like, --dirichlet)")
    parser.add_argument("--sites", type=int, default=None, help="number of sites for --dirichlet (default 3)")


def run(args: argparse.Namespace) -> int:
    """Split, write the site manifests and print one line per site."""
    from common.labels import CLASSES
    from simulation.split import SplitError, split_pooled, write_split

    try:
        parts, settings = split_pooled(args.manifest, by=args.by, like=args.like, dirichlet=args.dirichlet,
                                       sites=args.sites, seed=args.seed)
        written = write_split(parts, args.manifest, args.out, settings)
    except SplitError as err:
        print(f"clafed split: {err}", file=sys.stderr)
        return 2
    print("site".ljust(16) + "".join(c[:11].rjust(12) for c in CLASSES) + "total".rjust(8))
    for name, part in parts.items():
        counts = "".join(str(int((part["label"] == c).sum())).rjust(12) for c in CLASSES)
        print(f"{name[:15]:<16}{counts}{len(part):>8}  -> {written[name]}")
    return 0
