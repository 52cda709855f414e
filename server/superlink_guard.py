"""Flower's SuperLink with its Control API closed to everyone but the coordinator's own host.

Open-source Flower serves the Fleet API (SuperNodes), the Control API (`flwr run`,
`flwr supernode register`: no authentication without Flower's enterprise plugins) and the
Runtime API (the ServerApp) over HTTPS on one port. Anyone who reaches that port with the public
`ca.crt` could register a key and start their own app on the hospitals' SuperNodes. This module
starts the same SuperLink with one ASGI middleware in front of Flower's own:

- `/v1/control/...` answers only on connections that arrived at a control address (default
  127.0.0.1 and ::1, which a remote host cannot reach): the coordinator runs `flwr` on the
  coordinator's machine (or through an SSH tunnel);
- `/v1/runtime/...` answers only to processes on this machine (the peer is a loopback address
  or the connection's own local address), which is where Flower's SuperExec runs the ServerApp;
- everything else (the Fleet API, health) is Flower's as before.

With `--payloads-in-memory` (what `clafed server --database FILE` passes) the SuperLink keeps its
state (registered nodes, runs, tasks, logs) in the `--database` SQLite file but the messages'
payloads (Flower's ObjectStore: the model weights, up to a few hundred MB a message) in memory.
Flower 1.41 and 1.42 put both in the one SQLite file, and deleting a delivered message's payload
(`SqlObjectStore.delete`, on every SuperNode's "message received") holds SQLite's write lock while
it frees the payload's pages: 12 s for a `cpu`-profile model on a loaded 2-core machine, longer
than SQLite's 5 s busy timeout, so every other request failed with "database is locked" (HTTP 500)
and the ServerApp died. Payloads only matter while their round is in flight: a restarted
SuperLink loses them, and the coordinator resumes the run from its last completed round.

Run as `python -m server.superlink_guard --control-host 127.0.0.1 -- flower-superlink ARGS...`;
`clafed server` does this.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Iterable, Sequence

CONTROL_PREFIX = "/v1/control/"
RUNTIME_PREFIX = "/v1/runtime/"
DEFAULT_CONTROL_HOSTS = ("127.0.0.1", "::1")


def _ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address((value or "").split("%")[0])
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    return getattr(address, "ipv4_mapped", None) or address


def refusal(path: str, local: str | None, peer: str | None, control_hosts: Iterable[str]) -> str | None:
    """Why a request for `path` arriving at `local` from `peer` is refused (None: let it through)."""
    local_ip, peer_ip = _ip(local), _ip(peer)
    if path.startswith(CONTROL_PREFIX):
        allowed = {_ip(h) for h in control_hosts}
        if local_ip is None or local_ip not in allowed:
            return "the Control API answers only on the coordinator's control address"
    elif path.startswith(RUNTIME_PREFIX):
        same_host = peer_ip is not None and (peer_ip.is_loopback or peer_ip == local_ip)
        if not same_host:
            return "the Runtime API answers only to processes on the coordinator's machine"
    return None


class ControlAccessGuard:
    """ASGI middleware: refuse Control/Runtime API requests from where they may not come (HTTP 403)."""

    def __init__(self, app, control_hosts: Sequence[str] = DEFAULT_CONTROL_HOSTS) -> None:
        self.app, self.control_hosts = app, tuple(control_hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            local = (scope.get("server") or (None,))[0]
            peer = (scope.get("client") or (None,))[0]
            reason = refusal(scope.get("path", ""), local, peer, self.control_hosts)
            if reason is not None:
                body = json.dumps({"detail": reason}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install(control_hosts: Sequence[str]) -> None:
    """Put the guard in front of Flower's middleware stack (fail closed if Flower changed)."""
    import flwr.superlink.main as superlink_main
    from starlette.middleware import Middleware

    flower_middleware = getattr(superlink_main, "_get_middleware", None)
    if flower_middleware is None:
        raise SystemExit("clafed server: this Flower version has no SuperLink middleware hook; the Control "
                         "API cannot be guarded. Install the flwr version pinned in clafed's pyproject.toml.")

    def guarded() -> list:
        return [Middleware(ControlAccessGuard, control_hosts=tuple(control_hosts)), *flower_middleware()]

    superlink_main._get_middleware = guarded


def keep_payloads_in_memory() -> None:
    """Give the SuperLink an in-memory ObjectStore next to its SQLite LinkState (fail closed if Flower changed).

    Applies to a SQLite file `--database` only; Flower's own in-memory states are left as they are.
    """
    import flwr.superlink.main as superlink_main

    flower_factories = getattr(superlink_main, "get_objectstore_linkstate_factories", None)
    try:
        from flwr.server.superlink.linkstate import LinkStateFactory
        from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
        from flwr.supercore.object_store import ObjectStoreFactory
    except ImportError:
        flower_factories = None
    if flower_factories is None:
        raise SystemExit("clafed server: this Flower version has no SuperLink state hook; message payloads "
                         "cannot be kept out of the database. Install the flwr version pinned in clafed's "
                         "pyproject.toml, or run with --no-database.")

    def factories(database: str, federation_manager):
        if database in (FLWR_IN_MEMORY_DB_NAME, ":memory:") or "://" in database:
            return flower_factories(database, federation_manager)
        objects = ObjectStoreFactory(FLWR_IN_MEMORY_DB_NAME)
        return objects, LinkStateFactory(database, federation_manager, objects)

    superlink_main.get_objectstore_linkstate_factories = factories


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m server.superlink_guard")
    parser.add_argument("--control-host", action="append", dest="control_hosts",
                        help="local address on which the Control API answers (repeatable; default 127.0.0.1, ::1)")
    parser.add_argument("--payloads-in-memory", action="store_true",
                        help="keep message payloads in memory, not in the --database file (registered nodes "
                             "and runs stay in the file)")
    parser.add_argument("superlink_args", nargs=argparse.REMAINDER,
                        help="-- flower-superlink followed by its arguments")
    args = parser.parse_args(argv)
    rest = args.superlink_args[1:] if args.superlink_args[:1] == ["--"] else args.superlink_args
    if rest[:1] != ["flower-superlink"]:
        parser.error("expected `-- flower-superlink ARGS...` after the guard's options")
    hosts = args.control_hosts or list(DEFAULT_CONTROL_HOSTS)
    bad = [h for h in hosts if _ip(h) is None]
    if bad:
        parser.error(f"--control-host must be an IP address, got {', '.join(bad)}")
    install(hosts)
    if args.payloads_in_memory:
        keep_payloads_in_memory()
    from flwr.superlink.cli.flower_superlink import flower_superlink

    sys.argv = list(rest)
    flower_superlink()


if __name__ == "__main__":
    main()
