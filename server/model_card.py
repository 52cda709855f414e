"""The model card written beside every run's model.pt: what the model is for and not for, how and
on whom it was trained (aggregate counts only), how it did with confidence intervals, how well
its probabilities are calibrated, and how to check that model.pt is the model described.

Two files, in the spirit of a MONAI bundle's metadata: model_card.json for programs (its
`schema` names the layout) and model_card.md for people. Both are built from the run's
records (run.json, evaluation/SITE.json, preflight.json, ledger.jsonl, model.sig) only.
"""
from __future__ import annotations

import base64
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from common.calibration import CALIBRATED_MODELS
from common.formatting import format_ci, json_number, md_table
from common.labels import CLASSES, LEVELS
from common.signing import checkpoint_digest, signature_path
from server import run_dir as rd

SCHEMA = "clafed-model-card/1"
INTENDED_USE = ("Research use only: to study the classification of enlarged cervical lymph nodes (reactive, "
                "tuberculous, lymphoma, metastatic) from a B-mode and a colour Doppler ultrasound image of the node. "
                "Not for diagnosis, triage or any decision about a patient.")
LIMITATIONS = (
    "Not a medical device: not cleared or approved by any regulator; outputs must not reach a patient's record "
    "as a finding.",
    "Validated only on the held-out cohorts listed below; other scanners, presets, populations or image exports "
    "can shift its behaviour without warning.",
    "Reads one B-mode and one colour Doppler frame of one node, cropped to its box (given or proposed by the "
    "localiser); it does not use history, laboratory results or cytology.",
    "A gated answer names one of four classes; nodes with other causes (e.g. sarcoidosis, Kikuchi disease) are "
    "outside its label set and will be called one of the four.",
    "Trained federatedly: no training image was seen by the coordinator, and cohort figures are aggregate.",
)
# The figures of each site's evaluation the card quotes, with their CIs.
HEADLINE = (("clahdm.auc_macro", "CLA-HDM macro AUC"), ("clahdm.auc_micro", "CLA-HDM micro AUC"),
            ("clahdm.accuracy", "gated accuracy"),
            *((f"{lv.key}.auc", f"sub-model {i + 1} AUC ({lv.title})") for i, lv in enumerate(LEVELS)))


def _version() -> str:
    try:
        return metadata.version("clafed")
    except metadata.PackageNotFoundError:
        return "unknown"


def _figure(metrics: dict, key: str) -> dict[str, float | None]:
    return {part: json_number(metrics.get(k)) for part, k in (("value", key), ("low", f"{key}.low"),
                                                               ("high", f"{key}.high"))}


def _file_sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def build_card(run_path: Path) -> dict[str, Any]:
    """The card of the model in `run_path` (its model.pt must exist)."""
    run_path = Path(run_path)
    info = rd.read_json(run_path / rd.RUN_FILE, {}) or {}
    model_file = run_path / rd.MODEL_FILE
    config = info.get("profile_config", {})
    evaluations = rd.read_evaluations(run_path)
    ledger = rd.read_jsonl(run_path / rd.LEDGER_FILE)
    signature = signature_path(model_file)
    preflight = (rd.read_json(run_path / rd.PREFLIGHT_FILE, {}) or {}).get("sites", {})
    evaluated = info.get("evaluated_model", "final")
    return {
        "schema": SCHEMA,
        "name": "CLA-HDM (federated)",
        "clafed_version": _version(),
        "run": run_path.name,
        "created": info.get("finished") or info.get("started"),
        "intended_use": INTENDED_USE,
        "not_for_diagnostic_use": True,
        "limitations": list(LIMITATIONS),
        "task": {"inputs": ["B-mode ultrasound image (BUS)", "colour Doppler flow image (CDFI)", "node box"],
                 "classes": list(CLASSES),
                 "hierarchy": [{"sub_model": lv.key, "task": lv.title, "positive": lv.names[1]} for lv in LEVELS]},
        "model": {
            "file": rd.MODEL_FILE, "evaluated": evaluated,
            "selection": ("each sub-model at its round of lowest temperature-scaled pooled validation NLL"
                          if evaluated == "best" else "each sub-model at its last round"),
            "profile": info.get("profile"), "backbone": config.get("model", {}).get("backbone"),
            "pretrained": config.get("model", {}).get("pretrained"),
            "input_size": config.get("data", {}).get("input_size"),
            "rounds": (info.get("models", {}).get(evaluated) or {}).get("rounds"),
            "decision_thresholds": info.get("decision_thresholds"), "thresholds_chosen_by": info.get("thresholds_chosen_by"),
            "temperatures": info.get("temperatures"),
        },
        "training": {
            "mode": info.get("mode", "federated"), "strategy": info.get("strategy"),
            "shared_rounds": info.get("shared_rounds"), "rounds_per_sub_model": info.get("rounds"),
            "local_epochs": info.get("local_epochs"), "privacy": info.get("privacy"),
            "sites": [{"name": s.get("name"), "role": s.get("role"), "held_out_cohort": s.get("cohort"),
                       "training_cases": s.get("counts", {}).get("train.total"),
                       "held_out_cases": s.get("counts", {}).get("heldout.total")} for s in info.get("sites", [])],
            "preflight": preflight,
        },
        "evaluation": {site: {"role": record.get("role"), "cohort": record.get("cohort"),
                              "n_cases": record.get("n_cases"),
                              **{key: _figure(record.get("metrics", {}), key) for key, _ in HEADLINE}}
                       for site, record in evaluations.items()},
        "calibration": {site: {model: {"ece": _figure(record.get("metrics", {}), f"calib.{model}.ece")["value"],
                                       "ece_before_temperature_scaling": _figure(
                                           record.get("metrics", {}), f"calib.{model}.ece_uncalibrated")["value"]}
                               for model in CALIBRATED_MODELS}
                        for site, record in evaluations.items()},
        "integrity": {
            "weights_digest_sha256": checkpoint_digest(model_file),
            "signed": signature.is_file(),
            "signature_ed25519_base64": base64.b64encode(signature.read_bytes()).decode() if signature.is_file() else None,
            "ledger_sha256": _file_sha256(run_path / rd.LEDGER_FILE), "ledger_rounds": len(ledger),
            "last_round_weights_sha256": ledger[-1]["sha256"] if ledger else None,
        },
    }


def _values(figures: dict | None) -> str:
    return ", ".join(f"{k} {float(v):.3f}" for k, v in figures.items()) if figures else "n/a"


def _na(value: Any) -> Any:
    return "n/a" if value is None else value


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people."""
    model, training, integrity = card["model"], card["training"], card["integrity"]
    lines = [f"# Model card: {card['name']}, run {card['run']}", "",
             "**RESEARCH USE ONLY — NOT FOR DIAGNOSTIC USE.**", "", "## Intended use", "", card["intended_use"], "",
             "## Limitations", "", *(f"- {item}" for item in card["limitations"]), "",
             "## Model", "",
             f"- file: `{model['file']}` — the **{model['evaluated']}** model ({model['selection']})",
             f"- profile `{model['profile']}`: {model['backbone']} backbone, {model['pretrained']} initialisation, "
             f"{model['input_size']} px input",
             f"- rounds per sub-model: {json.dumps(model['rounds'])}",
             f"- decision thresholds ({model['thresholds_chosen_by']}): {_values(model['decision_thresholds'])}",
             f"- temperatures: {_values(model['temperatures'])}", "",
             "## Training", "",
             f"- {training['mode']}, {_na(training['strategy'])}; {_na(training['shared_rounds'])} shared round(s), "
             f"{_na(training['rounds_per_sub_model'])} round(s) per sub-model, "
             f"{_na(training['local_epochs'])} local epoch(s)",
             f"- differential privacy: {'ε ≤ %.3g' % training['privacy']['epsilon_max'] if training['privacy'] else 'off'}",
             "", md_table(["site", "role", "training cases", "held-out cases", "held-out cohort"],
                          [[_na(s[k]) for k in ("name", "role", "training_cases", "held_out_cases", "held_out_cohort")]
                           for s in training["sites"]]), ""]
    if card["evaluation"]:
        names = [label for _, label in HEADLINE]
        rows = [[site, e["n_cases"], *(format_ci(e[key]["value"], e[key]["low"], e[key]["high"]) for key, _ in HEADLINE)]
                for site, e in card["evaluation"].items()]
        lines += ["## Performance on the held-out cohorts (95 % bootstrap CI)", "",
                  md_table(["site", "cases", *names], rows), ""]
        rows = [[site, *(f"{c[m]['ece']:.3f}" if c[m]["ece"] is not None else "n/a" for m in c)]
                for site, c in card["calibration"].items()]
        lines += ["## Calibration (expected calibration error)", "",
                  md_table(["site", "sub-model 1", "sub-model 2", "sub-model 3", "CLA-HDM"], rows), ""]
    lines += ["## Integrity", "",
              f"- weights digest (SHA-256, what the coordinator signs): `{integrity['weights_digest_sha256']}`",
              f"- signature (Ed25519, model.sig): {'present' if integrity['signed'] else 'none: the model is unsigned'}",
              f"- ledger.jsonl SHA-256: `{integrity['ledger_sha256']}` ({integrity['ledger_rounds']} rounds; last "
              f"round's weights `{integrity['last_round_weights_sha256']}`)",
              "", "Check: `clafed predict --model model.pt --public-key model_signing.pub ...` refuses a model whose "
              "signature does not match this digest.", ""]
    return "\n".join(lines)


def write_model_card(run_path: Path) -> tuple[Path, Path] | None:
    """Write model_card.json and model_card.md beside the run's model.pt (None: the run has none)."""
    run_path = Path(run_path)
    if not (run_path / rd.MODEL_FILE).is_file():
        return None
    card = build_card(run_path)
    rd.write_json(run_path / rd.MODEL_CARD_JSON, card)
    md = run_path / rd.MODEL_CARD_MD
    md.write_text(card_markdown(card), encoding="utf-8")
    return md, run_path / rd.MODEL_CARD_JSON
