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


def _split(args: argparse.Namespace):
    from simulation.split import SplitError, read_pooled, split_by_column, split_dirichlet, split_like_paper

    table = read_pooled(args.manifest, need_labels=args.by is None)
    if args.by is not None:
        if args.sites is not None:
            raise SplitError("--sites does not apply to --by (the column's values are the sites)")
        return split_by_column(table, args.by, args.manifest), {"mode": "by", "column": args.by}
    if args.like is not None:
        if args.sites not in (None, 3):
            raise SplitError("--like paper always makes the paper's 3 sites; drop --sites")
        return split_like_paper(table, args.seed), {"mode": "like", "like": args.like, "seed": args.seed}
    sites = 3 if args.sites is None else args.sites
    return split_dirichlet(table, args.dirichlet, sites, args.seed), \
        {"mode": "dirichlet", "alpha": args.dirichlet, "sites": sites, "seed": args.seed}


def run(args: argparse.Namespace) -> int:
    """Split, write the site manifests and print one line per site."""
    from common.labels import CLASSES
    from simulation.split import SplitError, write_split

    try:
        parts, settings = _split(args)
        written = write_split(parts, args.manifest, args.out, settings)
    except SplitError as err:
        print(f"clafed split: {err}", file=sys.stderr)
        return 2
    print("site".ljust(16) + "".join(c[:11].rjust(12) for c in CLASSES) + "total".rjust(8))
    for name, part in parts.items():
        counts = "".join(str(int((part["label"] == c).sum())).rjust(12) for c in CLASSES)
        print(f"{name[:15]:<16}{counts}{len(part):>8}  -> {written[name]}")
    return 0
