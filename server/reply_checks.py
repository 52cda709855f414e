"""What the server checks in a site's training reply before it may touch the global model.

A site is trusted with its own cases, not with the model: a reply is used only when its weights
are finite and have the shapes that were sent, its case count is the one the site declared when
it joined (so no site can weigh itself up), and its figures are finite numbers. One site's
update is also bounded relative to the others (norm per training case clipping), so a single
outlier cannot drag the average far even when it passes every check.
"""
from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from common.messages import ARRAYS, METRICS, NUM_EXAMPLES

# What Flower's strategies aggregate (every reply must carry them, and only these are passed on:
# a figure only some sites send, like peak GPU memory, must not stop the round).
AGGREGATED = (NUM_EXAMPLES, "loss", "accuracy")
# Far more than the ~300 figures of a site's evaluation (client/evaluation.py).
MAX_EVALUATION_FIGURES = 5000


def train_reply_problem(content: RecordDict, sent: ArrayRecord, declared: int, transfer: str = "fp32") -> str | None:
    """Why a training reply must not be aggregated (None: it may); with `transfer` fp16 its floating
    tensors must be the fp16 update that was asked for."""
    arrays, metrics = content.get(ARRAYS), content.get(METRICS)
    if not isinstance(arrays, ArrayRecord) or not isinstance(metrics, MetricRecord):
        return "the reply holds no weights or no figures"
    missing = [key for key in AGGREGATED if key not in metrics]
    if missing:
        return f"figures missing: {', '.join(missing)}"
    bad = [key for key, value in metrics.items() if not isinstance(value, (int, float)) or not math.isfinite(value)]
    if bad:
        return f"figures that are not finite numbers: {', '.join(sorted(bad)[:5])}"
    if metrics[NUM_EXAMPLES] != declared:
        return f"it claims {metrics[NUM_EXAMPLES]:g} training cases, but declared {declared} when it joined"
    if set(arrays) != set(sent):
        return "its weights have other tensors than the model that was sent"
    for key, array in arrays.items():
        values, reference = array.numpy(), sent[key].numpy()
        if values.shape != reference.shape:
            return f"weights {key} have shape {values.shape}, the model has {reference.shape}"
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return f"weights {key} hold NaN or infinite values"
        if transfer == "fp16" and reference.dtype.kind == "f" and values.dtype != np.float16:
            return f"weights {key} are {values.dtype}, not the fp16 update the round asked for"
        if transfer == "fp16" and reference.dtype.kind != "f" and values.dtype.kind == "f":
            return f"buffer {key} is {values.dtype}, not the integer the model holds"
    return None


def evaluation_reply_problem(figures: dict) -> str | None:
    """Why a site's final-evaluation figures cannot be recorded (None: they can).

    Single numbers only (NaN allowed: an AUC of a class without cases is undefined), finite
    otherwise, and a bounded number of them.
    """
    if len(figures) > MAX_EVALUATION_FIGURES:
        return f"{len(figures)} figures, more than the {MAX_EVALUATION_FIGURES} an evaluation returns"
    bad = [k for k, v in figures.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isinf(v)]
    return f"figures that are not single finite numbers: {', '.join(sorted(bad)[:5])}" if bad else None


def aggregated_metrics(metrics: MetricRecord) -> MetricRecord:
    """The figures Flower's strategy averages, and nothing else."""
    return MetricRecord({key: metrics[key] for key in AGGREGATED})


def update_norm(arrays: ArrayRecord, sent: ArrayRecord) -> float:
    """L2 norm of a site's update (its weights minus the weights it received), floating tensors only."""
    total = 0.0
    for key, array in arrays.items():
        values = array.numpy()
        if values.dtype.kind == "f":
            total += float(np.sum((values.astype(np.float64) - sent[key].numpy()) ** 2))
    return math.sqrt(total)


def clipped(arrays: ArrayRecord, sent: ArrayRecord, scale: float) -> ArrayRecord:
    """The update shrunk by `scale` (< 1): sent + scale * (arrays - sent); integer buffers kept."""
    out = {}
    for key, array in arrays.items():
        values, reference = array.numpy(), sent[key].numpy()
        if values.dtype.kind == "f":
            values = (reference + scale * (values - reference)).astype(values.dtype)
        out[key] = Array(np.array(values, order="C"))  # ascontiguousarray would make 0-d arrays 1-d
    return ArrayRecord(out)


def clip_scales(norms: dict[int, float], counts: dict[int, float], factor: float) -> dict[int, float]:
    """Per site, the factor that brings its update down to `factor` x the round's median update.

    Norms are compared per training case: a site with five times the cases takes five times the
    local steps and moves further, honestly (seen: 141 vs 18 for 355 vs 71 cases), while its case
    count is pinned to what it declared. Only sites above the bound appear; with `factor` <= 0 or
    fewer than two sites nothing is clipped.
    """
    if factor <= 0 or len(norms) < 2:
        return {}
    per_case = {node: norm / max(counts[node], 1.0) for node, norm in norms.items()}
    bound = factor * float(np.median(list(per_case.values())))
    return {node: bound / rate for node, rate in per_case.items() if rate > bound > 0}
