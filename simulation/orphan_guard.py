"""`python -m simulation.orphan_guard PARENT ROOT`: SIGKILL ROOT's process tree as soon as PARENT dies.

clafed starts one beside its SuperLink. Killed clafed (SIGKILL, a crash) would otherwise leave the
SuperLink, flwr-simulation and Ray running on, the ServerApp still writing into the run folder while
`--resume` starts a new one. Standard library only: it starts in a fraction of a second.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

POLL_SECONDS = 0.3


def process_tree(root: int) -> list[int]:
    """`root` and its descendants (Linux /proc; elsewhere `root` only)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # The command name in brackets may hold spaces: fields start after its last ')'.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        if Path("/proc").is_dir():
            return False
        try:  # not Linux: ask the process itself
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def send(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def guard(parent: int, root: int) -> None:
    # Every descendant seen so far: a process whose parent ends is re-parented out of the tree.
    known: set[int] = set()
    while alive(root):
        known.update(process_tree(root))
        if not alive(parent):
            send(sorted(known | set(process_tree(root))), signal.SIGKILL)
            return
        known = {pid for pid in known if alive(pid)}
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    guard(int(sys.argv[1]), int(sys.argv[2]))
