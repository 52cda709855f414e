"""`clafed server --certs DIR`: start the coordinator's Flower SuperLink with TLS and node authentication.

The SuperLink runs behind server.superlink_guard: its Control API (registering nodes, starting
runs) answers only on the coordinator's control address, never to a remote host.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from common.launch import flower_env, run_forwarding
from server.certs import CA_CERT, REGISTRY, SERVER_CERT, SERVER_KEY
from server.superlink_guard import DEFAULT_CONTROL_HOSTS

# Flower 1.42 serves the Fleet, Control and runtime APIs over HTTPS on this one port.
DEFAULT_PORT = 8000
DEFAULT_DATABASE = "superlink_state.db"


def superlink_command(certs: Path, *, database: Path | None, host: str = "0.0.0.0", port: int = DEFAULT_PORT,
                      control_hosts: tuple[str, ...] = DEFAULT_CONTROL_HOSTS) -> list[str]:
    """The guarded flower-superlink command line (pure: no file is read or checked).

    `flower-superlink ARGS` runs as `python -m server.superlink_guard --control-host H -- ARGS`.
    With a database, the guard also keeps the messages' payloads in memory (`--payloads-in-memory`):
    the file holds the registered nodes and the runs, never a model on its way (see superlink_guard).
    """
    certs = Path(certs)
    guard = [sys.executable, "-m", "server.superlink_guard"]
    for control_host in control_hosts:
        guard += ["--control-host", control_host]
    if database is not None:
        guard.append("--payloads-in-memory")
    command = [
        "flower-superlink",
        "--ssl-ca-certfile", str(certs / CA_CERT),
        "--ssl-certfile", str(certs / SERVER_CERT),
        "--ssl-keyfile", str(certs / SERVER_KEY),
        # Only SuperNodes whose public key was registered (`flwr supernode register`) may join.
        "--enable-supernode-auth",
        # Hospitals are offline: the apps' dependencies are installed with clafed, never fetched.
        "--disable-runtime-dependency-installation",
        "--host", host, "--port", str(port),
    ]
    if database is not None:
        # Registered nodes and runs survive a SuperLink restart (without it they live in memory); a run
        # that was going on is then resumed from its last completed round (docs/deployment.md).
        command += ["--database", str(database)]
    return [*guard, "--", *command]


def missing_credentials(certs: Path) -> list[Path]:
    """The TLS files the SuperLink needs that are not in `certs`."""
    return [Path(certs) / name for name in (CA_CERT, SERVER_CERT, SERVER_KEY) if not (Path(certs) / name).is_file()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--certs", required=True, help="the folder `clafed certs` wrote")
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTPS port (default {DEFAULT_PORT})")
    parser.add_argument("--control-host", action="append", dest="control_hosts", default=None,
                        help="local address on which the Control API (flwr run, flwr supernode register) "
                             "answers; repeatable (default 127.0.0.1 and ::1: only `flwr` on this machine)")
    parser.add_argument("--database", default=DEFAULT_DATABASE,
                        help="SuperLink state file (SQLite): registered nodes, runs, their logs; message payloads "
                             f"stay in memory (default ./{DEFAULT_DATABASE})")
    parser.add_argument("--no-database", action="store_true",
                        help="keep all of the SuperLink's state in memory: after a restart every site must be "
                             "registered again")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the command instead of running it")


def run(args: argparse.Namespace) -> int:
    certs = Path(args.certs).resolve()
    database = None if args.no_database else Path(args.database).resolve()
    control_hosts = tuple(args.control_hosts or DEFAULT_CONTROL_HOSTS)
    command = superlink_command(certs, database=database, host=args.host, port=args.port,
                                control_hosts=control_hosts)
    if args.print_only:
        print(shlex.join(command))
        return 0
    missing = missing_credentials(certs)
    if missing:
        print(f"clafed server: missing {', '.join(map(str, missing))}; create them with "
              "`clafed certs --out DIR --server-host HOST --sites ...` and pass --certs DIR", file=sys.stderr)
        return 2
    print(f"clafed server: SuperLink on {args.host}:{args.port}; its Control API answers only on "
          f"{', '.join(control_hosts)}: register each site once from this machine with "
          f"`flwr supernode register SITE/supernode.pub FEDERATION` (keys listed in {certs / REGISTRY})",
          file=sys.stderr)
    return run_forwarding(command, flower_env())
