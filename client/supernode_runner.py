"""Flower's SuperNode, asking its SuperLink for the next message every `--poll` seconds.

Flower 1.42's SuperNode sleeps a fixed 3 s whenever the SuperLink has nothing for it
(`flwr.supernode.start_client_internal`: `time.sleep(3)`), and a site that has just sent its reply
always finds nothing yet: every message exchange of a round (train, then validate) then waited
about 3 s before the site even saw it, most of a `tiny` round on a loopback deployment. This
runner gives that module a `time` whose `sleep` is capped at the poll interval (its 0.5 s waits
for a ClientApp's reply stay as they are) and then runs Flower's own `flower-supernode`. One
small HTTPS request per poll and site is nothing to a SuperLink; `--poll 3` restores Flower's pace.

If a Flower version no longer has that module or its `time`, the SuperNode runs unchanged (with
a warning): slower rounds, nothing else.

Run as `python -m client.supernode_runner --poll 0.5 -- flower-supernode ARGS...`; `clafed client`
does this.
"""
from __future__ import annotations

import argparse
import sys
import time
import types

DEFAULT_POLL = 0.5


def capped_time(poll: float) -> types.SimpleNamespace:
    """The `time` module with `sleep` capped at `poll` seconds."""
    namespace = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    namespace.sleep = lambda seconds: time.sleep(min(seconds, poll))
    return namespace


def install(poll: float) -> bool:
    """Cap the SuperNode's idle wait; False if this Flower's SuperNode is not shaped as expected."""
    try:
        import flwr.supernode.start_client_internal as internal
    except ImportError:
        return False
    if getattr(internal, "time", None) is not time:
        return False
    internal.time = capped_time(poll)  # type: ignore[assignment]
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m client.supernode_runner")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL,
                        help="seconds between the SuperNode's requests for work when it has none")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- flower-supernode ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or command[0] != "flower-supernode":
        parser.error("give the SuperNode's command after --: -- flower-supernode ARGS...")
    if not 0.05 <= args.poll <= 60:
        parser.error("--poll must lie between 0.05 and 60 seconds")
    if not install(args.poll):
        print("clafed: this Flower's SuperNode has no idle wait to shorten; it polls at its own pace",
              file=sys.stderr)
    from flwr.supernode.cli import flower_supernode

    sys.argv = command
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
