"""Report sections a clinical study reads: the preflight, which model was evaluated, calibration,
and sub-model 1's decision curve. All from aggregate records: preflight.json, run.json and what
each site returned from its evaluation (reliability bins, ECE, net-benefit points).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from common import calibration as cal
from common import decision_curve as dca
from common.labels import LEVELS
from server import run_dir as rd
from server.preflight_summary import markdown_table
from server.report_format import Block, fmt, heading, plot_block, png_bytes, table_block, text_block
from server.report_sections import RunRecords, site_order

# Net benefit is tabulated at these thresholds (the plot has every point of dca.THRESHOLDS).
TABLED_THRESHOLDS = (0.1, 0.2, 0.3)


def preflight_block(run: RunRecords) -> list[Block]:
    """The sites' data-quality preflight before round 1 (aggregate, under each site's small-number rules)."""
    data = rd.read_json(run.path / rd.PREFLIGHT_FILE)
    if not data:
        return []
    note = ("Each site's preflight before round 1 (`clafed preflight` shows the same at the site, with case ids): "
            "cases per class of the training cohort (train + validation) and the held-out cohort, cases without "
            "an ROI, groups of byte-identical images (across cohorts: a leak between training and test), "
            "unreadable images and image sizes. Exam years and scanners are in preflight.json.")
    return [heading("Preflight"), text_block(markdown_table(data.get("sites", {}))), text_block(note)]


def model_choice_block(run: RunRecords) -> list[Block]:
    """Which model the sites evaluated, and both candidates' rounds, thresholds and temperatures."""
    models = run.info.get("models")
    if not models:
        return []
    evaluated = run.info.get("evaluated_model", "final")
    keys = [lv.key for lv in LEVELS]
    rows = []
    for which, entry in models.items():
        rows.append([f"**{which}**" if which == evaluated else which,
                     *(str(entry["rounds"].get(k, "n/a")) for k in keys),
                     ", ".join(fmt(entry["decision_thresholds"][k]) for k in keys),
                     ", ".join(f"{entry['temperatures'][k]:.2f}" for k in keys),
                     "yes" if which == evaluated else "no"])
    other = [w for w in models if w != evaluated]
    text = (f"The sites evaluated the **{evaluated}** model (model.pt). The best model takes each sub-model at "
            "its round of lowest pooled validation NLL at its best temperature; the final one at its last round. "
            "Neither choice sees a test cohort.")
    if other:
        text += f" The {other[0]} model is kept as {rd.ALTERNATIVE_MODEL_FILES[other[0]]}."
    elif models.get(evaluated, {}).get("best_by_validation"):
        text += " Federated validation picked every sub-model's last round: the best model is the final one."
    text += f" Its model card: {rd.MODEL_CARD_MD} (and {rd.MODEL_CARD_JSON}) beside model.pt."
    return [heading("Model evaluated"),
            table_block(["model", *(f"{k} round" for k in keys), "decision thresholds", "temperatures", "evaluated"],
                        rows), text_block(text)]


def calibration_block(run: RunRecords) -> list[Block]:
    """ECE per site and model (before and after temperature scaling), and the pooled reliability diagram."""
    sites = [s for s in site_order(run.evaluations) if "calib.clahdm.ece" in run.evaluations[s].get("metrics", {})]
    if not sites:
        return []
    temperatures = run.info.get("temperatures") or {}
    scaled = any(abs(float(t) - 1.0) > 1e-9 for t in temperatures.values())
    rows = []
    for site in sites:
        metrics = run.evaluations[site]["metrics"]
        cells = [fmt(metrics.get(f"calib.{m}.ece")) for m in cal.CALIBRATED_MODELS]
        if scaled:
            cells = [f"{cell} ({fmt(metrics.get(f'calib.{m}.ece_uncalibrated'))})"
                     for cell, m in zip(cells, cal.CALIBRATED_MODELS)]
        rows.append([site, *cells])
    figures = [run.evaluations[s]["metrics"] for s in sites]
    fig = Figure(figsize=(11, 3.2), dpi=100)
    pooled_row = ["all sites (pooled bins)"]
    for ax, model in zip(fig.subplots(1, len(cal.CALIBRATED_MODELS)), cal.CALIBRATED_MODELS):
        count, mean, observed = cal.pooled_bins(figures, f"calib.{model}")
        cal.reliability_axes(ax, count, mean, observed)
        value = cal.ece(count, mean, observed)
        pooled_row.append(fmt(value))
        ax.set_title(f"{model}: ECE {value:.3f} ({count.sum():.0f} cases)", fontsize=8)
    fig.tight_layout()
    note = ("Expected calibration error (10 equal-width bins) of each sub-model's P(positive) on the cases of its "
            "level and of the 4-class output's top-label confidence, on each held-out cohort. ")
    if scaled:
        note += ("In brackets the same before temperature scaling; temperatures fitted on the pooled validation NLL: "
                 + ", ".join(f"{k} {float(t):.2f}" for k, t in temperatures.items()) + " (the calls are unchanged). ")
    else:
        note += "No temperature scaling was applied (`temperature-scaling=true` fits it on the pooled validation NLL). "
    note += ("The pooled ECE is computed from the sites' reliability bins, without the bins a site left out under "
             "its min_cell rule.")
    return [heading("Calibration"),
            table_block(["site", *(f"ECE {m}" for m in cal.CALIBRATED_MODELS)], rows + [pooled_row]),
            plot_block("calibration_pooled", png_bytes(fig), "Reliability, all held-out cohorts pooled"),
            text_block(note)]


def decision_curve_block(run: RunRecords) -> list[Block]:
    """Sub-model 1's net benefit per site and pooled, beside biopsying every node or none."""
    curves: dict[str, tuple[np.ndarray, float, float]] = {}
    for site in site_order(run.evaluations):
        curve = dca.site_curve(run.evaluations[site].get("metrics", {}))
        if curve is not None:
            curves[site] = curve
    if not curves:
        return []
    pooled = dca.pooled_curve([run.evaluations[s]["metrics"] for s in curves])
    shown = dict(curves, **({"all sites": pooled} if pooled is not None and len(curves) > 1 else {}))
    fig = dca.plot_curves(shown)
    indices = [dca.THRESHOLDS.index(t) for t in TABLED_THRESHOLDS]
    rows = []
    for name, (nb, prevalence, n) in shown.items():
        everyone = dca.treat_all(prevalence)
        rows.append([name, fmt(n, 0), fmt(prevalence, 2),
                     *(f"{nb[i]:.3f} vs {everyone[i]:.3f}" for i in indices)])
    note = ("Net benefit of biopsying the nodes sub-model 1 scores at P(malignant) ≥ the threshold probability, "
            "against biopsying every node (after 'vs') and none (0): true malignancies found per patient, minus "
            "unneeded biopsies weighted by pt / (1 − pt). Where the model's curve lies above both, using it beats "
            "either blanket policy for a clinician with that threshold. Sites return only the curve's points.")
    return [heading("Decision curve (sub-model 1: biopsy or not)"),
            plot_block("decision_curve", png_bytes(fig), "Net benefit of sub-model 1 per site"),
            table_block(["cohort", "n", "prevalence", *(f"net benefit at {t:.0%}" for t in TABLED_THRESHOLDS)], rows),
            text_block(note)]


def clinical_blocks(run: RunRecords) -> list[Block]:
    return preflight_block(run) + model_choice_block(run) + calibration_block(run) + decision_curve_block(run)
