"""Splitting a site's labelled cases into its local training part and its held-out cohort."""
from __future__ import annotations

import datetime as dt

import numpy as np

from common.config import HoldoutRule
from common.manifest import Case


def split_holdout(cases: list[Case], rule: HoldoutRule) -> tuple[list[Case], list[Case]]:
    """Return (training cases, held-out cases) of the labelled cases according to `rule`."""
    labelled = [c for c in cases if c.label is not None]
    if rule.kind == "all":
        return [], labelled
    if rule.kind == "none":
        return labelled, []
    if rule.kind == "date":
        cutoff = dt.date.fromisoformat(rule.date)
        return [c for c in labelled if c.date < cutoff], [c for c in labelled if c.date >= cutoff]
    return _stratified_fraction(labelled, rule.fraction, rule.seed)


def split_validation(train: list[Case], fraction: float, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Set aside a stratified `fraction` of a site's training cases for federated validation.

    The validation cases never train; they score each round's global model (aggregate figures
    only) and choose the gate threshold, so the held-out cohort stays untouched until the end.
    """
    if fraction <= 0.0 or not train:
        return train, []
    return _stratified_fraction(train, fraction, seed)


def _stratified_fraction(cases: list[Case], fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Hold out `fraction` of each class (at least one case where a class has two or more)."""
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted({c.label for c in cases if c.label is not None}):  # labelled cases only reach here
        ids = sorted(c.case_id for c in cases if c.label == label)
        n_held = int(round(fraction * len(ids)))
        if len(ids) >= 2:
            n_held = min(max(n_held, 1), len(ids) - 1)
        held.update(rng.permutation(ids)[:n_held].tolist())
    return [c for c in cases if c.case_id not in held], [c for c in cases if c.case_id in held]
