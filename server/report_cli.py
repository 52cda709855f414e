"""`clafed report RUN_DIR`: rebuild report.md and report.html from a run's saved records."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed report`."""
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help="a run directory, or a comparison holding federated/, pooled/, local/")
    parser.add_argument("--out-dir", type=Path, default=None, help="write the report here (default: RUN_DIR)")


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    from server.report import write_report

    if not args.run_dir.is_dir():
        print(f"{args.run_dir}: no such run directory", file=sys.stderr)
        return 2
    try:
        md_path, html_path = write_report(args.run_dir, args.out_dir)
    except (FileNotFoundError, ValueError) as err:  # ValueError includes a corrupt JSON record
        print(f"cannot build the report: {err}", file=sys.stderr)
        return 2
    print(f"{md_path}\n{html_path}")
    return 0
