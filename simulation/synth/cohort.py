"""Cohort plans: which cases each virtual hospital holds, with label, cohort, date and scanner.

The plan is a pure function of (preset, seed): it renders nothing, so the paper's counts can be
checked in milliseconds.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from common.labels import CLASSES
from simulation.synth.scanners import scanners_of

# Distinguishes the plan's random stream from the cases' (seed, site, case) streams.
_PLAN_STREAM = 0x504C414E


@dataclass(frozen=True)
class CohortSpec:
    """One cohort of one site: class counts in CLASSES order and the span of its exam dates."""

    site: str
    cohort: str  # train | internal_test | external
    counts: tuple[int, int, int, int]
    first_date: str
    last_date: str


@dataclass(frozen=True)
class Preset:
    """A named set of cohorts to generate."""

    name: str
    cohorts: tuple[CohortSpec, ...]

    @property
    def sites(self) -> tuple[str, ...]:
        """Site names in first-appearance order."""
        return tuple(dict.fromkeys(c.site for c in self.cohorts))


# The paper's cohort table: hospital 1 trained on cases before 2021 and tested on its 2021 cases;
# hospitals 2 and 3 are external tests whose dates span 2018-2021, so a date rule can split them too.
PAPER = Preset("paper", (
    CohortSpec("hospital1", "train", (110, 26, 32, 227), "2016-01-04", "2020-12-31"),
    CohortSpec("hospital1", "internal_test", (50, 7, 15, 99), "2021-01-01", "2021-12-31"),
    CohortSpec("hospital2", "external", (12, 21, 10, 62), "2018-01-02", "2021-12-31"),
    CohortSpec("hospital3", "external", (16, 21, 8, 47), "2018-01-02", "2021-12-31"),
))
# Same structure, a few dozen cases per site: every class in every part, at least 2 where the paper
# has any, so tests can train each sub-model (binary levels need both of their classes).
SMALL = Preset("small", (
    CohortSpec("hospital1", "train", (6, 3, 3, 10), "2016-01-04", "2020-12-31"),
    CohortSpec("hospital1", "internal_test", (3, 2, 2, 5), "2021-01-01", "2021-12-31"),
    CohortSpec("hospital2", "external", (3, 4, 3, 8), "2018-01-02", "2021-12-31"),
    CohortSpec("hospital3", "external", (3, 4, 2, 7), "2018-01-02", "2021-12-31"),
))
PRESETS: dict[str, Preset] = {p.name: p for p in (PAPER, SMALL)}


@dataclass(frozen=True)
class CasePlan:
    """Everything decided about a case before it is drawn."""

    case_id: str
    site: str
    site_index: int  # 1-based position of the site in the preset (part of the case's seed)
    case_index: int  # 1-based number of the case within its site (part of the case's seed)
    label: str
    cohort: str
    exam_date: str
    scanner: str


def get_preset(preset: str | Preset) -> Preset:
    """Resolve a preset name (paper | small) or pass a Preset through."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def cohort_plan(preset: str | Preset, seed: int) -> list[CasePlan]:
    """Plan every case of a preset: exact class counts per cohort, dates and scanners, seeded."""
    preset = get_preset(preset)
    plans: list[CasePlan] = []
    for site_index, site in enumerate(preset.sites, start=1):
        specs = [c for c in preset.cohorts if c.site == site]
        plans += _site_plan(site, site_index, specs, seed)
    return plans


def _site_plan(site: str, site_index: int, specs: list[CohortSpec], seed: int) -> list[CasePlan]:
    """One site's cases, numbered in exam-date order (as a hospital's PACS export would be)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, site_index, _PLAN_STREAM]))
    drafts = []  # (date, tie-break, cohort, label)
    for spec in specs:
        start, end = dt.date.fromisoformat(spec.first_date), dt.date.fromisoformat(spec.last_date)
        span = (end - start).days + 1
        for label, count in zip(CLASSES, spec.counts):
            for offset in rng.integers(0, span, size=count):
                drafts.append((start + dt.timedelta(days=int(offset)), rng.random(), spec.cohort, label))
    drafts.sort(key=lambda d: (d[0], d[1]))
    styles = scanners_of(site)
    weights = np.array([s.weight for s in styles])
    picks = rng.choice(len(styles), size=len(drafts), p=weights / weights.sum())
    prefix = f"h{site_index}" if site.startswith("hospital") else site
    return [CasePlan(f"{prefix}-{i:04d}", site, site_index, i, label, cohort, date.isoformat(),
                     styles[pick].name)
            for i, ((date, _, cohort, label), pick) in enumerate(zip(drafts, picks), start=1)]
