"""`clafed synth`: write a synthetic three-hospital BUS + CDFI dataset (and optionally a gallery).

`--format png` (default) writes images, masks and manifest.csv per site; `--format dicom` writes
the same cases as a PACS export (one DICOM study per case) with a labels.csv per site.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed synth`."""
    parser.add_argument("--preset", choices=("paper", "small"), default="paper",
                        help="paper: the paper's 763 cases in three hospitals; small: a few dozen per site")
    parser.add_argument("--seed", type=int, default=0, help="non-negative seed (same seed, same bytes)")
    parser.add_argument("--out", required=True, help="output folder; one sub-folder per hospital")
    parser.add_argument("--format", choices=("png", "dicom"), default="png",
                        help="png: images, masks and manifest.csv; dicom: DICOM studies and labels.csv (a PACS export)")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    parser.add_argument("--gallery", metavar="FILE.png", default=None,
                        help="also draw one BUS|CDFI pair per class (rows) and scanner (columns)")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset; print one line per site."""
    import time

    from simulation.synth import dicom_export, generate
    from simulation.synth.gallery import draw_gallery

    if args.seed < 0:
        print(f"--seed must be a non-negative integer, got {args.seed}")
        return 2
    start = time.perf_counter()
    write = dicom_export.generate_dicom if args.format == "dicom" else generate
    tables = write(args.preset, args.seed, args.out, workers=args.workers)  # site -> manifest.csv | labels.csv
    for site, path in tables.items():
        with open(path) as handle:
            count = sum(1 for _ in handle) - 1
        print(f"{site}: {count} cases -> {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    if args.gallery:
        print(f"gallery -> {draw_gallery(args.seed, args.gallery)}")
    return 0
