"""Differential privacy for the weights a round publishes: clip each site's update, add Gaussian noise.

Central DP at the coordinator, the same mechanism as Flower's server-side fixed clipping: every
site's update (its weights minus the weights it received) is clipped to L2 norm `clip_norm`,
the clipped updates are averaged, and Gaussian noise is added to the average. The protected unit
is a whole site: changing any of a site's cases changes the published weights by at most the
clip norm times that site's weight in the average, and the noise is scaled to that. The privacy
spent over the run is counted with the Renyi-DP accountant of the Gaussian mechanism (Mironov,
2017): every round of every phase publishes one noised average.

Own code rather than Flower's DP strategy wrappers: those add noise to integer buffers too
(BatchNorm's batch counter) and keep the noised weights from the recorder that saves them.
Noise protects the published weights only; validation and evaluation figures are governed by
each site's small-number rules (client/disclosure.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord

from server.reply_checks import clipped, update_norm

DEFAULT_DELTA = 1e-5
# Noise can push a BatchNorm running variance below zero, which turns every output into NaN.
MIN_VARIANCE = 1e-3


@dataclass(frozen=True)
class GaussianDP:
    """Fixed clipping and Gaussian noise; noise_multiplier is the noise std in units of the sensitivity."""

    noise_multiplier: float
    clip_norm: float

    def clip(self, arrays: ArrayRecord, sent: ArrayRecord) -> ArrayRecord:
        """The site's update clipped to `clip_norm` (unchanged when already within it)."""
        norm = update_norm(arrays, sent)
        return arrays if norm <= self.clip_norm else clipped(arrays, sent, self.clip_norm / norm)

    def noise_std(self, weights: list[float]) -> float:
        """Std of the noise for a weighted average with these site weights (summing to 1)."""
        return self.noise_multiplier * self.clip_norm * max(weights)

    def noised(self, arrays: ArrayRecord, weights: list[float], rng: np.random.Generator) -> ArrayRecord:
        """The averaged weights plus Gaussian noise on every floating tensor."""
        std = self.noise_std(weights)
        out = {}
        for key, array in arrays.items():
            values = array.numpy()
            if values.dtype.kind == "f":  # BatchNorm statistics come from the cases too: noised as well
                values = (values + rng.normal(0.0, std, size=values.shape)).astype(values.dtype)
                if key.endswith("running_var"):  # a variance must stay positive (post-processing keeps DP)
                    values = np.maximum(values, MIN_VARIANCE).astype(values.dtype)
            out[key] = Array(np.array(values, order="C"))  # ascontiguousarray would make 0-d arrays 1-d
        return ArrayRecord(out)


def epsilon(noise_multiplier: float, releases: int, delta: float = DEFAULT_DELTA) -> float:
    """(epsilon, delta)-DP spent by `releases` Gaussian mechanisms of this noise multiplier.

    Renyi DP of order a is a * releases / (2 sigma^2); converted with eps = rdp + log(1/delta)/(a - 1),
    minimised over a grid of orders.
    """
    if releases == 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    orders = np.concatenate([np.linspace(1.01, 10, 200), np.linspace(10, 1000, 400)])
    rdp = orders * releases / (2 * noise_multiplier ** 2)
    return float(np.min(rdp + math.log(1 / delta) / (orders - 1)))
