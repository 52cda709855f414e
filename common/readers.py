"""Reader-study statistics: radiologists vs CLA-HDM, without vs with AI, and between reader groups.

Inputs are two tables. Predictions: `case_id`, `label` (the truth) and the model's call as
`predicted` and/or the four probabilities `p_reactive, p_tuberculous, p_lymphoma, p_metastatic`
(argmax when `predicted` is absent). Reads: `case_id`, `reader`, `group`, `with_ai` (yes/no),
`label` (the reader's call). Row numbers in errors count data rows from 1 (header excluded).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from common.bootstrap import bootstrap_ci
from common.errors import ClafedError
from common.labels import CLASS_INDEX, CLASSES

PROBA_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
READS_COLUMNS: tuple[str, ...] = ("case_id", "reader", "group", "with_ai", "label")
WITH_AI = {"yes": True, "no": False}
MODEL = "CLA-HDM"


class ReadsError(ClafedError, ValueError):
    """A predictions or reads table cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class ReaderData:
    """Validated inputs: truth and model calls per case, and one row per read."""

    case_ids: list[str]
    truth: np.ndarray  # (n,) class index
    model_pred: np.ndarray  # (n,) class index
    reads: pd.DataFrame  # case_id, reader, group, with_ai (bool), pos (row in case_ids), pred (class index)


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two raters on the cases both read (correct / incorrect per case)."""

    a: str
    b: str
    n: int
    only_a_correct: int
    only_b_correct: int
    p_value: float


@dataclass(frozen=True)
class PermutationTest:
    """Permutation test of the difference in mean 4-class accuracy between two arms."""

    a: str
    b: str
    n_cases: int
    accuracy_a: float
    accuracy_b: float
    difference: float
    p_value: float
    n_permutations: int


@dataclass
class ReaderReport:
    """Everything `clafed readers` prints; dataclasses of floats and strings (JSON via asdict)."""

    performance: list[dict] = field(default_factory=list)  # reader, group, with_ai, n, {figure: CI}
    mcnemar: list[McNemar] = field(default_factory=list)
    permutation: list[PermutationTest] = field(default_factory=list)
    n_resamples: int = 0


def _columns(table: pd.DataFrame, required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ReadsError(f"{what}: missing column(s) {', '.join(missing)}; required: {', '.join(required)}")


def _class_of(value: str) -> int | None:
    return CLASS_INDEX.get(str(value).strip().lower())


def _model_calls(table: pd.DataFrame, problems: list[str]) -> np.ndarray:
    if "predicted" in table.columns:
        calls = [_class_of(v) for v in table["predicted"]]
        problems += [f"predictions row {i + 1} (case {cid}): unknown predicted label {v!r}"
                     for i, (cid, v, c) in enumerate(zip(table["case_id"], table["predicted"], calls)) if c is None]
        return np.array([-1 if c is None else c for c in calls])
    proba = table[list(PROBA_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = np.flatnonzero(np.isnan(proba).any(axis=1) | (proba < 0).any(axis=1))
    problems += [f"predictions row {i + 1} (case {table['case_id'].iloc[i]}): probabilities must be numbers >= 0"
                 for i in bad]
    return np.nan_to_num(proba, nan=-1.0).argmax(axis=1)


def load_predictions(table: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Validate a predictions table; returns (case ids, true class indices, model's class indices)."""
    _columns(table, ("case_id", "label"), "predictions")
    if "predicted" not in table.columns and not set(PROBA_COLUMNS) <= set(table.columns):
        raise ReadsError(f"predictions: need a 'predicted' column or all of {', '.join(PROBA_COLUMNS)}")
    table = table.reset_index(drop=True)
    ids = [str(v).strip() for v in table["case_id"]]
    truth = [_class_of(v) for v in table["label"]]
    problems = [f"predictions row {i + 1} (case {cid}): unknown label {v!r}; expected one of {', '.join(CLASSES)}"
                for i, (cid, v, t) in enumerate(zip(ids, table["label"], truth)) if t is None]
    seen: set[str] = set()
    for i, cid in enumerate(ids):
        if not cid or cid in seen:
            problems.append(f"predictions row {i + 1}: {'empty' if not cid else 'duplicate'} case_id {cid!r}")
        seen.add(cid)
    model = _model_calls(table.assign(case_id=ids), problems)
    if problems:
        raise ReadsError("predictions:\n" + "\n".join(problems))
    return ids, np.array(truth, dtype=int), model.astype(int)


def _read_problems(i: int, row: dict, index: dict[str, int]) -> list[str]:
    where = f"reads row {i + 1} (case {row['case_id']})"
    out = []
    if row["case_id"] not in index:
        out.append(f"{where}: unknown case_id {row['case_id']!r} (not in the predictions)")
    if _class_of(row["label"]) is None:
        out.append(f"{where}: unknown label {row['label']!r}; expected one of {', '.join(CLASSES)}")
    if row["with_ai"].lower() not in WITH_AI:
        out.append(f"{where}: with_ai must be yes or no, got {row['with_ai']!r}")
    if not row["reader"] or not row["group"]:
        out.append(f"{where}: empty reader or group")
    return out


def load_reads(table: pd.DataFrame, case_ids: list[str]) -> pd.DataFrame:
    """Validate a reads table against the prediction cases; every problem is named by row and case id."""
    _columns(table, READS_COLUMNS, "reads")
    rows = table[list(READS_COLUMNS)].astype(str).apply(lambda c: c.str.strip()).reset_index(drop=True)
    index = {cid: i for i, cid in enumerate(case_ids)}
    problems = [p for i, row in enumerate(rows.to_dict("records")) for p in _read_problems(i, row, index)]
    dup = rows.assign(ai=rows["with_ai"].str.lower()).duplicated(["case_id", "reader", "ai"], keep="first")
    problems += [f"reads row {i + 1} (case {rows['case_id'][i]}): reader {rows['reader'][i]!r} already read "
                 f"this case with_ai={rows['with_ai'][i]}" for i in np.flatnonzero(dup)]
    groups = rows.groupby("reader")["group"].unique()
    problems += [f"reads: reader {r!r} is in several groups: {', '.join(g)}" for r, g in groups.items() if len(g) > 1]
    if problems:
        raise ReadsError("reads:\n" + "\n".join(problems))
    return rows.assign(with_ai=rows["with_ai"].str.lower().map(WITH_AI), pos=rows["case_id"].map(index),
                       pred=rows["label"].map(_class_of)).drop(columns="label")


def load_reader_data(predictions: pd.DataFrame, reads: pd.DataFrame) -> ReaderData:
    """Validate both tables (DataFrames of strings) into a ReaderData."""
    ids, truth, model = load_predictions(predictions)
    return ReaderData(ids, truth, model, load_reads(reads, ids))


def read_reader_csvs(predictions_csv: str, reads_csv: str) -> ReaderData:
    """Read and validate the two CSV files."""
    tables = []
    for path in (predictions_csv, reads_csv):
        try:
            tables.append(pd.read_csv(path, dtype=str, keep_default_na=False))  # empty cells stay ''
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ReadsError(f"{path}: not a readable CSV ({err})") from None
    return load_reader_data(*tables)


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray, a: str = "a", b: str = "b") -> McNemar:
    """Exact McNemar test: two-sided binomial test (p = 1/2) on the discordant pairs."""
    ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    only_a, only_b = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    # No discordant pair: no evidence of any difference.
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return McNemar(a, b, int(ca.size), only_a, only_b, float(p))


def permutation_test(correct_a: np.ndarray, correct_b: np.ndarray, n_permutations: int,
                     rng: np.random.Generator, a: str = "a", b: str = "b", chunk: int = 2000) -> PermutationTest:
    """Two-sided permutation test of mean accuracy between two arms read on the same cases.

    Args:
        correct_a, correct_b: (n_cases, readers in arm) 0/1 correctness; rows are the same cases.
        n_permutations: random relabellings; within each case the reads of both arms are reshuffled
            between the arms (arm sizes kept), which keeps each case's difficulty out of the test.
        rng: seeded generator.

    Returns:
        PermutationTest with p = (1 + #{|permuted diff| >= |observed diff|}) / (1 + n_permutations).
    """
    ca, cb = np.atleast_2d(np.asarray(correct_a, float)), np.atleast_2d(np.asarray(correct_b, float))
    ka, n = ca.shape[1], ca.shape[0]
    pooled = np.concatenate([ca, cb], axis=1)
    acc_a, acc_b = (float(c.mean()) if n else np.nan for c in (ca, cb))
    observed, hits = acc_a - acc_b, 0
    for start in range(0, n_permutations if n else 0, chunk):
        size = min(chunk, n_permutations - start)
        shuffled = rng.permuted(np.broadcast_to(pooled, (size,) + pooled.shape), axis=2)
        diff = shuffled[:, :, :ka].mean(axis=(1, 2)) - shuffled[:, :, ka:].mean(axis=(1, 2))
        hits += int(np.sum(np.abs(diff) >= abs(observed) - 1e-12))  # tolerance: float sums of equal sets
    p = (1 + hits) / (1 + n_permutations) if n else np.nan
    return PermutationTest(a, b, n, acc_a, acc_b, observed, float(p), n_permutations)


def _arm_label(reader: str, with_ai: bool) -> str:
    return f"{reader} ({'with' if with_ai else 'without'} AI)"


def reader_performance(data: ReaderData, n_resamples: int, rng: np.random.Generator) -> list[dict]:
    """Model row, then one row per reader and condition, with bootstrap CIs of accuracy, sens, spec."""
    rows = [{"reader": MODEL, "group": "", "with_ai": None, "n": len(data.case_ids),
             "figures": bootstrap_ci("labels", data.truth, data.model_pred, n_resamples=n_resamples, rng=rng)}]
    for (group, reader, with_ai), reads in data.reads.groupby(["group", "reader", "with_ai"], sort=True):
        pos = reads["pos"].to_numpy()
        figures = bootstrap_ci("labels", data.truth[pos], reads["pred"].to_numpy(), n_resamples=n_resamples, rng=rng)
        rows.append({"reader": reader, "group": group, "with_ai": bool(with_ai), "n": len(pos), "figures": figures})
    return rows


def mcnemar_tests(data: ReaderData) -> list[McNemar]:
    """Model vs each reader in each condition, then each reader without vs with AI."""
    model_ok = data.model_pred == data.truth
    ok = data.reads.assign(ok=(data.reads["pred"].to_numpy() == data.truth[data.reads["pos"].to_numpy()]))
    out = [mcnemar_exact(model_ok[r["pos"].to_numpy()], r["ok"].to_numpy(), MODEL, _arm_label(reader, ai))
           for (reader, ai), r in ok.groupby(["reader", "with_ai"], sort=True)]
    for reader, r in ok.groupby("reader", sort=True):
        paired = r.pivot(index="pos", columns="with_ai", values="ok").dropna()
        if {False, True} <= set(paired.columns):
            out.append(mcnemar_exact(paired[False].to_numpy(bool), paired[True].to_numpy(bool),
                                     _arm_label(reader, False), _arm_label(reader, True)))
    return out


def _arms(data: ReaderData) -> dict[str, pd.DataFrame]:
    """(case x reader) correctness of the model and of each group in each condition; NaN = not read."""
    reads = data.reads.assign(ok=(data.reads["pred"].to_numpy() == data.truth[data.reads["pos"].to_numpy()]))
    arms = {MODEL: pd.DataFrame({MODEL: (data.model_pred == data.truth).astype(float)})}
    for (group, ai), r in reads.groupby(["group", "with_ai"], sort=True):
        arms[_arm_label(group, ai)] = r.pivot(index="pos", columns="reader", values="ok").astype(float)
    return arms


def group_tests(data: ReaderData, n_permutations: int, rng: np.random.Generator) -> list[PermutationTest]:
    """Permutation test for every pair of arms (the model; each group without / with AI), on the
    cases every reader of both arms read."""
    out = []
    for (name_a, a), (name_b, b) in combinations(_arms(data).items(), 2):
        # Keys keep the arms apart even when one reader sits in both (without / with AI).
        both = pd.concat([a, b], axis=1, join="inner", keys=["a", "b"]).dropna()
        out.append(permutation_test(both["a"].to_numpy(), both["b"].to_numpy(), n_permutations, rng, name_a, name_b))
    return out


def analyse_readers(data: ReaderData, n_resamples: int = 1000, n_permutations: int = 10000,
                    seed: int = 0) -> ReaderReport:
    """The whole reader study: performance with CIs, McNemar tests and group permutation tests.

    Args:
        data: validated inputs (see `load_reader_data`).
        n_resamples: bootstrap resamples per CI.
        n_permutations: relabellings per permutation test.
        seed: one seed for everything; the same seed and inputs give the same report.

    Returns:
        ReaderReport.
    """
    rng = np.random.default_rng(seed)
    return ReaderReport(reader_performance(data, n_resamples, rng), mcnemar_tests(data),
                        group_tests(data, n_permutations, rng), n_resamples)
