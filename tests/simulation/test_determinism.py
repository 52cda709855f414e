"""Same seed, same bytes (whatever the number of workers); another seed, other images."""
from __future__ import annotations

import hashlib

import numpy as np

from simulation.synth import CohortSpec, Preset, generate
from simulation.synth.cohort import CasePlan
from simulation.synth.render import render_case

TINY = Preset("tiny", (
    CohortSpec("hospital1", "train", (1, 1, 0, 1), "2019-01-01", "2020-12-31"),
    CohortSpec("hospital3", "external", (0, 1, 1, 0), "2018-01-01", "2021-12-31"),
))


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_the_same_bytes_with_any_worker_count(tmp_path):
    generate(TINY, 5, tmp_path / "a", workers=1)
    generate(TINY, 5, tmp_path / "b", workers=2)

    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")

    assert len(a) == 1 + (1 + 4 * 3) + (1 + 4 * 2)  # synth.json; per site a manifest, 4 files a case
    assert a == b


def test_another_seed_draws_other_images(tmp_path):
    generate(TINY, 5, tmp_path / "a", workers=1)
    generate(TINY, 6, tmp_path / "b", workers=1)

    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")

    images = [k for k in a if k.endswith(("_bus.png", "_cdfi.png"))]
    assert images and all(a[k] != b.get(k) for k in images)


def test_case_depends_only_on_seed_site_and_number():
    plan = CasePlan("h1-0003", "hospital1", 1, 3, "lymphoma", "train", "2020-05-05", "aurex-x7")
    moved = CasePlan("h1-0003", "hospital1", 1, 3, "lymphoma", "train", "2020-05-05", "aurex-x7")

    first, again = render_case(plan, 11), render_case(moved, 11)
    other = render_case(CasePlan("h1-0004", "hospital1", 1, 4, "lymphoma", "train", "2020-05-05",
                                 "aurex-x7"), 11)

    assert np.array_equal(first.bus, again.bus) and np.array_equal(first.cdfi, again.cdfi)
    assert first.bus.shape != other.bus.shape or not np.array_equal(first.bus, other.bus)
