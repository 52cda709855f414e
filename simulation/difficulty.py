"""How hard is a dataset? Baselines that should NOT solve it, and (later) ones that should.

`python -m simulation.difficulty --data DIR` trains each baseline on hospital 1's training cohort
and prints its macro one-vs-rest AUC on hospital 1's internal test (and on the external sites).
The histogram baseline sees only global statistics (B-mode grey histogram, CDFI colour amount
and hue histogram); on the synthetic data it must stay at or below 0.80, so that a model has to
use spatial patterns. Add a model by writing `f(train_cases, test_cases) -> float` and listing it
in BASELINES.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from common.imaging import CHROMA_THRESHOLD, crop, read_image
from common.labels import CLASS_INDEX, CLASSES
from common.manifest import Case, read_table, row_to_case

GREY_BINS = 32
HUE_BINS = 18
HISTOGRAM_AUC_CEILING = 0.80  # what the issue allows a global-statistics model to reach

Cases = Sequence[Case] | str | Path


def load_cases(manifest: Cases, cohort: str | None = None) -> list[Case]:
    """Cases of a manifest path (optionally one cohort), or a case list passed through."""
    if not isinstance(manifest, (str, Path)):
        return list(manifest)
    path = Path(manifest)
    cases = [row_to_case(row, path.parent) for row in read_table(path).to_dict("records")]
    return [c for c in cases if cohort is None or c.extras.get("cohort") == cohort]


def histogram_features(case: Case, crop_roi: bool = False) -> np.ndarray:
    """Global statistics of one case: BUS grey histogram, CDFI colour fraction and hue histogram."""
    return _cached_features(case)[1 if crop_roi else 0]


@functools.lru_cache(maxsize=None)
def _cached_features(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """Whole-image and ROI features from one read of the images (shared by every baseline)."""
    bus, cdfi = read_image(case.bus_path)[:, :, 0], read_image(case.cdfi_path)
    return _statistics(bus, cdfi), _statistics(crop(bus, case.roi), crop(cdfi, case.roi))


def _statistics(grey: np.ndarray, cdfi: np.ndarray) -> np.ndarray:
    """32-bin grey histogram, coloured-pixel fraction and 18-bin hue histogram of coloured pixels."""
    grey_hist = np.bincount(grey.ravel() // (256 // GREY_BINS), minlength=GREY_BINS) / grey.size
    r, g, b = cdfi[:, :, 0], cdfi[:, :, 1], cdfi[:, :, 2]  # element-wise: axis-2 reductions are slow
    spread = np.maximum(np.maximum(r, g), b).astype(np.int16) - np.minimum(np.minimum(r, g), b)
    coloured = spread > CHROMA_THRESHOLD
    hue = cv2.cvtColor(cdfi, cv2.COLOR_RGB2HSV)[:, :, 0][coloured]  # OpenCV hue: 0..179
    hue_hist = np.bincount(hue // (180 // HUE_BINS), minlength=HUE_BINS) / max(1, hue.size)
    return np.concatenate([grey_hist, [coloured.mean()], hue_hist]).astype(np.float64)


def macro_ovr_auc(labels: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes that have both positives and negatives."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(labels == k, proba[:, k]) for k in range(proba.shape[1])
            if 0 < (labels == k).sum() < len(labels)]
    if not aucs:
        raise ValueError("the test cases hold a single class: AUC is undefined")
    return float(np.mean(aucs))


def _design(cases: list[Case], crop_roi: bool) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix and class indices of the labelled cases."""
    labelled = [c for c in cases if c.label is not None]
    features = np.stack([histogram_features(c, crop_roi) for c in labelled])
    return features, np.array([CLASS_INDEX[c.label] for c in labelled])


def histogram_baseline_auc(train_manifest: Cases, test_manifest: Cases, crop_roi: bool = False) -> float:
    """Macro OvR AUC of a logistic regression on global histogram features (train -> test).

    Args:
        train_manifest, test_manifest: a manifest path or a list of `common.manifest.Case`.
        crop_roi: compute the features inside each case's ROI instead of on the whole image.
    """
    x_train, y_train = _design(load_cases(train_manifest), crop_roi)
    x_test, y_test = _design(load_cases(test_manifest), crop_roi)
    return macro_ovr_auc(y_test, fit_predict(x_train, y_train, x_test))


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """4-class probabilities of a standardised logistic regression (every reference model's fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(x_train, y_train)
    proba = np.zeros((len(x_test), len(CLASSES)))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


# name -> f(train cases, test cases) -> macro OvR AUC. Add learned models here.
BASELINES: dict[str, Callable[[Cases, Cases], float]] = {
    "histogram-LR (whole image)": histogram_baseline_auc,
    "histogram-LR (ROI crop)": lambda train, test: histogram_baseline_auc(train, test, crop_roi=True),
}


def drawn_plans(data: Path) -> list[tuple[object, np.ndarray]] | None:
    """Every planned case of a `clafed synth` folder with the feature vector the generator drew
    for it (what a perfect reader records), re-drawn from `synth.json` without reading an image;
    None for folders not written by `clafed synth`."""
    from simulation.synth.cohort import CohortSpec, Preset, cohort_plan
    from simulation.synth.features import feature_vector, sample_features
    from simulation.synth.render import case_streams

    settings = Path(data) / "synth.json"
    if not settings.is_file():
        return None
    saved = json.loads(settings.read_text())
    preset = Preset(saved["preset"]["name"], tuple(CohortSpec(**dict(c, counts=tuple(c["counts"])))
                                                   for c in saved["preset"]["cohorts"]))
    return [(plan, feature_vector(sample_features(
                plan.label, case_streams(saved["seed"], plan.site_index, plan.case_index)["features"])))
            for plan in cohort_plan(preset, saved["seed"])]


def drawn_feature_auc(data: Path) -> float | None:
    """Reference ceiling: LR on the drawn features, hospital 1's training cohort -> internal test.

    None for folders not written by `clafed synth`.
    """
    plans = drawn_plans(data)
    if plans is None:
        return None
    parts: dict[str, tuple[list, list]] = {"train": ([], []), "internal_test": ([], [])}
    for plan, features in plans:
        if plan.cohort in parts:
            parts[plan.cohort][0].append(features)
            parts[plan.cohort][1].append(CLASS_INDEX[plan.label])
    (x_train, y_train), (x_test, y_test) = ((np.array(x), np.array(y)) for x, y in parts.values())
    return macro_ovr_auc(y_test, fit_predict(x_train, y_train, x_test))


def evaluation_sets(data: Path) -> tuple[list[Case], dict[str, list[Case]]]:
    """Hospital 1's training cohort and the test sets: internal test, then each external site."""
    h1 = data / "hospital1" / "manifest.csv"
    if not h1.is_file():
        raise FileNotFoundError(f"{h1} not found: --data must be a folder written by `clafed synth`")
    tests = {"internal": load_cases(h1, "internal_test")}
    for site in sorted(p.parent.name for p in data.glob("*/manifest.csv")):
        if site != "hospital1":
            tests[site] = load_cases(data / site / "manifest.csv")
    return load_cases(h1, "train"), tests


def main(argv: list[str] | None = None) -> int:
    """Print each baseline's macro OvR AUC on every test set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder written by `clafed synth`")
    args = parser.parse_args(argv)
    train, tests = evaluation_sets(args.data)
    print(f"train: hospital1 training cohort, {len(train)} cases")
    print(f"{'baseline':<30}" + "".join(f"{name:>12}" for name in tests))
    for name, baseline in BASELINES.items():
        print(f"{name:<30}" + "".join(f"{baseline(train, cases):12.3f}" for cases in tests.values()), flush=True)
    print(f"(the histogram baselines should stay <= {HISTOGRAM_AUC_CEILING:.2f} on the internal test)")
    reference = drawn_feature_auc(args.data)
    if reference is not None:
        print(f"{'drawn-feature LR (reference)':<30}{reference:12.3f}  (ceiling from the generator's own features)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
