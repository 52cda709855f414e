"""`clafed client --site sites/hospitalX.yaml`: start this hospital's Flower SuperNode from its YAML."""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from client import supernode_runner, warm_start
from client.app_guard import write_launcher
from common.config import ConfigError, SiteConfig, load_site_config
from common.launch import flower_env, run_forwarding


def supernode_command(site: SiteConfig, site_yaml: Path, *, runtime_port: int | None = None,
                      max_retries: int | None = None, max_wait_time: float | None = None) -> list[str]:
    """The flower-supernode command line for a site (pure: no file is read or checked)."""
    command = ["flower-supernode", "--superlink", site.server_address]
    if site.root_certificates is not None:
        command += ["--root-certificates", str(site.root_certificates)]
    if site.auth_private_key is not None:
        command += ["--auth-supernode-private-key", str(site.auth_private_key)]
    # json.dumps gives a TOML basic string: quotes and backslashes in the path survive.
    command += ["--node-config", f"site-config={json.dumps(str(Path(site_yaml).resolve()))}"]
    if runtime_port is not None:
        # Each SuperNode serves its local runtime API; two on one host need different ports.
        command += ["--port", str(runtime_port)]
    if max_retries is not None:
        command += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        command += ["--max-wait-time", str(max_wait_time)]
    return command


TASK_POLL_SECONDS = "0.1"


def start_warm_server(env: dict[str, str], cwd: Path) -> subprocess.Popen | None:
    """Start the warm ClientApp server (client/warm_start.py) and point the launchers at it via
    `env`; None (every ClientApp starts cold) if it cannot start."""
    try:
        path = warm_start.private_socket_path()
    except OSError as err:
        print(f"clafed client: no warm ClientApp server ({err}); every message starts a cold process",
              file=sys.stderr)
        return None
    env[warm_start.ENV_SOCKET] = str(path)
    return subprocess.Popen([sys.executable, "-m", "client.warm_start", str(path)], env=env, cwd=cwd)


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def flwr_home(site: SiteConfig) -> Path:
    """Each SuperNode keeps its Flower state apart, under the site's own output folder."""
    return site.output_dir / "flwr_home"


def check_site_credentials(site: SiteConfig, site_yaml: Path) -> list[str]:
    """Problems that would stop the SuperNode from joining, each naming the YAML key to fix."""
    problems = []
    if site.auth_private_key is None:
        problems.append(f"{site_yaml}: auth_private_key is not set; use the {site.name}/supernode.key the "
                        "coordinator generated with `clafed certs` (the SuperLink refuses unauthenticated nodes)")
    for key in ("root_certificates", "auth_private_key", "coordinator_public_key"):
        path = getattr(site, key)
        if path is not None and not Path(path).is_file():
            problems.append(f"{site_yaml}: {key}: file not found: {path}")
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site", required=True, help="this hospital's site YAML (sites/hospitalX.yaml)")
    parser.add_argument("--server-address", default=None,
                        help="SuperLink host:port overriding the YAML's server_address (e.g. a container name)")
    parser.add_argument("--runtime-port", type=int, default=None,
                        help="port of the SuperNode's local runtime API (default Flower's 9094); "
                             "give each SuperNode on one host its own")
    parser.add_argument("--max-retries", type=int, default=None,
                        help="give up after this many reconnection attempts (default: retry forever)")
    parser.add_argument("--max-wait-time", type=float, default=None,
                        help="give up reconnecting after this many seconds (default: never)")
    parser.add_argument("--poll", type=float, default=supernode_runner.DEFAULT_POLL,
                        help="seconds between the SuperNode's requests for work while it has none "
                             f"(default {supernode_runner.DEFAULT_POLL}; Flower's own pace is 3)")
    parser.add_argument("--cold", action="store_true",
                        help="start every ClientApp cold, as Flower does (default: forked from a warm process "
                             "that has imported torch and Flower once; see client/warm_start.py)")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the environment and command instead of running them")


def run(args: argparse.Namespace) -> int:
    site_yaml = Path(args.site)
    try:
        site = load_site_config(site_yaml)
    except (ConfigError, FileNotFoundError) as err:
        print(f"clafed client: {err}", file=sys.stderr)
        return 2
    if args.server_address:
        site = replace(site, server_address=args.server_address)
    command = [sys.executable, "-m", "client.supernode_runner", "--poll", str(args.poll), "--",
               *supernode_command(site, site_yaml, runtime_port=args.runtime_port, max_retries=args.max_retries,
                                  max_wait_time=args.max_wait_time)]
    home = flwr_home(site)
    if args.print_only:
        print(f"FLWR_HOME={shlex.quote(str(home))} {shlex.join(command)}")
        return 0
    problems = check_site_credentials(site, site_yaml)
    if problems:
        print("\n".join(f"clafed client: {p}" for p in problems), file=sys.stderr)
        return 2
    if site.root_certificates is None:
        print(f"clafed client: {site_yaml}: root_certificates not set; trusting the system CAs only "
              "(set it to the deployment's ca.crt)", file=sys.stderr)
    home.mkdir(parents=True, exist_ok=True)
    # Flower starts `flwr-clientapp` by name for every message: ours checks the app first.
    guarded = write_launcher(home / "bin")
    env = flower_env(first_on_path=[guarded.parent], FLWR_HOME=str(home),
                     # Flower's SuperExec looks for the next message to run every second by default.
                     FLWR_SUPEREXEC_TASK_POLL_INTERVAL=TASK_POLL_SECONDS)
    warm = None if args.cold else start_warm_server(env, home)
    try:
        rc = run_forwarding(command, env, cwd=home)
    finally:
        if warm is not None:
            stop_process(warm)
    # flwr exits 1 on any error (its own code, e.g. 305 for a refused connection, is only logged);
    # a stop by signal gives a negative code and needs no hint.
    if rc > 0:
        print(f"clafed client: {site.name} stopped with an error (exit {rc}). If it could not join the SuperLink "
              f"at {site.server_address}, check in {site_yaml}: server_address; root_certificates is the "
              "deployment's ca.crt (TLS errors above); and ask the coordinator whether this site's "
              "supernode.pub is registered (`flwr supernode register`).", file=sys.stderr)
    return rc
