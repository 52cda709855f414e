"""The Site results page (client/web_site.py): a site's evaluations, its per-case table, a case's
picture, and nothing of any other folder or site."""
from __future__ import annotations

import csv

from common.labels import CLASSES
from common.validation import load_cases
from tests.sitegen import write_site
from tests.web.harness import client


def test_the_sites_evaluations_are_listed_with_their_headline(evaluated_site):
    yaml, _, _ = evaluated_site
    page = client("--site", yaml).get("/site")
    assert page.status_code == 200 and "run1" in page.text and "not-an-evaluation" not in page.text
    assert "macro AUC" in page.text and "benign vs malignant AUC" in page.text
    detail = client("--site", yaml).get("/site/run1")
    assert detail.status_code == 200 and "/site/run1/figure/roc.png" in detail.text and "confusion.png" in detail.text


def test_the_case_table_is_the_evaluations_predictions(evaluated_site):
    yaml, out, cases = evaluated_site
    answer = client("--site", yaml).get("/api/site/run1/cases").json()
    with open(out / "run1" / "evaluation" / "predictions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [c["case_id"] for c in answer["cases"]] == [r["case_id"] for r in rows]
    for case, row in zip(answer["cases"], rows):
        assert case["correct"] == (row["predicted"] == row["label"])
        assert case["probabilities"] == {c: float(row[f"p_{c}"]) for c in CLASSES}
    assert sum(c["heatmap"] for c in answer["cases"]) == len(CLASSES)  # one picture per class was drawn


def test_a_case_picture_is_its_heatmap_or_its_two_images(evaluated_site):
    yaml, out, _ = evaluated_site
    web = client("--site", yaml)
    cases = web.get("/api/site/run1/cases").json()["cases"]
    drawn = next(c for c in cases if c["heatmap"])
    picture = web.get(f"/site/run1/case/{drawn['case_id']}/picture")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content == (out / "run1" / "heatmaps" / f"{drawn['case_id']}_heatmap.png").read_bytes()
    plain = web.get(f"/site/run1/case/{next(c for c in cases if not c['heatmap'])['case_id']}/picture")
    assert plain.status_code == 200 and plain.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_outside_the_sites_evaluations_can_be_reached(evaluated_site, tmp_path):
    yaml, out, _ = evaluated_site
    web = client("--site", yaml)
    (out / "run1" / "evaluation" / "secret.png").write_bytes(b"\x89PNG")
    for url in ("/site/run1/figure/secret.png", "/site/run1/figure/metrics.json", "/site/run1/figure/..%2F..%2Fh1.yaml",
                "/site/..%2Foutputs/figure/roc.png", "/site/not-an-evaluation", "/api/site/missing/cases",
                "/site/run1/case/unknown-case/picture", "/site/run1/case/..%2F..%2Fdata%2Fmanifest.csv/picture"):
        assert web.get(url).status_code == 404, url
    # Another site's evaluation of its own cases: this site's server does not know them.
    other_yaml = tmp_path / "h2.yaml"
    other_manifest = write_site(tmp_path / "other", {"reactive": 1})
    other_manifest.write_text(other_manifest.read_text().replace("rea-000,", "h2-case-7,"))
    other_yaml.write_text(f"name: h2\nmanifest: {other_manifest}\noutput_dir: {tmp_path / 'other-out'}\n")
    other_id = load_cases(other_manifest)[0].case_id
    assert other_id == "h2-case-7"
    assert web.get(f"/site/run1/case/{other_id}/picture").status_code == 404
    assert client("--site", other_yaml).get("/site").text.count("/site/run1") == 0
