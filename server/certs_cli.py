"""`clafed certs`: generate the deployment's CA, TLS, SuperNode and model-signing keys."""
from __future__ import annotations

import argparse
import sys

from server.certs import generate_credentials


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="new folder for the credentials (never overwritten)")
    parser.add_argument("--server-host", action="append", required=True, dest="hosts", metavar="HOST",
                        help="name or IP the sites use to reach the SuperLink (repeat for several); "
                             "include 127.0.0.1 when the SuperLink's own apps connect locally")
    parser.add_argument("--sites", required=True, help="comma-separated site names, e.g. hospital1,hospital2")


def run(args: argparse.Namespace) -> int:
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    try:
        creds = generate_credentials(args.out, args.hosts, sites)
    except (FileExistsError, ValueError) as err:
        print(f"clafed certs: {err}", file=sys.stderr)
        return 2
    print(f"wrote credentials to {creds.out}")
    print(f"  coordinator keeps: {creds.ca_key.name} (offline), {creds.server_key.name}, {creds.signing_key.name}")
    for site, (private, public) in creds.site_keys.items():
        print(f"  send to {site}: {creds.ca_cert.name}, {creds.signing_public_key.name}, "
              f"{private.parent.name}/{private.name}, {private.parent.name}/{public.name}")
    print(f"  register each site's key once the SuperLink runs: see {creds.registry.name}")
    return 0
