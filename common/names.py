"""Names that become file or folder names (a site's name, a run's name) are checked against one pattern.

A name arrives from another party (a site's self-declared name at the coordinator, the
coordinator's run name at a site), so it must never be able to leave the folder it is put in.
"""
from __future__ import annotations

import re

from common.errors import ProtocolError

# A letter or digit first, then letters, digits, '.', '_' or '-'; at most 64 characters, no '..'.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def name_problem(name: object) -> str | None:
    """Why `name` cannot be used as a file name (None: it can)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        return (f"{str(name)[:80]!r} is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit")
    return None


def checked_name(name: object, what: str) -> str:
    """`name` itself when it is a safe file name, else ProtocolError naming `what` it was."""
    problem = name_problem(name)
    if problem:
        raise ProtocolError(f"{what}: {problem}")
    return str(name)
