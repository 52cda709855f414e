"""The data-quality preflight: counts per cohort, identical and unreadable images, what leaves the site."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import pandas as pd
import pytest
import yaml

from client import preflight as pf
from common.cli import main
from common.config import load_site_config
from common.labels import CLASSES
from server.preflight_summary import SUPPRESSED_CELL, WITHHELD_CELL, markdown_table, missing_classes, summary_table
from tests.sitegen import write_site

SCANNERS = ("", "Zeta 9 (room 4)", "Alpha")  # free text, as sites type it; '' is "unknown"


def make_site(tmp_path, counts: dict[str, int], name: str = "hospital7", edit=None, **extra):
    """A site whose case i was examined in 2019, 2020 or 2021 (i % 3, from 2021 on held out) on
    scanner SCANNERS[i % 4 % 3]; `edit(table, folder)` may damage it. Returns (YAML, manifest)."""
    manifest = write_site(tmp_path / name, counts, roi=True)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["exam_date"] = [f"{2019 + i % 3}-0{1 + i % 9}-15" for i in range(len(table))]
    table["scanner"] = [SCANNERS[i % 4 % 3] for i in range(len(table))]
    if edit is not None:
        edit(table, manifest.parent)
    table.to_csv(manifest, index=False)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "manifest": str(manifest), "device": "cpu",
                                    "holdout": {"kind": "date", "date": "2021-01-01"},
                                    "output_dir": str(tmp_path / f"{name}-out"), **extra}))
    return path, manifest


def preflight_of(path) -> pf.Preflight:
    return pf.site_preflight(pf.load_site_unchecked(load_site_config(path)))


EVEN = {c: 6 for c in CLASSES}


def test_counts_per_cohort_class_year_and_scanner(tmp_path):
    path, manifest = make_site(tmp_path, {"reactive": 7, "tuberculous": 5, "lymphoma": 6, "metastatic": 4},
                               validation_fraction=0.2)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    table["year"] = table["exam_date"].str[:4].astype(int)
    result = preflight_of(path)
    for cohort, rows in (("train", table[table.year < 2021]), ("heldout", table[table.year >= 2021])):
        counts = result.cohort(cohort)
        assert counts.n == len(rows)  # the training cohort includes the validation cases
        assert counts.classes == {c: int((rows.label == c).sum()) for c in CLASSES}
        assert counts.years == dict(Counter(rows.year.tolist()))
        assert counts.scanners == dict(Counter(s or "unknown" for s in rows.scanner))
    assert result.train.n + result.heldout.n == len(table) and result.heldout.n > 0
    assert set(result.train.years) == {2019, 2020} and set(result.heldout.years) == {2021}
    assert result.sizes["bus"]["width"].median == 96 and result.sizes["cdfi"]["height"].max == 96
    assert result.no_roi == [] and result.duplicates == [] and result.unreadable == [] and result.problems() == []

    shared = pf.shareable_preflight(result, min_cohort=1, min_cell=1)
    train = table[table.year < 2021]
    # Scanners by index in the site's sorted names: 0 = "Alpha", 1 = "Zeta 9 (room 4)"; then unknown.
    assert shared["pre.train.scanner.0"] == (train.scanner == "Alpha").sum()
    assert shared["pre.train.scanner.1"] == (train.scanner == "Zeta 9 (room 4)").sum()
    assert shared["pre.train.scanner.unknown"] == (train.scanner == "").sum()
    assert shared["pre.train.scanner_count"] == 2
    assert shared["pre.train.year.2021"] == 0 and shared["pre.heldout.year.2021"] == result.heldout.n
    assert shared["pre.train.class.lymphoma"] == result.train.classes["lymphoma"]
    assert pf.preflight_keys_problem(shared) is None


def duplicate_edit(table: pd.DataFrame, root) -> None:
    """Row 0's BUS copied over row 2's (held out), row 4's BUS file used by row 7, row 5's BUS as its CDFI."""
    shutil.copy(root / table.loc[0, "bus_path"], root / table.loc[2, "bus_path"])
    table.loc[7, "bus_path"] = table.loc[4, "bus_path"]
    table.loc[5, "cdfi_path"] = table.loc[5, "bus_path"]


def test_identical_images_are_grouped_across_cases_modalities_and_cohorts(tmp_path):
    path, manifest = make_site(tmp_path, EVEN, edit=duplicate_edit)
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    result = preflight_of(path)
    groups = {frozenset((m.case_id, m.modality) for m in g.members): g for g in result.duplicates}
    ids = table["case_id"]
    assert set(groups) == {frozenset({(ids[0], "bus"), (ids[2], "bus")}),
                           frozenset({(ids[4], "bus"), (ids[7], "bus")}),
                           frozenset({(ids[5], "bus"), (ids[5], "cdfi")})}
    # Row 0 is from 2019 (training), row 2 from 2021 (held out): a leak between the cohorts.
    assert groups[frozenset({(ids[0], "bus"), (ids[2], "bus")})].cohorts == ["train", "heldout"]
    shared = pf.shareable_preflight(result, min_cohort=5, min_cell=3)
    assert shared[pf.DUPLICATES] == 3 and shared[pf.CROSS_COHORT_DUPLICATES] == 1
    assert "identical images" in " ".join(result.problems())


def unreadable_edit(table: pd.DataFrame, root) -> None:
    (root / table.loc[9, "cdfi_path"]).unlink()
    (root / table.loc[1, "cdfi_path"]).write_bytes(b"not a png")
    data = (root / table.loc[3, "bus_path"]).read_bytes()
    (root / table.loc[3, "bus_path"]).write_bytes(data[: len(data) // 2])  # an interrupted copy


def test_unreadable_images_are_counted_not_raised(tmp_path):
    path, manifest = make_site(tmp_path, EVEN, edit=unreadable_edit)
    ids = pd.read_csv(manifest, dtype=str)["case_id"]
    result = preflight_of(path)
    assert {(i.case_id, i.modality) for i in result.unreadable} == {(ids[9], "cdfi"), (ids[1], "cdfi"), (ids[3], "bus")}
    assert "missing" in next(i.reason for i in result.unreadable if i.case_id == ids[9])
    assert result.sizes["bus"]["width"].n == len(ids) - 1 and result.sizes["cdfi"]["width"].n == len(ids) - 2
    assert pf.shareable_preflight(result, min_cohort=5, min_cell=3)[pf.UNREADABLE] == 3


def test_pixel_spacing_ranges_come_from_the_ingest_columns(tmp_path):
    def spacing(table, root):
        table["mm_per_px_x"] = [f"{0.05 + 0.01 * (i % 3):.2f}" for i in range(len(table))]
        table["mm_per_px_y"] = ""  # a column without values gives no range
    result = preflight_of(make_site(tmp_path, EVEN, edit=spacing)[0])
    assert set(result.spacing) == {"x"}
    assert (result.spacing["x"].min, result.spacing["x"].max) == pytest.approx((0.05, 0.07))
    shared = pf.shareable_preflight(result, min_cohort=5, min_cell=3)
    assert shared["pre.bus.spacing_x.max"] == pytest.approx(0.07) and "pre.bus.spacing_y.min" not in shared


def test_small_number_rules_and_nothing_per_patient(tmp_path):
    def no_roi(table, root):
        table.loc[[0, 1], ["roi_x", "roi_y", "roi_w", "roi_h"]] = ""
    # 16 training cases (tuberculous: 2, lymphoma: 0), 7 held out.
    path, manifest = make_site(tmp_path, {"reactive": 9, "tuberculous": 3, "metastatic": 11}, edit=no_roi)
    result = preflight_of(path)
    assert (result.train.n, result.heldout.n) == (16, 7)
    assert result.train.classes["tuberculous"] == 2 and len(result.no_roi) == 2
    shared = pf.shareable_preflight(result, min_cohort=10, min_cell=3)
    # The held-out cohort is below min_cohort: its total only.
    assert [k for k in shared if k.startswith("pre.heldout.")] == ["pre.heldout.n"] and shared["pre.heldout.n"] == 7
    assert "pre.train.year.2021" not in shared  # not even a zero tells of the withheld cohort's years
    # Two tuberculous cases are left out and counted; the absent lymphoma class is a kept zero.
    assert "pre.train.class.tuberculous" not in shared and shared["pre.train.class.lymphoma"] == 0
    assert shared["pre.train.class.reactive"] == result.train.classes["reactive"]
    assert shared["pre.train.suppressed"] == 1 + sum(0 < n < 3 for n in [*result.train.years.values(),
                                                                         *result.train.scanners.values()])
    assert pf.NO_ROI not in shared and shared[pf.SITE_SUPPRESSED] == 1
    assert shared["pre.bus.width.max"] == 96
    assert pf.shareable_preflight(result, min_cohort=10, min_cell=2)[pf.NO_ROI] == 2
    # A whole site below min_cohort: totals and the counts of files to fix only.
    tiny = pf.shareable_preflight(result, min_cohort=100, min_cell=3)
    assert set(tiny) == {"pre.train.n", "pre.heldout.n", pf.DUPLICATES, pf.CROSS_COHORT_DUPLICATES, pf.UNREADABLE}

    ids = pd.read_csv(manifest, dtype=str)["case_id"]
    for figures in (shared, tiny, pf.shareable_preflight(result, min_cohort=1, min_cell=1)):
        assert pf.preflight_keys_problem(figures) is None
        for key, value in figures.items():
            assert not any(case in key for case in ids) and "/" not in key
            assert not any(word in key.lower() for word in ("alpha", "zeta", "room"))
            assert type(value) in (int, float) and math.isfinite(value)


@pytest.mark.parametrize("tamper, expected", [
    (lambda f: f.update({"pre.train.scanner.Logiq E9": 3}), "outside the preflight's scheme"),
    (lambda f: f.update({"pre.train.case.rea-000": 1}), "outside the preflight's scheme"),
    (lambda f: f.update({"pre.no_roi": -1}), "not finite non-negative"),
    (lambda f: f.update({"pre.duplicates": math.nan}), "not finite non-negative"),
    (lambda f: f.update({"pre.unreadable": True}), "not finite non-negative"),
    (lambda f: f.update({"pre.train.class.reactive": 2.5}), "not whole numbers"),
    (lambda f: f.update({"pre.train.class.reactive": 400}), "more than the cohort's"),
    (lambda f: f.update({"pre.train.class.reactive": f["pre.train.class.reactive"] - 1}), "not the cohort's"),
    (lambda f: f.pop("pre.train.class.lymphoma"), "left out without being counted"),
    (lambda f: f.pop("pre.heldout.n"), "pre.heldout.n is missing"),
    (lambda f: f.update({"pre.bus.width.median": 10_000}), "not between min"),
    (lambda f: f.pop("pre.cdfi.height.max"), "lacks one of min, median, max"),
])
def test_a_tampered_reply_is_refused(tmp_path, tamper, expected):
    figures = pf.shareable_preflight(preflight_of(make_site(tmp_path, EVEN)[0]), min_cohort=5, min_cell=1)
    assert pf.preflight_keys_problem(figures) is None
    tamper(figures)
    problem = pf.preflight_keys_problem(figures)
    assert problem is not None and expected in problem, problem


def test_summary_table_and_missing_classes(tmp_path):
    no_lymphoma = pf.shareable_preflight(
        preflight_of(make_site(tmp_path, {"reactive": 9, "tuberculous": 3, "metastatic": 11})[0]),
        min_cohort=10, min_cell=3)
    replies = {
        "hospitalA": no_lymphoma,  # lymphoma 0, tuberculous suppressed, held-out cohort withheld
        "hospitalB": {"pre.train.n": 4, "pre.heldout.n": 0, pf.DUPLICATES: 0, pf.UNREADABLE: 0},  # withheld
        "hospitalC": {"pre.train.n": 0, "pre.heldout.n": 30, pf.DUPLICATES: 0, pf.UNREADABLE: 0},  # evaluates only
    }
    required = {"hospitalA": list(CLASSES), "hospitalB": list(CLASSES), "hospitalC": ["Reactive"],
                "hospitalD": list(CLASSES)}  # D sent no reply
    assert missing_classes(replies, required) == {"hospitalA": ["lymphoma"], "hospitalC": ["reactive"]}
    assert missing_classes(replies, {"hospitalA": ["reactive", "tuberculous"]}) == {}  # suppressed is not zero
    with pytest.raises(ValueError, match="sarcoidosis"):
        missing_classes(replies, {"hospitalA": ["sarcoidosis"]})

    rows = {row["site"]: row for row in summary_table(replies)}
    a = rows["hospitalA"]
    assert (a["train n"], a["held-out n"], a["train lymphoma"]) == (16, 7, 0)
    assert a["train tuberculous"] == SUPPRESSED_CELL and a["held-out reactive"] == WITHHELD_CELL
    assert a["train reactive"] == no_lymphoma["pre.train.class.reactive"] and a["BUS size"] == "96-96 x 96-96"
    assert rows["hospitalB"]["train metastatic"] == WITHHELD_CELL and rows["hospitalC"]["train reactive"] == 0
    text = markdown_table(replies)
    assert text.count("\n| hospital") == 3 and SUPPRESSED_CELL in text and "min_cohort" in text


def test_cli_on_a_clean_and_a_dirty_site(tmp_path, capsys):
    clean, _ = make_site(tmp_path, EVEN, name="clean")
    assert main(["preflight", "--site", str(clean)]) == 0
    out = capsys.readouterr().out
    assert "problems: none" in out and "training cohort (train + validation): 16 case(s)" in out
    report = json.loads((tmp_path / "clean-out" / "preflight.json").read_text())
    assert report["problems"] == [] and report["shareable"]["pre.heldout.n"] == 8
    assert (tmp_path / "clean-out" / "preflight.md").is_file()

    dirty, manifest = make_site(tmp_path, {"reactive": 6, "tuberculous": 6, "metastatic": 6}, name="dirty",
                                edit=lambda table, root: (duplicate_edit(table, root), unreadable_edit(table, root)))
    assert main(["preflight", "--site", str(dirty), "--out", str(tmp_path / "elsewhere"), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["missing_classes"] == ["lymphoma"] and len(printed["duplicates"]) == 3
    assert len(printed["unreadable"]) == 3 and len(printed["problems"]) == 3
    assert json.loads((tmp_path / "elsewhere" / "preflight.json").read_text()) == printed
    assert main(["preflight", "--site", str(dirty)]) == 1
    out = capsys.readouterr().out
    ids = pd.read_csv(manifest, dtype=str)["case_id"]
    assert "no training case of lymphoma" in out and f"case {ids[1]} cdfi" in out  # local: it names the cases

    # An evaluate-only site trains no class: none is missing.
    evaluator, _ = make_site(tmp_path, {"reactive": 6}, name="evaluator", role="evaluate")
    assert main(["preflight", "--site", str(evaluator)]) == 0
    capsys.readouterr()


def test_cli_refuses_input_it_cannot_use(tmp_path, capsys):
    def bad_label(table, root):
        table.loc[0, "label"] = "sarcoidosis"
    path, _ = make_site(tmp_path, EVEN, edit=bad_label)
    assert main(["preflight", "--site", str(path)]) == 2
    assert "sarcoidosis" in capsys.readouterr().err
    assert main(["preflight", "--site", str(tmp_path / "nowhere.yaml")]) == 2
