"""clafed's errors: one base class, and one exit-code policy for every command.

Every error clafed raises on purpose is a ClafedError whose message names the file, case, key
or setting at fault and what to do. The commands (common/cli.py) exit with

    0    done, nothing wrong;
    1    the command ran but found problems: manifest problems (`validate`), cases that could
         not be predicted (`predict`), a run that finished with site problems (`simulate`);
    2    the command could not do its work: bad arguments, or an input it cannot use (a missing
         or malformed file, a refused signature, an invalid setting); fix it and run again;
    130  interrupted.
"""
from __future__ import annotations

# Exit codes of the `clafed` commands.
EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class ClafedError(Exception):
    """Base of every error clafed raises on purpose (its message says what to fix)."""


class ProtocolError(ClafedError, ValueError):
    """A message does not fit the protocol (unknown phase, weights of another model, a bad name).

    Its text is built from the message alone, never from a site's cases, so a site may send it
    back to the server as it is (client/disclosure.py).
    """
