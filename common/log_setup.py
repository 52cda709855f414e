"""clafed's log lines on stderr, once each, for the processes Flower starts (ServerApp, ClientApp)."""
from __future__ import annotations

import logging


def log_clafed_to_stderr() -> None:
    """INFO and above of the `clafed` loggers on stderr.

    Not through the root logger: Flower's logger has its own handler and also propagates, so a root
    handler printed each Flower line twice (and let httpx log every HTTP request).
    """
    logger = logging.getLogger("clafed")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
