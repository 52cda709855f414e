"""Errors that say what the other side of a message got wrong."""
from __future__ import annotations


class ProtocolError(ValueError):
    """A message does not fit the protocol (unknown phase, weights of another model, a bad name).

    Its text is built from the message alone, never from a site's cases, so a site may send it
    back to the server as it is (client/disclosure.py).
    """
