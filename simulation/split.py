"""Split a researcher's pooled manifest into virtual hospitals, without copying any image.

Three ways: by a column (a natural split such as the acquiring hospital or scanner), like the
paper (its three hospitals' sizes and class mixes), or by Dirichlet label skew (the usual
non-IID benchmark). Each site's manifest keeps every column; relative paths are rewritten so
they still point at the original files from the new manifest's folder.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import ClafedError
from common.labels import CLASSES
from common.manifest import ManifestError, read_table


class SplitError(ClafedError, ValueError):
    """The pooled manifest or the split request cannot be used; the message names file and column."""


def read_pooled(path: str | Path, need_labels: bool = True) -> pd.DataFrame:
    """Read a pooled manifest as strings, checking columns, case ids and labels (lower-cased)."""
    path = Path(path)
    try:
        table = read_table(path)
    except ManifestError as err:
        raise SplitError(str(err)) from None
    duplicated = table.loc[table["case_id"].duplicated(), "case_id"].tolist()
    if duplicated:
        raise SplitError(f"{path}: column case_id: duplicate id(s) {', '.join(duplicated[:5])}")
    _check_labels(table, path, need_labels)
    table["label"] = table["label"].str.lower()
    return table


def _check_labels(table: pd.DataFrame, path: Path, need_labels: bool) -> None:
    """Every label is a known class (or empty where labels are not needed)."""
    allowed = set(CLASSES) | (set() if need_labels else {""})
    bad = table.index[~table["label"].str.lower().isin(allowed)]
    if len(bad):
        row = table.loc[bad[0]]
        what = "empty label (this split mode needs every case labelled)" if row["label"] == "" \
            else f"unknown label {row['label']!r}"
        raise SplitError(f"{path}: column label, line {bad[0] + 2} (case {row['case_id']}): {what}; "
                         f"expected one of {', '.join(CLASSES)} ({len(bad)} bad row(s))")


def _site_name(value: str) -> str:
    """A folder-safe site name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._") or "site"


def split_by_column(table: pd.DataFrame, column: str, source: str = "manifest") -> dict[str, pd.DataFrame]:
    """One site per distinct value of `column` (a natural split)."""
    if column not in table.columns:
        raise SplitError(f"{source}: no column {column!r} to split by; columns: {', '.join(table.columns)}")
    empty = table.index[table[column] == ""]
    if len(empty):
        raise SplitError(f"{source}: column {column}: empty value on line(s) "
                         f"{', '.join(str(i + 2) for i in empty[:5])}")
    parts: dict[str, pd.DataFrame] = {}
    for value in sorted(table[column].unique()):
        name = _site_name(value)
        if name in parts:
            raise SplitError(f"{source}: column {column}: values collide as folder name {name!r}")
        parts[name] = table[table[column] == value]
    return parts


def largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `shares` (Hamilton's method)."""
    shares = np.asarray(shares, dtype=np.float64)
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _assign(table: pd.DataFrame, counts: dict[str, np.ndarray], names: list[str],
            rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Deal each class's cases (in seeded random order) to sites by the given per-class counts."""
    site_of = pd.Series("", index=table.index)
    for label, per_site in counts.items():
        ids = table.index[table["label"] == label].to_numpy()
        ids = ids[np.argsort(table.loc[ids, "case_id"].to_numpy(), kind="stable")]  # row order must not matter
        shuffled = rng.permutation(ids)
        bounds = np.concatenate([[0], np.cumsum(per_site)])
        for k, name in enumerate(names):
            site_of[shuffled[bounds[k]:bounds[k + 1]]] = name
    return {name: table[site_of == name] for name in names}


def paper_counts() -> tuple[list[str], np.ndarray]:
    """The paper's sites and their class counts (sites x CLASSES), from the cohort table."""
    from simulation.synth.cohort import PAPER

    names = list(PAPER.sites)
    counts = np.zeros((len(names), len(CLASSES)), int)
    for spec in PAPER.cohorts:
        counts[names.index(spec.site)] += spec.counts
    return names, counts


def split_like_paper(table: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Three sites with the paper's sizes and class mixes: each class is dealt in the paper's ratios."""
    names, paper = paper_counts()
    counts = {label: largest_remainder(int((table["label"] == label).sum()), paper[:, k])
              for k, label in enumerate(CLASSES)}
    return _assign(table, counts, names, np.random.default_rng([seed, 0x5041]))


def split_dirichlet(table: pd.DataFrame, alpha: float, sites: int, seed: int,
                    min_cases: int = 1, tries: int = 1000) -> dict[str, pd.DataFrame]:
    """Label skew: each class's cases are shared among sites by proportions drawn from Dir(alpha)."""
    if alpha <= 0 or sites < 2:
        raise SplitError(f"Dirichlet split needs alpha > 0 and at least 2 sites (got alpha={alpha}, sites={sites})")
    if len(table) < sites * min_cases:
        raise SplitError(f"{len(table)} cases cannot give {sites} sites {min_cases} case(s) each")
    rng = np.random.default_rng([seed, 0x4449])
    names = [f"site{k + 1}" for k in range(sites)]
    sizes = {label: int((table["label"] == label).sum()) for label in CLASSES}
    for _ in range(tries):  # small alpha can leave a site empty: redraw, as FL benchmarks do
        counts = {label: largest_remainder(n, rng.dirichlet(np.full(sites, alpha))) for label, n in sizes.items()}
        if (sum(counts.values()) >= min_cases).all():
            return _assign(table, counts, names, rng)
    raise SplitError(f"no Dirichlet draw in {tries} tries gave every site {min_cases} case(s); raise alpha")


def split_pooled(path: str | Path, *, by: str | None = None, like: str | None = None,
                 dirichlet: float | None = None, sites: int | None = None,
                 seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict]:
    """Split a pooled manifest one way (`by` a column, `like` the paper, or `dirichlet` label skew);
    returns the parts and how they were made (recorded next to the written manifests)."""
    if sum(x is not None for x in (by, like, dirichlet)) != 1:
        raise SplitError("choose exactly one split: --by COLUMN, --like paper or --dirichlet ALPHA")
    table = read_pooled(path, need_labels=by is None)
    if by is not None:
        if sites is not None:
            raise SplitError("--sites does not apply to --by (the column's values are the sites)")
        return split_by_column(table, by, str(path)), {"mode": "by", "column": by}
    if like is not None:
        if like != "paper":
            raise SplitError(f"unknown split --like {like!r}: only 'paper'")
        if sites not in (None, 3):
            raise SplitError("--like paper always makes the paper's 3 sites; drop --sites")
        return split_like_paper(table, seed), {"mode": "like", "like": like, "seed": seed}
    assert dirichlet is not None
    n_sites = 3 if sites is None else sites
    return (split_dirichlet(table, dirichlet, n_sites, seed),
            {"mode": "dirichlet", "alpha": dirichlet, "sites": n_sites, "seed": seed})


def _rewrite_paths(part: pd.DataFrame, source_dir: Path, site_dir: Path) -> pd.DataFrame:
    """Relative `*_path` values re-expressed from the site's folder; absolute ones kept."""
    part = part.copy()
    for column in [c for c in part.columns if c.endswith("_path")]:
        part[column] = [v if not v or os.path.isabs(v) else
                        Path(os.path.relpath(os.path.abspath(source_dir / v), os.path.abspath(site_dir))).as_posix()
                        for v in part[column]]
    return part


def write_split(parts: dict[str, pd.DataFrame], manifest: str | Path, out_dir: str | Path,
                settings: dict | None = None) -> dict[str, Path]:
    """Write `out_dir/<site>/manifest.csv` per site (and split.json); returns the manifest paths."""
    manifest, out_dir = Path(manifest), Path(out_dir)
    written = {}
    for name, part in parts.items():
        site_dir = out_dir / name
        site_dir.mkdir(parents=True, exist_ok=True)
        written[name] = site_dir / "manifest.csv"
        _rewrite_paths(part, manifest.parent, site_dir).to_csv(written[name], index=False, lineterminator="\n")
    summary = {"source": str(manifest), **(settings or {}),
               "counts": {n: {c: int((p["label"] == c).sum()) for c in CLASSES} | {"total": len(p)}
                          for n, p in parts.items()}}
    (out_dir / "split.json").write_text(json.dumps(summary, indent=2) + "\n")
    return written
