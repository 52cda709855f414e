"""`clafed serve`: the web app of a site (Diagnose with --model, Site results with --site) and of
the coordinator (Run monitor with --run), bound to 127.0.0.1 unless told otherwise.

Off loopback every request needs the access token printed at start (or CLAFED_SERVE_TOKEN);
common/web/access.py has the whole policy. A site's pages show its own cases only and never
send them anywhere; the monitor only reads the run folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_PORT = 8765
DEFAULT_UPLOAD_MB = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `clafed serve`."""
    parser.add_argument("--model", type=Path, help="CLA-HDM checkpoint for the Diagnose page (site-local)")
    parser.add_argument("--public-key", type=Path, help="with --model: refuse to start unless the coordinator's "
                                                       "key verifies MODEL.sig; the page shows the result")
    parser.add_argument("--site", type=Path, help="site YAML for the Site results page (its output_dir's evaluations)")
    parser.add_argument("--run", type=Path, help="run folder for the Run monitor (coordinator; read-only)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other "
                                                           "needs the access token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="another name browsers use for this server (its Host header), e.g. a DNS name")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_UPLOAD_MB,
                        help="largest request the Diagnose page accepts (both images, base64)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ...")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM; with --tls-key), "
                                                     "e.g. the server certificate `clafed certs` wrote")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")


def build_app(args: argparse.Namespace):
    """(app, access) from the arguments; ValueError or FileNotFoundError says what to fix."""
    from common.web.access import Access
    from common.web.app import Page, create_app

    if not (args.model or args.site or args.run):
        raise ValueError("nothing to serve: give --model (Diagnose), --site (Site results) and/or --run (Run monitor)")
    if args.public_key and not args.model:
        raise ValueError("--public-key checks the model given with --model")
    if not 0 < args.max_upload_mb <= 512:
        raise ValueError("--max-upload-mb must be above 0 and at most 512")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    pages: list[Page] = []
    max_pixels = None
    site_config = None
    if args.site:
        from common.config import load_site_config

        site_config = load_site_config(args.site)
        max_pixels = site_config.max_image_pixels
    if args.model:
        pages.append(_diagnose_page(args, max_pixels))
    if site_config is not None:
        from client.web_site import SiteResults, site_page
        from common.site import SiteData

        data = SiteData.load(site_config, check_images=False)
        pages.append(site_page(SiteResults(site_config, data.train_cases + data.validation_cases + data.heldout_cases)))
    if args.run:
        from server.web_monitor import RunMonitor, monitor_page

        if args.run.exists() and not args.run.is_dir():
            raise ValueError(f"--run {args.run}: not a folder")
        pages.append(monitor_page(RunMonitor(args.run)))
    access = Access.for_host(args.host, int(args.max_upload_mb * 2 ** 20), tuple(args.allowed_host),
                             secure=args.tls_cert is not None)
    return create_app(access, pages), access


def _diagnose_page(args: argparse.Namespace, max_pixels: int | None):
    from client.web_diagnose import Diagnoser, ModelInfo, diagnose_page
    from common.checkpoint import load_checkpoint
    from common.config import MAX_IMAGE_PIXELS
    from common.signing import verify_checkpoint
    from common.training import resolve_device

    if args.public_key is not None:
        verify_checkpoint(args.model, args.public_key)  # SignatureError: refuse to start
    loaded = load_checkpoint(args.model)
    device = resolve_device(args.device)
    info = ModelInfo.describe(args.model, loaded, args.public_key)
    return diagnose_page(Diagnoser(loaded, info, device, max_pixels or MAX_IMAGE_PIXELS))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from common.errors import EXIT_BAD_INPUT

    try:
        app, access = build_app(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    shown = f"[{args.host}]" if ":" in args.host else args.host
    scheme = "https" if args.tls_cert else "http"
    print(f"clafed serve: open {access.link(f'{scheme}://{shown}:{args.port}')}", flush=True)
    if access.token:
        print("  (the link holds the access token: share it only with people allowed to see these pages)", flush=True)
    if access.token and not args.tls_cert:
        print("  warning: plain HTTP off this machine shows the token to the network; add --tls-cert/--tls-key",
              file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False,
                ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key, timeout_graceful_shutdown=5)
    return 0
