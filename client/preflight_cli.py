"""`clafed preflight --site SITE.yaml`: the site's data-quality preflight, before any training.

Prints who is in the training and held-out cohorts (classes, scanners, exam years), the image
size and pixel-spacing ranges, cases without ROI, identical image files and unreadable ones, and
writes preflight.json / preflight.md into the site's output folder. Nothing is sent anywhere.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed preflight`."""
    parser.add_argument("--site", type=Path, required=True, help="the site's YAML (sites/NAME.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for preflight.json and preflight.md (default: the site's output_dir)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON (what preflight.json holds) instead of the summary")


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the data is clean, 1 when the preflight found problems (identical images,
    missing or unreadable images, a class without a training case at a training site), 2 when the
    site YAML or its manifest cannot be used."""
    from client.preflight import load_site_unchecked, report_data, site_preflight, summary_lines, write_local_report
    from common.config import ConfigError, load_site_config
    from common.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_PROBLEMS
    from common.manifest import ManifestError

    try:
        config = load_site_config(args.site)
        site = load_site_unchecked(config)  # field problems stop here; image problems are counted below
    except (ConfigError, ManifestError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return EXIT_BAD_INPUT
    preflight = site_preflight(site)
    path = write_local_report(preflight, args.out or config.output_dir)
    if args.json:
        print(json.dumps(report_data(preflight), indent=2))
    else:
        print("\n".join(summary_lines(preflight)))
        print(f"report: {path} (stays at the site; `clafed validate {args.site}` checks every image in full)")
    return EXIT_PROBLEMS if preflight.problems() else EXIT_OK
