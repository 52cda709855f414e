"""Splitting a pooled manifest into virtual hospitals: partitions, proportions, paths, errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.cli import main
from common.labels import CLASSES
from simulation.split import (
    SplitError,
    largest_remainder,
    paper_counts,
    read_pooled,
    split_by_column,
    split_dirichlet,
    split_like_paper,
    write_split,
)


def _pooled(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """A pooled table (no images needed) with the given class counts and a `hospital` column."""
    rng = np.random.default_rng(seed)
    labels = [label for label, n in counts.items() for _ in range(n)]
    return pd.DataFrame({
        "case_id": [f"c{i:04d}" for i in range(len(labels))],
        "bus_path": [f"img/c{i:04d}_bus.png" for i in range(len(labels))],
        "cdfi_path": [f"img/c{i:04d}_cdfi.png" for i in range(len(labels))],
        "label": labels,
        "exam_date": "2020-01-01",
        "hospital": rng.choice(["north", "south east", "west"], len(labels)),
    })


def _assert_partition(parts: dict[str, pd.DataFrame], table: pd.DataFrame) -> None:
    ids = [i for part in parts.values() for i in part["case_id"]]
    assert len(ids) == len(set(ids)) == len(table)
    assert set(ids) == set(table["case_id"])


def test_split_by_column_gives_one_site_per_value():
    table = _pooled({"reactive": 20, "metastatic": 30})

    parts = split_by_column(table, "hospital")

    _assert_partition(parts, table)
    assert sorted(parts) == ["north", "south_east", "west"]
    assert all(part["hospital"].nunique() == 1 for part in parts.values())


def test_like_paper_reproduces_the_paper_sites_from_the_paper_totals():
    names, paper = paper_counts()
    table = _pooled(dict(zip(CLASSES, paper.sum(axis=0).tolist())))

    parts = split_like_paper(table, seed=0)

    _assert_partition(parts, table)
    assert list(parts) == names
    for k, name in enumerate(names):
        assert [int((parts[name]["label"] == c).sum()) for c in CLASSES] == paper[k].tolist()


def test_like_paper_keeps_proportions_on_other_sizes():
    table = _pooled({"reactive": 100, "tuberculous": 40, "lymphoma": 30, "metastatic": 200})

    sizes = {name: len(part) for name, part in split_like_paper(table, seed=1).items()}

    assert sizes["hospital1"] / len(table) == pytest.approx(566 / 763, abs=0.03)
    assert sizes["hospital2"] > 0 and sizes["hospital3"] > 0


def test_dirichlet_is_a_seeded_partition_with_label_skew():
    table = _pooled({c: 60 for c in CLASSES})

    skewed = split_dirichlet(table, alpha=0.1, sites=4, seed=3)
    again = split_dirichlet(table, alpha=0.1, sites=4, seed=3)
    mild = split_dirichlet(table, alpha=100.0, sites=4, seed=3)

    _assert_partition(skewed, table)
    _assert_partition(mild, table)
    assert {k: list(v["case_id"]) for k, v in skewed.items()} == {k: list(v["case_id"]) for k, v in again.items()}
    assert all(len(part) > 0 for part in skewed.values())

    def spread(parts):  # how far each site's class mix is from uniform
        mixes = [part["label"].value_counts(normalize=True).reindex(CLASSES, fill_value=0) for part in parts.values()]
        return float(np.mean([np.abs(m - 0.25).sum() for m in mixes]))

    assert spread(skewed) > spread(mild) + 0.5


def test_dirichlet_does_not_depend_on_row_order():
    table = _pooled({c: 15 for c in CLASSES})
    shuffled = table.sample(frac=1.0, random_state=0)

    a = split_dirichlet(table, 0.5, 3, seed=9)
    b = split_dirichlet(shuffled, 0.5, 3, seed=9)

    assert {k: sorted(v["case_id"]) for k, v in a.items()} == {k: sorted(v["case_id"]) for k, v in b.items()}


def test_largest_remainder_sums_to_total():
    counts = largest_remainder(10, np.array([1.0, 1.0, 1.0]))
    assert counts.sum() == 10 and sorted(counts.tolist()) == [3, 3, 4]


def test_bad_input_names_the_file_and_column(tmp_path):
    path = tmp_path / "pooled.csv"
    _pooled({"reactive": 3}).drop(columns=["label"]).to_csv(path, index=False)
    with pytest.raises(SplitError, match=r"pooled\.csv: missing column\(s\) label"):
        read_pooled(path)

    bad = _pooled({"reactive": 3})
    bad.loc[1, "label"] = "sarcoid"
    bad.to_csv(path, index=False)
    with pytest.raises(SplitError, match=r"pooled\.csv: column label, line 3 .*'sarcoid'"):
        read_pooled(path)

    with pytest.raises(SplitError, match="no column 'scanner'"):
        split_by_column(_pooled({"reactive": 3}), "scanner", str(path))


def _pool_small_dataset(dataset: Path, pooled_dir: Path) -> Path:
    """One pooled manifest over the three small sites, paths relative to `pooled_dir`."""
    frames = []
    for site in ("hospital1", "hospital2", "hospital3"):
        table = pd.read_csv(dataset / site / "manifest.csv", dtype=str, keep_default_na=False)
        for column in [c for c in table.columns if c.endswith("_path")]:
            table[column] = [os.path.relpath(dataset / site / v, pooled_dir) for v in table[column]]
        frames.append(table.assign(site=site))
    pooled_dir.mkdir(parents=True)
    pd.concat(frames).to_csv(pooled_dir / "manifest.csv", index=False)
    return pooled_dir / "manifest.csv"


@pytest.mark.parametrize("mode", [["--by", "scanner"], ["--like", "paper"], ["--dirichlet", "0.5", "--sites", "2"]])
def test_cli_writes_manifests_that_still_find_the_images(small_dataset, tmp_path, mode):
    pooled = _pool_small_dataset(small_dataset, tmp_path / "pool")
    out = tmp_path / "split"

    assert main(["split", "--manifest", str(pooled), "--out", str(out), "--seed", "2", *mode]) == 0

    manifests = sorted(out.glob("*/manifest.csv"))
    tables = [pd.read_csv(m, dtype=str) for m in manifests]
    assert sum(len(t) for t in tables) == len(pd.read_csv(pooled))
    for manifest, table in zip(manifests, tables):
        for column in ("bus_path", "cdfi_path", "node_mask_path", "vessel_mask_path"):
            assert all((manifest.parent / p).is_file() for p in table[column])
    assert not list(out.rglob("*.png"))  # nothing copied


def test_cli_reports_bad_input(tmp_path, capsys):
    path = tmp_path / "pooled.csv"
    _pooled({"reactive": 3}).to_csv(path, index=False)

    assert main(["split", "--manifest", str(path), "--out", str(tmp_path / "o"), "--by", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


def test_write_split_keeps_absolute_paths(tmp_path):
    table = _pooled({"reactive": 2})
    table.loc[0, "bus_path"] = "/data/abs.png"

    written = write_split({"a": table}, tmp_path / "src" / "manifest.csv", tmp_path / "out")

    rows = pd.read_csv(written["a"], dtype=str)
    assert rows.loc[0, "bus_path"] == "/data/abs.png"
    assert rows.loc[1, "bus_path"] == "../../src/img/c0001_bus.png"
