"""The cohort plan: the paper's counts, date rules, the small preset's coverage, seeding."""
from __future__ import annotations

from collections import Counter

import pytest

from common.labels import CLASSES
from simulation.synth.cohort import PAPER, SMALL, cohort_plan
from simulation.synth.scanners import SITE_SCANNERS

PAPER_TABLE = {
    ("hospital1", "train"): (110, 26, 32, 227),
    ("hospital1", "internal_test"): (50, 7, 15, 99),
    ("hospital2", "external"): (12, 21, 10, 62),
    ("hospital3", "external"): (16, 21, 8, 47),
}


def test_paper_plan_reproduces_the_cohort_table():
    plan = cohort_plan("paper", seed=0)

    counts = Counter((p.site, p.cohort, p.label) for p in plan)

    assert len(plan) == 763
    for (site, cohort), row in PAPER_TABLE.items():
        assert tuple(counts[(site, cohort, label)] for label in CLASSES) == row, (site, cohort)
    assert Counter(p.site for p in plan) == {"hospital1": 566, "hospital2": 105, "hospital3": 92}


@pytest.mark.parametrize("seed", [0, 7])
def test_dates_follow_the_paper_cohorts(seed):
    plan = cohort_plan("paper", seed)

    train = [p.exam_date for p in plan if p.cohort == "train"]
    internal = [p.exam_date for p in plan if p.cohort == "internal_test"]
    external = [p for p in plan if p.cohort == "external"]

    assert max(train) < "2021-01-01"
    assert min(internal) >= "2021-01-01" and max(internal) <= "2021-12-31"
    for site in ("hospital2", "hospital3"):
        dates = [p.exam_date for p in external if p.site == site]
        assert min(dates) >= "2018-01-01" and max(dates) <= "2021-12-31"
        held = sum(d >= "2021-01-01" for d in dates)
        assert 0.1 * len(dates) < held < 0.5 * len(dates)  # a date rule holds out a part, not all


def test_case_ids_are_unique_and_in_date_order_per_site():
    plan = cohort_plan("paper", 0)

    assert len({p.case_id for p in plan}) == len(plan)
    for site in PAPER.sites:
        rows = [p for p in plan if p.site == site]
        assert [p.exam_date for p in rows] == sorted(p.exam_date for p in rows)
        assert [p.case_index for p in rows] == list(range(1, len(rows) + 1))


def test_small_preset_has_every_class_in_every_part():
    plan = cohort_plan("small", 0)

    counts = Counter((p.site, p.cohort, p.label) for p in plan)

    for spec in SMALL.cohorts:
        for label in CLASSES:
            assert counts[(spec.site, spec.cohort, label)] >= 2, (spec.site, spec.cohort, label)
    assert all(10 <= n <= 40 for n in Counter(p.site for p in plan).values())  # a few dozen per site
    assert SMALL.sites == PAPER.sites


def test_plan_is_seeded():
    assert cohort_plan("small", 3) == cohort_plan("small", 3)
    assert cohort_plan("small", 3) != cohort_plan("small", 4)


def test_each_hospital_owns_two_to_five_scanners():
    plan = cohort_plan("paper", 0)

    owners = {}
    for site, styles in SITE_SCANNERS.items():
        assert 2 <= len(styles) <= 5
        owners.update({s.name: site for s in styles})
    assert len(owners) == sum(len(s) for s in SITE_SCANNERS.values())  # no machine shared
    assert all(owners[p.scanner] == p.site for p in plan)
    assert len({p.scanner for p in plan}) == len(owners)  # the paper preset uses every machine


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        cohort_plan("huge", 0)
