"""The figures the CLA-HDM paper reports, as data, and which of our site cohorts they describe.

Numbers are those listed in the project's domain brief (AUCs; the CLA-HDM micro AUCs with their
95% bootstrap CIs). The paper's cohorts map onto the simulated hospitals by name; the cohorts
are the same cases only when the simulation reproduces the paper's split (`--protocol paper`:
hospital 1 trains on cases before 2021 and holds out 2021, hospitals 2 and 3 only evaluate).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperCohort:
    """One test cohort of the paper and the site whose held-out cases play its part."""

    key: str
    title: str
    site: str
    n_cases: int


COHORTS: tuple[PaperCohort, ...] = (
    PaperCohort("internal", "internal test (hospital 1, 2021)", "hospital1", 171),
    PaperCohort("external1", "external test 1 (hospital 2)", "hospital2", 105),
    PaperCohort("external2", "external test 2 (hospital 3)", "hospital3", 92),
)
COHORT_BY_SITE: dict[str, PaperCohort] = {c.site: c for c in COHORTS}

# Sub-model AUCs per cohort (no CIs are listed for them).
SUBMODEL_AUC: dict[str, dict[str, float]] = {
    "submodel1": {"internal": 0.932, "external1": 0.963, "external2": 0.896},
    "submodel2": {"internal": 0.922, "external1": 0.857, "external2": 0.872},
    "submodel3": {"internal": 0.852, "external1": 0.847, "external2": 0.827},
}

# CLA-HDM 4-class micro-averaged AUC: (point, CI low, CI high).
CLAHDM_MICRO_AUC: dict[str, tuple[float, float, float]] = {
    "internal": (0.873, 0.838, 0.908),
    "external1": (0.837, 0.789, 0.889),
    "external2": (0.840, 0.789, 0.898),
}
CLAHDM_TRAINING_AUC = 0.964


def paper_auc(model: str, site: str) -> tuple[float, float | None, float | None] | None:
    """(AUC, CI low, CI high) the paper reports for `model` on the cohort `site` stands for, or None.

    Args:
        model: "submodel1", "submodel2", "submodel3" or "clahdm" (micro-averaged AUC).
        site: a site name; only hospital1..3 correspond to a paper cohort.
    """
    cohort = COHORT_BY_SITE.get(site)
    if cohort is None:
        return None
    if model == "clahdm":
        return CLAHDM_MICRO_AUC[cohort.key]
    value = SUBMODEL_AUC.get(model, {}).get(cohort.key)
    return None if value is None else (value, None, None)
