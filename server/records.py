"""The server's records of a run in memory: who the sites are, and what each round produced.

Their own module so that the federation, the strategy and the recorder can all use them without
importing one another.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, MetricRecord

from common import messages as msg


@dataclass
class SiteInfo:
    """A connected site as it describes itself: name, role and aggregate case counts only."""

    node_id: int
    name: str
    role: str
    cohort: str
    counts: dict[str, int] = field(default_factory=dict)

    def trains(self, phase: str) -> bool:
        return self.role == "train" and self.counts.get(msg.train_count(phase), 0) > 0


@dataclass
class RoundReport:
    """What one round produced, handed to the server's recorder before the next round starts."""

    server_round: int
    arrays: ArrayRecord | None
    metrics: MetricRecord | None
    # node id -> that node's reply metrics (counts and aggregate training figures only)
    replies: dict[int, dict] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    targeted: list[int] = field(default_factory=list)
    # node id -> the factor its update was shrunk by (norm clipping), for the sites clipped
    clipped: dict[int, float] = field(default_factory=dict)
    # names of the sites meant to train that neither replied nor failed, offline ones included
    # (set by the server, which knows every trainer; the strategy sees only the connected ones)
    silent: list[str] = field(default_factory=list)
    # node id -> L2 norm of its update before any clipping (what a DP clip norm is chosen from)
    update_norms: dict[int, float] = field(default_factory=dict)
    # std of the differential-privacy noise added to this round's average (0: none)
    dp_noise_std: float = 0.0
    # bytes of weights each site received, and node id -> bytes its reply carried
    bytes_down: int = 0
    bytes_up: dict[int, int] = field(default_factory=dict)
    # the strategy's own state after this round (FedAdam's moments; empty for FedAvg)
    server_state: dict[str, np.ndarray] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
