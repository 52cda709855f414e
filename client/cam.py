"""Layer-CAM of both branches of one CLA-HDM sub-model, from one or several ResNet stages, fused.

Layer-CAM weighs every activation of a layer by its own positive gradient, then sums over
channels: cam = ReLU(sum_k ReLU(dS/dA_k) * A_k), S being the class score (the logit). Unlike
Grad-CAM's channel-averaged weights this stays reliable in shallow layers, so maps of several
stages can be fused into a finer one. Each stage's map is normalised by its maximum and
upsampled to the finest stage's resolution, then

- `max` (default): the Layer-CAM paper's fusion (Jiang et al., 2021): shallow maps scaled by
  tanh(gamma * map), then the element-wise maximum;
- `product`: the maps are multiplied, so a shallow stage's detail survives only where the deeper
  stages also see evidence (as Guided Grad-CAM gates fine by coarse evidence).

Measured with simulation/faithfulness.py on the default model's 368 held-out synthetic cases:
`product` over layer2-4 puts far more of the map on the node (CDFI energy 0.51-0.65 against
0.25-0.33), but its maps correlate with those of a re-initialised network (Spearman 0.68): they
partly trace the image's structure, not the model's evidence. `max` over layer2-4 passes that
check (0.29) but localises no better than layer4 alone (0.25), so the sites draw layer4 by
default (`heatmaps.stages` in the site YAML chooses).

Written with forward hooks and `torch.autograd.grad` rather than a CAM library: a sub-model takes
two inputs, and asking autograd only for the chosen stages' gradients leaves every parameter's
`.grad` untouched.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from common.config import CAM_STAGES, HeatmapSelection
from common.model import SubModel

STAGES = CAM_STAGES
# The stages a site uses by default (its heatmaps.stages), and the multi-stage set the benchmark
# compares: layer4 alone is a 3x3 map at 96 px, layer2 brings it to 12x12.
DEFAULT_STAGES = HeatmapSelection().stages
DEFAULT_FUSION = HeatmapSelection().fusion
MULTI_STAGES = ("layer2", "layer3", "layer4")
# Layer-CAM's scaling of shallow-stage maps before a `max` fusion: tanh(GAMMA * normalised map).
GAMMA = 2.0
FUSIONS = ("max", "product")


class BranchCAMs(NamedTuple):
    """Layer-CAM of one sub-model for a batch, for every class of its head, fused over the stages."""

    probabilities: torch.Tensor  # (B, 2) softmax of the fused head
    bus: torch.Tensor  # (B, 2, h, w) in [0, 1] at the finest stage's resolution; [:, k] explains class k
    cdfi: torch.Tensor  # (B, 2, h, w)


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """The stages in network order, or ValueError naming the unknown ones."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(f"heatmap stages must be some of {', '.join(STAGES)}, got {list(stages)}")
    return tuple(s for s in STAGES if s in stages)


def _normalised(cam: torch.Tensor) -> torch.Tensor:
    """Each sample's and class's map divided by its maximum (an all-zero map stays zero)."""
    peak = cam.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def fuse(maps: Sequence[torch.Tensor], mode: str = DEFAULT_FUSION, gamma: float = GAMMA) -> torch.Tensor:
    """Fuse per-stage maps (each (B, C, h_i, w_i) >= 0, shallow to deep) into one (B, C, h, w) in [0, 1].

    Each map is normalised, upsampled bilinearly to the largest resolution and combined by `mode`
    (see the module's docstring): `product`, renormalised, or `max` after tanh(gamma * map) on the
    shallower ones.
    """
    if mode not in FUSIONS:
        raise ValueError(f"heatmap fusion must be one of {', '.join(FUSIONS)}, got {mode!r}")
    size = tuple(max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1]))
    fused = None
    for i, cam in enumerate(maps):
        cam = _normalised(cam)
        if mode == "max" and i < len(maps) - 1:
            cam = torch.tanh(gamma * cam)
        if tuple(cam.shape[-2:]) != size:
            cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
        if fused is None:
            fused = cam
        else:
            fused = fused * cam if mode == "product" else torch.maximum(fused, cam)
    assert fused is not None
    return _normalised(fused).clamp(0.0, 1.0)


def layer_cam(submodel: SubModel, bus: torch.Tensor, cdfi: torch.Tensor,
              stages: Sequence[str] = DEFAULT_STAGES, fusion: str = DEFAULT_FUSION) -> BranchCAMs:
    """Layer-CAM of both branches for both classes from one forward pass, fused over `stages`.

    Explaining the second class costs only a backward pass from the head to the stages, so both
    are computed and the caller picks (the class a gate chose need not be the argmax). Works for
    callers under `torch.no_grad()` too; the sub-model is in eval mode for the call, and its
    previous mode, hooks and `requires_grad` flags are as before afterwards.
    """
    stages = check_stages(stages)
    activations: dict[tuple[str, str], torch.Tensor] = {}

    def keep(key: tuple[str, str]):
        def hook(_module, _inputs, output):
            activations[key] = output
        return hook

    keys = [(branch, stage) for branch in ("bus", "cdfi") for stage in stages]
    handles = [getattr(getattr(submodel, branch), stage).register_forward_hook(keep((branch, stage)))
               for branch, stage in keys]
    was_training = submodel.training
    try:
        submodel.eval()
        with torch.enable_grad():
            # Inputs that require grad give every stage a graph even when the weights are frozen.
            logits = submodel(bus.detach().requires_grad_(True), cdfi.detach().requires_grad_(True))
            maps: dict[tuple[str, str], list[torch.Tensor]] = {key: [] for key in keys}
            for k in range(logits.shape[1]):
                # Summing over the batch is exact: in eval mode the samples do not interact.
                grads = torch.autograd.grad(logits[:, k].sum(), [activations[key] for key in keys],
                                            retain_graph=k < logits.shape[1] - 1)
                for key, grad in zip(keys, grads):
                    maps[key].append(torch.relu((torch.relu(grad) * activations[key]).sum(dim=1)).detach())
    finally:
        for handle in handles:
            handle.remove()
        submodel.train(was_training)
    fused = {branch: fuse([torch.stack(maps[(branch, stage)], 1) for stage in stages], fusion)
             for branch in ("bus", "cdfi")}
    return BranchCAMs(torch.softmax(logits.detach(), dim=1), fused["bus"], fused["cdfi"])


def to_image(cam: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Map a feature-resolution CAM back onto the original image, scaled to [0, 1].

    The model saw the square `box` (x, y, side, side) of the image resized to its input size, so
    the map is stretched over that square; the parts of the square outside the image are dropped
    and the image outside the square gets 0. Scaling is by the map's maximum over the whole square
    (0 stays "no evidence"; an all-zero map stays zero).
    """
    x, y, side, _ = box
    cam = np.asarray(cam, dtype=np.float32)
    peak = float(cam.max()) if cam.size else 0.0
    out = np.zeros(shape[:2], dtype=np.float32)
    if peak <= 0:
        return out
    square = cv2.resize(cam / peak, (side, side), interpolation=cv2.INTER_LINEAR)
    square /= max(float(square.max()), 1e-12)  # a sharp peak between output pixels would lose its top
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(shape[1], x + side), min(shape[0], y + side)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = square[y0 - y:y1 - y, x0 - x:x1 - x]
    return np.clip(out, 0.0, 1.0)
