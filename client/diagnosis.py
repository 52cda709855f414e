"""One case's diagnosis from a loaded checkpoint, the same for `clafed predict` and `clafed serve`:
the node's box (given, proposed by the model's localiser, or the whole image), the hierarchy's
probabilities and path, and the Layer-CAM maps of each level used."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from client.heatmaps import CaseExplanation, explain_images
from common.checkpoint import LoadedModel
from common.localiser import propose_box

Box = tuple[int, int, int, int]
GIVEN, PROPOSED, WHOLE_IMAGE = "given", "proposed by the localiser", "none (whole image: the model has no localiser)"


@dataclass(frozen=True)
class Diagnosis:
    explanation: CaseExplanation
    roi: Box | None  # the box the model's input was cut from (None: the whole image)
    roi_source: str  # GIVEN | PROPOSED | WHOLE_IMAGE
    proposed: Box | None  # the localiser's box, drawn differently in pictures

    def to_dict(self) -> dict:
        """JSON-ready: the explanation's figures and the box (no heatmaps)."""
        return dict(self.explanation.to_dict(), roi=list(self.roi) if self.roi else None, roi_source=self.roi_source)


def diagnose(loaded: LoadedModel, bus: np.ndarray, cdfi: np.ndarray, roi: Box | None, case_id: str,
             device: torch.device) -> Diagnosis:
    """Diagnose a case whose two images are already checked (common.validation.image_problems)."""
    source, proposed = GIVEN, None
    if roi is None and loaded.model.has_localiser:
        roi = proposed = propose_box(loaded.model.localiser, bus, loaded.data_config.localiser_size, device)
        source = PROPOSED
    elif roi is None:
        source = WHOLE_IMAGE
    explanation = explain_images(loaded.model, bus, cdfi, roi, loaded.data_config, device, case_id)
    return Diagnosis(explanation, roi, source, proposed)
