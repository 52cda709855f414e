"""A site's optimiser state between the rounds of a phase, on the site's own disk.

Each round a site receives the global weights and trains a few local steps. Its AdamW step counts
and second moments from the previous round are kept here (one file per run and phase, next to the
site's other outputs) so that its step sizes continue instead of restarting
(common.training.OptimizerCarry).
The file never leaves the site, is used only by the round right after the one that wrote it, and
is removed after the phase's last round.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from common.names import checked_name
from common.training import OptimizerCarry

STATE_DIR = "optimizer-state"


def state_path(output_dir: Path, run_id: int, phase: str) -> Path:
    """Where a run's optimiser state of one phase lives at the site."""
    return output_dir / STATE_DIR / f"run-{int(run_id)}" / f"{checked_name(phase, 'training phase')}.pt"


def load(output_dir: Path, run_id: int, phase: str, server_round: int) -> OptimizerCarry:
    """The state the previous round of this run and phase left; an empty carry when there is none
    (the phase's first round, a resumed run, a file from another round or one that cannot be read)."""
    path = state_path(output_dir, run_id, phase)
    if server_round <= 1 or not path.is_file():
        return OptimizerCarry()
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: training starts a fresh optimiser rather than fail
        return OptimizerCarry()
    if not isinstance(saved, dict) or saved.get("round") != server_round - 1 or saved.get("phase") != phase:
        return OptimizerCarry()
    return OptimizerCarry(saved.get("state"))


def save(output_dir: Path, run_id: int, phase: str, server_round: int, rounds: int, carry: OptimizerCarry) -> None:
    """Keep the state for the next round (atomically), or remove it after the phase's last round."""
    path = state_path(output_dir, run_id, phase)
    if server_round >= rounds or carry.state is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"phase": phase, "round": server_round, "state": carry.state}, partial)
    os.replace(partial, path)
