"""`clafed validate PATH`: check a manifest or a site YAML and print one line per problem."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed validate`."""
    parser.add_argument("path", type=Path, help="a manifest.csv or a site YAML (its manifest is checked)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="smallest accepted image side in pixels (default: the site YAML's min_image_size)")


def run(args: argparse.Namespace) -> int:
    """Print every problem with its case id; exit 1 if there is any, 0 if the data is clean, 2 if the
    site YAML itself cannot be read."""
    from common.config import MAX_IMAGE_PIXELS, MIN_IMAGE_SIZE, load_site_config
    from common.typed_config import ConfigError
    from common.validation import validate_manifest

    path: Path = args.path
    min_size, max_pixels = MIN_IMAGE_SIZE, MAX_IMAGE_PIXELS  # a bare manifest: the defaults of a site YAML
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            site = load_site_config(path)
        except ConfigError as err:
            print(err)
            return 2
        path, min_size, max_pixels = site.manifest, site.min_image_size, site.max_image_pixels
    problems = validate_manifest(path, args.min_size or min_size, max_pixels)
    for problem in problems:
        print(problem)
    print(f"{path}: {len(problems)} problem(s)" if problems else f"{path}: OK")
    return 1 if problems else 0
