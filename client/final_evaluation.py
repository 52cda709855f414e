"""The site's last step: check the coordinator's model, evaluate it on the held-out cohort locally.

Predictions, plots and heatmaps stay in the site's output folder; only aggregate figures return.
"""
from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import ArrayRecord

from client.disclosure import shareable_evaluation
from common import messages as msg
from common.model import CLAHDM
from common.names import checked_name
from common.site import SiteData
from common.training import resolve_device

log = logging.getLogger("clafed.client")


def verify_model(site: SiteData, arrays: ArrayRecord, instruction: msg.EvaluationInstruction) -> None:
    """Refuse a model the coordinator did not sign, when the site has the coordinator's key."""
    from common.signing import SignatureError, verify_digest

    key = site.config.coordinator_public_key
    signature = instruction.signature
    if key is None:
        if signature is not None:
            log.warning("%s: the model is signed but no coordinator_public_key is configured: not verified",
                        site.config.name)
        return
    digest = msg.sent_model_digest(arrays, instruction.profile_json)
    try:
        verify_digest(digest, signature, Path(key))
    except SignatureError as err:
        raise SignatureError(f"site {site.config.name} refuses the model: {err}") from None


def evaluate_final_model(site: SiteData, arrays: ArrayRecord,
                         instruction: msg.EvaluationInstruction) -> dict[str, float | int]:
    """Verify, evaluate and write heatmaps for the held-out cohort; return aggregate figures."""
    from client.evaluation import cases_with_boxes, evaluate_site
    from client.heatmaps import write_heatmaps

    verify_model(site, arrays, instruction)  # before anything of the model is used
    profile = instruction.profile
    model = CLAHDM(profile.model)  # weights come from the server
    model.load_state_dict(msg.arrays_to_state(arrays, model.state_dict()))
    device = resolve_device(site.config.device)
    # The run's name comes from the server: a folder name, never a path.
    out_dir = site.config.output_dir / checked_name(instruction.run, "run name sent by the server")
    figures: dict[str, float | int] = {"n_cases": 0}
    if site.heldout_cases:
        cases = cases_with_boxes(model, site.heldout_cases, profile.data, device)
        figures = evaluate_site(model, cases, profile.data, out_dir / "evaluation",
                                n_resamples=instruction.bootstrap, seed=instruction.seed,
                                batch_size=site.config.batch_size, device=device, num_workers=site.config.num_workers)
        pictures = write_heatmaps(model, cases, profile.data, site.config.heatmaps,
                                  out_dir / "heatmaps", device, manifest_root=site.config.manifest.parent)
        figures = dict(figures, heatmaps=len(pictures))
    figures = shareable_evaluation(figures, min_cohort=site.config.min_cohort, min_cell=site.config.min_cell)
    log.info("%s: evaluated %d held-out cases; outputs in %s", site.config.name, len(site.heldout_cases), out_dir)
    return figures
