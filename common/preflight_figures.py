"""The key scheme of a site's shareable preflight figures (client/preflight.py writes them) and the
coordinator's check of a reply (server/federation.py): what both sides must agree on.

    pre.<cohort>.n, pre.<cohort>.class.<class>, pre.<cohort>.year.<yyyy>, pre.<cohort>.scanner.<k>,
    pre.<cohort>.scanner.unknown, pre.<cohort>.scanner_count, pre.<cohort>.suppressed,
    pre.<bus|cdfi>.<width|height>.<min|median|max>, pre.bus.spacing_<x|y>.<min|median|max>,
    pre.no_roi, pre.suppressed, pre.duplicates, pre.duplicates_cross_cohort, pre.unreadable

(<cohort> is `train` or `heldout`; client/preflight.py says what each one counts.)
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

from common.labels import CLASSES

PREFIX = "pre."
COHORTS = ("train", "heldout")
COHORT_TITLES = {"train": "training cohort (train + validation)", "heldout": "held-out cohort"}
MODALITIES = ("bus", "cdfi")
STATS = ("min", "median", "max")
UNKNOWN_SCANNER = "unknown"
# The pixel-spacing columns `clafed ingest` writes (client/ingest/run.py): the B-mode frame's
# mm per pixel, from its DICOM ultrasound regions.
SPACING_COLUMNS = {"x": "mm_per_px_x", "y": "mm_per_px_y"}
SITE_SUPPRESSED = "pre.suppressed"
DUPLICATES = "pre.duplicates"
CROSS_COHORT_DUPLICATES = "pre.duplicates_cross_cohort"
UNREADABLE = "pre.unreadable"
NO_ROI = "pre.no_roi"
# Far more keys than a site has years and scanners; a longer reply is refused.
MAX_KEYS = 2000


def cohort_key(cohort: str, what: str) -> str:
    """`pre.<cohort>.<what>`, e.g. cohort_key("train", "class.lymphoma")."""
    return f"{PREFIX}{cohort}.{what}"


_CLASS_RE = "|".join(CLASSES)
_COHORT_RE = "|".join(COHORTS)
# key pattern -> whether its value is a count (a non-negative integer); others are non-negative reals.
KEY_PATTERNS: tuple[tuple[re.Pattern[str], bool], ...] = tuple((re.compile(p), count) for p, count in (
    (rf"pre\.({_COHORT_RE})\.n", True),
    (rf"pre\.({_COHORT_RE})\.class\.({_CLASS_RE})", True),
    (rf"pre\.({_COHORT_RE})\.year\.\d{{4}}", True),
    (rf"pre\.({_COHORT_RE})\.scanner\.(\d{{1,3}}|{UNKNOWN_SCANNER})", True),
    (rf"pre\.({_COHORT_RE})\.(scanner_count|suppressed)", True),
    (rf"pre\.({'|'.join(MODALITIES)})\.(width|height)\.({'|'.join(STATS)})", False),
    (rf"pre\.bus\.spacing_[xy]\.({'|'.join(STATS)})", False),
    (r"pre\.(no_roi|suppressed|duplicates|duplicates_cross_cohort|unreadable)", True),
))


def _pattern_of(key: str) -> bool | None:
    """Whether `key` is a count (True), a real figure (False) or of no known shape (None)."""
    for pattern, count in KEY_PATTERNS:
        if pattern.fullmatch(key):
            return count
    return None


def preflight_keys_problem(figures: Mapping[str, float]) -> str | None:
    """Why a site's preflight reply cannot be used (None: it can).

    Refused: more keys than a preflight has, key shapes outside the scheme, values that are not
    finite non-negative numbers, counts that are not whole numbers, a missing cohort total,
    class, year or scanner counts that add up to more than their cohort (or, complete, to
    another number), leaving out more class counts than `suppressed` says, and size ranges
    whose median is not between their min and max.
    """
    if len(figures) > MAX_KEYS:
        return f"{len(figures)} figures, more than the {MAX_KEYS} a preflight sends"
    unknown = sorted(k for k in figures if not isinstance(k, str) or _pattern_of(k) is None)
    if unknown:
        return f"keys outside the preflight's scheme: {', '.join(map(str, unknown[:5]))}"
    bad = sorted(k for k, v in figures.items()
                 if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0)
    if bad:
        return f"figures that are not finite non-negative numbers: {', '.join(bad[:5])}"
    fractional = sorted(k for k, v in figures.items() if _pattern_of(k) and not float(v).is_integer())
    if fractional:
        return f"counts that are not whole numbers: {', '.join(fractional[:5])}"
    for name in COHORTS:
        total_key = cohort_key(name, "n")
        if total_key not in figures:
            return f"{total_key} is missing"
        total = figures[total_key]
        detail = [k for k in figures if k.startswith(cohort_key(name, "")) and k != total_key]
        if detail and cohort_key(name, "suppressed") not in figures:
            return f"{name} counts without {cohort_key(name, 'suppressed')}"
        for part in ("class", "year", "scanner"):
            values = [v for k, v in figures.items() if k.startswith(cohort_key(name, part + "."))]
            if sum(values) > total:
                return f"{name} {part} counts add up to {sum(values):g}, more than the cohort's {total:g} cases"
        classes = [figures.get(cohort_key(name, f"class.{c}")) for c in CLASSES]
        present = [v for v in classes if v is not None]
        if detail and len(present) == len(CLASSES) and sum(present) != total:
            return f"{name} class counts add up to {sum(present):g}, not the cohort's {total:g} cases"
        if detail and len(CLASSES) - len(present) > figures[cohort_key(name, "suppressed")]:
            return f"{name} class counts left out without being counted in {cohort_key(name, 'suppressed')}"
        if figures.get(cohort_key(name, "scanner_count"), 0) > 999:
            return f"{name} scanner_count is implausible"
    n_cases = figures[cohort_key("train", "n")] + figures[cohort_key("heldout", "n")]
    if figures.get(NO_ROI, 0) > n_cases:
        return f"{NO_ROI} is {figures[NO_ROI]:g}, more than the site's {n_cases:g} cases"
    if figures.get(UNREADABLE, 0) > 2 * n_cases or figures.get(DUPLICATES, 0) > n_cases:
        return f"more unreadable images or duplicate groups than the site's {n_cases:g} cases have"
    if figures.get(CROSS_COHORT_DUPLICATES, 0) > figures.get(DUPLICATES, 0):
        return f"{CROSS_COHORT_DUPLICATES} exceeds {DUPLICATES}"
    for stem in {k.rsplit(".", 1)[0] for k in figures if _pattern_of(k) is False}:
        if any(f"{stem}.{stat}" not in figures for stat in STATS):
            return f"{stem} lacks one of min, median, max"
        low, mid, high = (float(figures[f"{stem}.{stat}"]) for stat in STATS)
        if not low <= mid <= high:
            return f"{stem}: median {mid:g} not between min {low:g} and max {high:g}"
    return None
