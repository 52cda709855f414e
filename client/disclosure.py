"""What a site lets out beyond weights: small-number rules for its figures, and errors without patients.

The full detail (every figure, every error with its case id and file) stays in the site's own
folder and log. What goes to the server follows three rules:

- a cohort smaller than the site's `min_cohort` returns its case counts only (with one held-out
  case, an AUC and a confusion matrix would name that patient's label and prediction);
- confusion-matrix cells holding fewer than `min_cell` cases (but some) are left out, and
  `clahdm.cm.suppressed` says how many were; reliability-diagram bins that small are blanked;
- an error says what kind of problem happened and how many cases it concerns, never which.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping

from common import federated_validation as fv
from common.calibration import suppress_small_bins
from common.errors import ClafedError, ProtocolError
from common.imaging import ImageError
from common.manifest import ManifestError
from common.signing import SignatureError
from common.typed_config import ConfigError

log = logging.getLogger("clafed.client")

# Figures a cohort below the minimum still returns: how many cases of which class.
COUNT_PREFIXES = ("n_cases", "n.", "n_unlabeled")
WITHHELD_KEY = "withheld"
SUPPRESSED_KEY = "clahdm.cm.suppressed"


def shareable_evaluation(figures: Mapping[str, float], *, min_cohort: int, min_cell: int) -> dict[str, float]:
    """The evaluation figures the server may see under the site's small-number rules."""
    if figures.get("n_cases", 0) < min_cohort:
        counts = {k: v for k, v in figures.items() if k.startswith(COUNT_PREFIXES)}
        return counts | {WITHHELD_KEY: 1.0}
    small = [k for k, v in figures.items() if ".cm." in k and 0 < v < min_cell]
    out = suppress_small_bins({k: v for k, v in figures.items() if k not in small}, min_cell)
    out[SUPPRESSED_KEY] = float(len(small))
    return out


def shareable_validation(figures: Mapping[str, float], min_cohort: int) -> dict[str, float]:
    """A round's validation figures, or the same keys all at zero (a zero-case reply) for a cohort
    below the minimum: per-case scores of a few patients could be read off their histogram bins."""
    if 0 < figures.get(fv.COUNT_KEY, 0) < min_cohort:
        return {key: 0.0 if key == fv.LOSS_KEY else 0 for key in figures}
    return dict(figures)


def public_reason(err: BaseException) -> str:
    """What the server may learn about a failure: its kind and a count, no case id, no path."""
    if isinstance(err, ProtocolError):  # about the message, nothing about the site's cases
        return str(err)
    if isinstance(err, ManifestError):
        return f"the site's manifest cannot be used ({err.count} problem(s)); run `clafed validate` at the site"
    if isinstance(err, ImageError):
        return "an image of the site could not be read; run `clafed validate` at the site"
    if isinstance(err, ConfigError):
        return "the site's configuration is invalid; see the site's log"
    if isinstance(err, SignatureError):
        return "the site refused the model: its signature did not verify against the coordinator's key"
    if isinstance(err, MemoryError):
        return "the site ran out of memory"
    return f"{type(err).__name__} at the site; the details are in the site's log"


class SiteFailure(ClafedError, RuntimeError):
    """A failure as reported to the server (the original is in the site's log)."""


def reported(handler: Callable) -> Callable:
    """Wrap a ClientApp handler: log any failure in full here, send only its public reason."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 -- every failure must be rewritten before it leaves
            log.exception("%s failed", handler.__name__)
            raise SiteFailure(public_reason(err)) from None

    return wrapper
