"""Per-case explanations of CLA-HDM: Layer-CAM heatmaps for each level used, and their pictures.

Everything here runs at the site; heatmaps and pictures are written to the site's own folder
and never leave it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from client.cam import DEFAULT_FUSION, DEFAULT_STAGES, layer_cam, to_image
from common.config import DataConfig, HeatmapSelection
from common.dataset import input_box, prepare
from common.imaging import crop, read_image, to_tensor
from common.labels import CLASSES, LEVEL_BY_KEY, Level
from common.manifest import Case
from common.model import CLAHDM
from common.training import evaluating

ARROW = "\u2192"
# Names of CaseExplanation.level_probabilities, in the order of common.model.HierarchicalOutput.levels.
LEVEL_PROBABILITY_NAMES = ("p_malignant", "p_tuberculous_given_benign", "p_metastatic_given_malignant")


@dataclass(frozen=True)
class LevelExplanation:
    """One level of the path a case took: the class it chose there and the evidence for it."""

    level: Level
    target: int  # 0/1 index into level.names
    probability: float  # the level's probability of that class
    bus: np.ndarray  # (H, W) float32 in [0, 1], the BUS image's size
    cdfi: np.ndarray  # (H, W) float32 in [0, 1], the CDFI image's size

    @property
    def name(self) -> str:
        return self.level.names[self.target]


@dataclass(frozen=True)
class CaseExplanation:
    """A case's diagnosis, probabilities and heatmaps (one LevelExplanation per level used)."""

    case_id: str
    probabilities: np.ndarray  # (4,) soft probabilities in CLASSES order
    gated: np.ndarray  # (4,) hard-gated probabilities (zeros on the branch not taken)
    level_probabilities: np.ndarray  # (3,) P(malignant), P(tuberculous | benign), P(metastatic | malignant)
    threshold: float
    steps: tuple[LevelExplanation, ...]
    bus_box: tuple[int, int, int, int]  # the square of the BUS image the model saw
    cdfi_box: tuple[int, int, int, int]

    @property
    def diagnosis(self) -> str:
        """The hard-gated class: the subtype the second level chose."""
        return CLASSES[int(np.argmax(self.gated))]

    @property
    def path_text(self) -> str:
        """E.g. 'malignant 0.91 → metastatic 0.84'."""
        return f" {ARROW} ".join(f"{s.name} {s.probability:.2f}" for s in self.steps)

    def to_dict(self) -> dict:
        """JSON-ready summary (no heatmaps)."""
        return {
            "case_id": self.case_id,
            "diagnosis": self.diagnosis,
            "path": self.path_text,
            "probabilities": {c: float(p) for c, p in zip(CLASSES, self.probabilities)},
            "gated_probabilities": {c: float(p) for c, p in zip(CLASSES, self.gated)},
            "levels": [{"level": s.level.key, "task": s.level.title, "class": s.name,
                        "probability": s.probability} for s in self.steps],
            "level_probabilities": dict(zip(LEVEL_PROBABILITY_NAMES, map(float, self.level_probabilities))),
            "threshold": self.threshold,
        }


def model_input(image: np.ndarray, roi: tuple[int, int, int, int] | None, cfg: DataConfig) -> torch.Tensor:
    """The un-augmented (3, S, S) tensor the model sees, exactly as CaseDataset builds it for evaluation."""
    prepared = prepare(image, roi, cfg)
    return to_tensor(crop(prepared.image, prepared.box), cfg.input_size)


def explain_images(model: CLAHDM, bus: np.ndarray, cdfi: np.ndarray, roi: tuple[int, int, int, int] | None,
                   data_cfg: DataConfig, device: torch.device, case_id: str = "",
                   stages: Sequence[str] = DEFAULT_STAGES, fusion: str = DEFAULT_FUSION) -> CaseExplanation:
    """Diagnose one case from its RGB images and explain each level of the hierarchy it used.

    Sub-model 1 is explained for the class the gate chose (P(malignant) > threshold), then
    sub-model 3 or 2, whichever the gate chose, for the subtype its decision threshold names. The
    probabilities are CLAHDM.forward's own (mirror averaging included); the maps are Layer-CAM's
    of the images as given.
    """
    model.to(device)
    bus_t = model_input(bus, roi, data_cfg)[None].to(device)
    cdfi_t = model_input(cdfi, roi, data_cfg)[None].to(device)
    with evaluating(model):
        out = model(bus_t, cdfi_t)
    malignant = bool(out.malignant[0])
    second_key = "submodel3" if malignant else "submodel2"
    p_second = float(out.levels[0, 2 if malignant else 1])
    second_threshold = model.subtype_thresholds[1 if malignant else 0]
    boxes = input_box(roi, data_cfg.roi_margin, bus.shape), input_box(roi, data_cfg.roi_margin, cdfi.shape)
    steps = []
    for key, p_positive, target in (("submodel1", float(out.levels[0, 0]), int(malignant)),
                                    (second_key, p_second, int(p_second > second_threshold))):
        cams = layer_cam(model.submodel(key), bus_t, cdfi_t, stages, fusion)
        steps.append(LevelExplanation(
            LEVEL_BY_KEY[key], target, p_positive if target else 1.0 - p_positive,
            to_image(cams.bus[0, target].cpu().numpy(), boxes[0], bus.shape),
            to_image(cams.cdfi[0, target].cpu().numpy(), boxes[1], cdfi.shape)))
    return CaseExplanation(case_id, out.soft[0].cpu().numpy(), out.hard[0].cpu().numpy(),
                           out.levels[0].cpu().numpy(), float(model.threshold), tuple(steps), *boxes)


def explain_case(model: CLAHDM, case: Case, data_cfg: DataConfig, device: torch.device,
                 stages: Sequence[str] = DEFAULT_STAGES) -> CaseExplanation:
    """`explain_images` on a manifest case (ImageError naming the file if an image cannot be read)."""
    return explain_images(model, read_image(case.bus_path, None), read_image(case.cdfi_path, None), case.roi,
                          data_cfg, device, case.case_id, stages)


# ---- pictures -------------------------------------------------------------------------------

PANEL_HEIGHT = 300
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (24, 24, 24)
_TEXT = (235, 235, 235)
_ACCENT = (255, 210, 90)
NODE_OUTLINE = (80, 230, 80)
PROPOSED_BOX = (240, 220, 40)  # yellow: apart from the grey input box, green outline and Doppler colours


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as RGB uint8 in the JET colormap the pictures and the web page share."""
    level = np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def _line_width(image: np.ndarray) -> int:
    return max(1, round(max(image.shape[:2]) / 400))


def overlay(image: np.ndarray, heat: np.ndarray, box: tuple[int, int, int, int] | None = None,
            outline: np.ndarray | None = None, proposed: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """RGB image with the heatmap blended in (JET colormap), opaque only where the heat is.

    Low heat leaves the ultrasound visible; a white line marks half the maximum so the hot
    region stays distinct from red/blue Doppler colour. `box` (the model's view) is outlined in
    grey, `outline` (a bool mask of the node, when the site has one) in green, and `proposed` (the
    localiser's box, when it chose the ROI) in yellow.
    """
    colour = heat_colours(heat)
    alpha = (0.6 * heat)[..., None]
    out = np.uint8(np.round(image * (1 - alpha) + colour * alpha))
    contours, _ = cv2.findContours(np.uint8(heat >= 0.5), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = _line_width(image)
    cv2.drawContours(out, contours, -1, (255, 255, 255), thickness, cv2.LINE_AA)
    if box is not None:
        x, y, w, h = box
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (150, 150, 150), thickness)
    if outline is not None and outline.shape == heat.shape:
        edges, _ = cv2.findContours(np.uint8(outline), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, edges, -1, NODE_OUTLINE, thickness, cv2.LINE_8)
    if proposed is not None:
        x, y, w, h = proposed
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), PROPOSED_BOX, thickness)
    return out


def node_outline(case: Case, shape: tuple[int, ...], root: Path | None) -> np.ndarray | None:
    """The node's mask when the manifest (in folder `root`) has one (`node_mask_path`, as `clafed
    synth` writes), else None; a mask that is missing or of another size is not drawn."""
    relative = case.extras.get("node_mask_path")
    if not relative or root is None:
        return None
    mask = cv2.imread(str(Path(root) / relative), cv2.IMREAD_GRAYSCALE)
    return mask > 0 if mask is not None and mask.shape == shape[:2] else None


def _panel(image: np.ndarray, label: str) -> np.ndarray:
    scale = PANEL_HEIGHT / image.shape[0]
    width = max(1, round(image.shape[1] * scale))
    panel = cv2.resize(image, (width, PANEL_HEIGHT), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cv2.rectangle(panel, (0, 0), (12 * len(label) + 12, 26), _BACKGROUND, -1)
    cv2.putText(panel, label, (6, 19), _FONT, 0.6, _TEXT, 1, cv2.LINE_AA)
    return panel


def _text_block(lines: list[tuple[str, tuple[int, int, int], float]], width: int) -> np.ndarray:
    height = 12 + sum(round(34 * size) for _, _, size in lines)
    block = np.full((height, width, 3), _BACKGROUND, np.uint8)
    y = 6
    for text, colour, size in lines:
        y += round(34 * size)
        cv2.putText(block, text, (10, y - 8), _FONT, size, colour, 1 if size < 0.7 else 2, cv2.LINE_AA)
    return block


def _colour_scale(width: int = 160, height: int = 14) -> np.ndarray:
    ramp = np.uint8(np.tile(np.linspace(0, 255, width), (height, 1)))
    return cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def render_picture(explanation: CaseExplanation, bus: np.ndarray, cdfi: np.ndarray,
                   truth: str | None = None, outline: np.ndarray | None = None,
                   proposed: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """One RGB picture of a case: a header with the diagnosis, path and four probabilities, then one
    row per level used (BUS with its heatmap | CDFI with its heatmap), the node outlined when known
    and the localiser's box when it proposed the ROI."""
    rows = []
    for number, step in enumerate(explanation.steps, start=1):
        pair = np.hstack([_panel(overlay(bus, step.bus, explanation.bus_box, outline, proposed), "BUS"),
                          np.full((PANEL_HEIGHT, 6, 3), _BACKGROUND, np.uint8),
                          _panel(overlay(cdfi, step.cdfi, explanation.cdfi_box, outline, proposed), "CDFI")])
        title = (f"level {number} ({step.level.title}): evidence for {step.name} "
                 f"(p = {step.probability:.2f})")
        rows.append(np.vstack([_text_block([(title, _TEXT, 0.6)], pair.shape[1]), pair]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    probabilities = "   ".join(f"{c} {p:.2f}" for c, p in zip(CLASSES, explanation.probabilities))
    heading = f"{explanation.case_id}: {explanation.diagnosis}" if explanation.case_id else explanation.diagnosis
    if truth:
        heading += f"   (recorded: {truth})"
    header = _text_block([(heading, _ACCENT, 0.85),
                          (explanation.path_text.replace(ARROW, "->"), _TEXT, 0.7),
                          (probabilities, _TEXT, 0.55)], width)
    footer = _text_block([("heat:  low", _TEXT, 0.5)], width)
    ramp = _colour_scale()[:, :max(0, min(160, width - 100))]
    footer[12:12 + ramp.shape[0], 100:100 + ramp.shape[1]] = ramp
    legend = ("high   white line: 50% of max, grey box: model input" + (", green: node" if outline is not None else "")
              + (", yellow: proposed node box" if proposed is not None else ""))
    cv2.putText(footer, legend,
                (110 + ramp.shape[1], 24), _FONT, 0.45, _TEXT, 1, cv2.LINE_AA)
    gap = np.full((6, width, 3), _BACKGROUND, np.uint8)
    return np.vstack([header] + [part for row in rows for part in (gap, row)] + [gap, footer])


def case_picture(bus: np.ndarray, cdfi: np.ndarray, roi: tuple[int, int, int, int] | None,
                 lines: list[str]) -> np.ndarray:
    """A case's two images side by side, the node's box in grey, under a few lines of text: what
    a site's results page shows for a case the evaluation drew no heatmap for."""
    panels = []
    for image, label in ((bus, "BUS"), (cdfi, "CDFI")):
        image = image.copy()
        if roi is not None:
            x, y, w, h = map(int, roi)
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (150, 150, 150), _line_width(image))
        panels.append(_panel(image, label))
    pair = np.hstack([panels[0], np.full((PANEL_HEIGHT, 6, 3), _BACKGROUND, np.uint8), panels[1]])
    header = _text_block([(text, _ACCENT if i == 0 else _TEXT, 0.7 if i == 0 else 0.5) for i, text in enumerate(lines)],
                         pair.shape[1])
    return np.vstack([header, pair])


def write_picture(path: str | Path, picture: np.ndarray) -> Path:
    """Write an RGB picture as PNG (folders created); raises OSError if it cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write picture {path}")
    return path


def picture_name(case_id: str) -> str:
    """A file name for a case's picture; characters a file system may reject become '_'.

    An id that had to be changed gets a short hash of the original, so `pat 7` and `pat/7`
    never share a file.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id or "case")[:100].lstrip(".") or "case"
    if safe != case_id:
        safe += "-" + hashlib.sha256((case_id or "").encode()).hexdigest()[:8]
    return safe + "_heatmap.png"


# ---- site evaluation --------------------------------------------------------------------------

def select_cases(cases: list[Case], selection: HeatmapSelection, seed: int = 0) -> list[Case]:
    """The cases that get a picture: none, all, or the first N of each true class in a seeded order."""
    if selection.mode == "none":
        return []
    if selection.mode == "all":
        return list(cases)
    order = [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    return [c for label in CLASSES for c in [c for c in order if c.label == label][:selection.per_class]]


def write_heatmaps(model: CLAHDM, cases: list[Case], data_cfg: DataConfig, selection: HeatmapSelection,
                   out_dir: Path, device: torch.device, seed: int = 0,
                   manifest_root: Path | None = None) -> list[Path]:
    """Write one heatmap picture per selected case into `out_dir`; returns the paths written.

    With the manifest's folder, a node mask the manifest lists is outlined on the pictures.
    """
    paths = []
    for case in select_cases(cases, selection, seed):
        bus, cdfi = read_image(case.bus_path, None), read_image(case.cdfi_path, None)  # validated at load
        explanation = explain_images(model, bus, cdfi, case.roi, data_cfg, device, case.case_id, selection.stages,
                                     selection.fusion)
        picture = render_picture(explanation, bus, cdfi, truth=case.label,
                                 outline=node_outline(case, bus.shape, manifest_root))
        paths.append(write_picture(Path(out_dir) / picture_name(case.case_id), picture))
    return paths
