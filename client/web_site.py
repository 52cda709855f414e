"""`clafed serve --site sites/X.yaml`: the Site results page. A hospital's research lead browses
the site's evaluations (each run's folder under the site's output_dir): ROC and confusion matrix,
the per-case table (sorted and filtered in the page), and a case's picture on click.

Only this site's files are read: a run is one of the folders found under output_dir, a figure
one of a fixed list of names, a case one of the ids in that run's predictions.csv.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from client.evaluation import CONFUSION_FILE, LEVEL_COLUMNS, METRICS_FILE, PREDICTIONS_FILE, ROC_FILE, SOFT_COLUMNS
from client.heatmaps import case_picture, picture_name
from common.config import SiteConfig
from common.formatting import format_ci
from common.imaging import ImageError, read_image
from common.labels import CLASSES, LEVELS
from common.manifest import Case
from common.web.app import Page, bad_request, page_data, png_bytes, render

FIGURES = (ROC_FILE, CONFUSION_FILE, "calibration.png", "decision_curve.png")
# The headline of each evaluation: (where in its metrics.json, label).
HEADLINE = ((("clahdm", "auc_macro"), "macro AUC"), (("clahdm", "auc_micro"), "micro AUC"),
            (("clahdm", "accuracy_gated"), "accuracy (gated)"),
            *(((lv.key, "figures", "auc"), f"{lv.title} AUC") for lv in LEVELS))


@dataclass(frozen=True)
class Evaluation:
    """One evaluation folder of the site: where its predictions, figures and pictures are."""

    name: str  # the run's folder name under output_dir
    folder: Path  # holds predictions.csv, metrics.json and the figures
    heatmaps: Path

    def cases(self) -> list[dict]:
        with open(self.folder / PREDICTIONS_FILE, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        out = []
        for row in rows:
            if not row.get("case_id"):
                continue  # a row a hand edit broke: nothing to show or open
            probabilities = {c: _number(row.get(col)) for c, col in zip(CLASSES, SOFT_COLUMNS)}
            label = row.get("label") or ""
            out.append({"case_id": row["case_id"], "label": label, "predicted": row.get("predicted", ""),
                        "correct": (row.get("predicted") == label) if label else None,
                        "probabilities": probabilities,
                        "levels": {col: _number(row.get(col)) for col in LEVEL_COLUMNS},
                        "heatmap": (self.heatmaps / picture_name(row["case_id"])).is_file()})
        return out

    def headline(self) -> list[dict]:
        path = self.folder / METRICS_FILE
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        out = []
        for keys, label in HEADLINE:
            entry = metrics
            for key in keys:
                entry = entry.get(key, {}) if isinstance(entry, dict) else {}
            if isinstance(entry, dict) and entry.get("value") is not None:
                out.append({"label": label, "text": format_ci(entry["value"], entry.get("low"), entry.get("high"))})
        return [{"label": "cases", "text": str(metrics.get("n_cases", "?"))}] + out if metrics else out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def find_evaluations(output_dir: Path) -> dict[str, Evaluation]:
    """{run: its evaluation} for every folder of output_dir holding predictions (newest first)."""
    found = {}
    folders = sorted((p for p in Path(output_dir).iterdir() if p.is_dir()), key=lambda p: -p.stat().st_mtime) \
        if Path(output_dir).is_dir() else []
    for run in folders:
        for folder in (run / "evaluation", run):  # a federated run's evaluation/, or `clafed evaluate --out`
            if (folder / PREDICTIONS_FILE).is_file():
                found[run.name] = Evaluation(run.name, folder, run / "heatmaps")
                break
    return found


class SiteResults:
    """The site's evaluations and its cases, looked up by name only."""

    def __init__(self, config: SiteConfig, cases: list[Case]):
        self.config = config
        self.cases = {c.case_id: c for c in cases}

    def evaluation(self, run: str) -> Evaluation:
        found = find_evaluations(self.config.output_dir).get(run)
        if found is None:
            raise bad_request(f"no evaluation named {run!r} at site {self.config.name}", 404)
        return found

    def picture(self, run: str, case_id: str) -> Response:
        """The case's heatmap picture from the evaluation, else its two images with the node's box."""
        evaluation = self.evaluation(run)
        rows = {r["case_id"]: r for r in evaluation.cases()}
        if case_id not in rows:
            raise bad_request(f"case {case_id!r} is not in evaluation {run}", 404)
        heatmap = evaluation.heatmaps / picture_name(case_id)
        if heatmap.is_file():
            return FileResponse(heatmap, media_type="image/png")
        case = self.cases.get(case_id)
        if case is None:
            raise bad_request(f"case {case_id!r} is no longer in the site's manifest", 404)
        try:
            bus, cdfi = read_image(case.bus_path, self.config.max_image_pixels), read_image(case.cdfi_path,
                                                                                          self.config.max_image_pixels)
        except ImageError as err:
            raise bad_request(str(err), 404) from None
        row = rows[case_id]
        lines = [f"{case_id}: predicted {row['predicted']}" + (f"   (recorded: {row['label']})" if row["label"] else ""),
                 "   ".join(f"{c} {p:.2f}" for c, p in row["probabilities"].items() if p is not None),
                 "no heatmap was drawn for this case at evaluation (heatmaps in the site YAML)"]
        return Response(png_bytes(case_picture(bus, cdfi, case.roi, lines)), media_type="image/png")


def site_page(results: SiteResults) -> Page:
    router = APIRouter()
    name = results.config.name

    @router.get("/site", response_class=HTMLResponse)
    def evaluations(request: Request) -> HTMLResponse:
        found = find_evaluations(results.config.output_dir)
        return render(request, "site.html", site=name, output_dir=str(results.config.output_dir),
                      evaluations=[{"name": e.name, "headline": e.headline()} for e in found.values()])

    @router.get("/site/{run}", response_class=HTMLResponse)
    def evaluation(request: Request, run: str) -> HTMLResponse:
        found = results.evaluation(run)
        figures = [f for f in FIGURES if (found.folder / f).is_file()]
        return render(request, "site_run.html", site=name, run=run, figures=figures, headline=found.headline(),
                      classes=CLASSES, data=page_data({"run": run, "classes": list(CLASSES)}))

    @router.get("/api/site/{run}/cases")
    def cases(run: str) -> dict:
        return {"site": name, "run": run, "cases": results.evaluation(run).cases()}

    @router.get("/site/{run}/figure/{figure}")
    def figure(run: str, figure: str) -> FileResponse:
        found = results.evaluation(run)
        if figure not in FIGURES or not (found.folder / figure).is_file():
            raise bad_request(f"no figure {figure!r} in evaluation {run}", 404)
        return FileResponse(found.folder / figure, media_type="image/png")

    @router.get("/site/{run}/case/{case_id}/picture")
    def picture(run: str, case_id: str) -> Response:
        return results.picture(run, case_id)

    return Page(router, "/site", f"Site results ({name})", "this site's evaluations: ROC, confusion matrix, every case")
