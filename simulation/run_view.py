"""What the terminal shows of a simulated federation: clafed's own lines under one progress bar.

The run's log carries Flower's, Ray's and the sites' lines too; they go to run.log only, unless
`--verbose` asks for everything.
"""
from __future__ import annotations

import re
import sys
import time
from typing import Mapping, TextIO

from tqdm import tqdm

from common.labels import PHASES

# The ServerApp's records: "2026-01-01 10:00:00,000 clafed.server INFO ..." (server/server_app.py).
CLAFED_LINE = re.compile(r"^\S+ \S+ clafed\.\S+ (?:INFO|WARNING|ERROR|CRITICAL) ")
ROUND_DONE = re.compile(r" clafed\.server INFO (\S+) round (\d+): loss ")
PHASE_START = re.compile(r" clafed\.server INFO (\S+): federating rounds (\d+)\.\.(\d+)")
FINAL = re.compile(r" clafed\.server INFO final evaluation: ")


class RunView:
    """One overall bar (phase, round k/n, ETA) and clafed's round lines; `verbose`: every line."""

    def __init__(self, rounds: Mapping[str, int], completed: Mapping[str, int], verbose: bool = False,
                 out: TextIO = sys.stderr) -> None:
        self.rounds = dict(rounds)
        self.verbose = verbose
        self.out = out
        done = sum(min(completed.get(p, 0), n) for p, n in self.rounds.items())
        # Not a terminal (a pipe, a CI log): a progress line per round instead of a redrawn bar.
        self.bar = tqdm(total=sum(self.rounds.values()), initial=done, desc="starting Flower", unit="round",
                        file=out, dynamic_ncols=True, leave=True, disable=not out.isatty(),
                        bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} rounds [{elapsed}<{remaining}]")
        self.done, self.started, self.start_done = done, time.monotonic(), done

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        if self.verbose or CLAFED_LINE.search(text):
            if self.bar.disable:
                self.out.write(text + "\n")
                self.out.flush()
            else:
                self.bar.write(text, file=self.out)
        if started := PHASE_START.search(text):
            self._describe(started.group(1), int(started.group(2)))
        elif done := ROUND_DONE.search(text):
            phase, k = done.group(1), int(done.group(2))
            self.bar.update(1)
            self.done += 1
            if k < self.rounds.get(phase, 0):
                self._describe(phase, k + 1)
            if self.bar.disable:
                self.out.write(f"progress: {self.done}/{self.bar.total} rounds, {phase} round {k}/"
                               f"{self.rounds.get(phase, k)} done, ETA {self._eta()}\n")
                self.out.flush()
        elif FINAL.search(text):
            self.bar.set_description_str("final evaluation")

    def _eta(self) -> str:
        """Time left at this session's mean pace per round (training only: the final evaluation is not counted)."""
        fresh = self.done - self.start_done
        seconds = (time.monotonic() - self.started) / max(1, fresh) * max(0, self.bar.total - self.done)
        return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"

    def _describe(self, phase: str, k: int) -> None:
        self.bar.set_description_str(f"{phase} round {k}/{self.rounds.get(phase, k)}")

    def close(self) -> None:
        self.bar.close()


def phase_rounds(train) -> dict[str, int]:
    """Rounds of each training phase in the order the server runs them (a TrainConfig)."""
    return {phase: train.phase_rounds(phase) for phase in PHASES if train.phase_rounds(phase) > 0}
