"""Layer-CAM on the final-stage feature maps (layer4) of both branches of one CLA-HDM sub-model.

Layer-CAM weighs every activation of a layer by its own positive gradient, then sums over
channels: cam = ReLU(sum_k ReLU(dS/dA_k) * A_k), S being the class score (the logit). Written
with forward hooks and `torch.autograd.grad` rather than a CAM library: a sub-model takes two
inputs, and asking autograd only for the two layer4 gradients leaves every parameter's `.grad`
untouched.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from common.model import SubModel


class BranchCAMs(NamedTuple):
    """Layer-CAM of one sub-model for a batch, for every class of its head, at feature-map resolution."""

    probabilities: torch.Tensor  # (B, 2) softmax of the fused head
    bus: torch.Tensor  # (B, 2, h, w) >= 0, not normalised; [:, k] explains class k
    cdfi: torch.Tensor  # (B, 2, h, w)


def layer_cam(submodel: SubModel, bus: torch.Tensor, cdfi: torch.Tensor) -> BranchCAMs:
    """Layer-CAM of both branches for both classes, from one forward pass.

    Explaining the second class costs only a backward pass from the head to layer4, so both are
    computed and the caller picks (the class a gate chose need not be the argmax). Works for
    callers under `torch.no_grad()` too; the sub-model is in eval mode for the call, and its
    previous mode, hooks and `requires_grad` flags are as before afterwards.
    """
    activations: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module, _inputs, output):
            activations[name] = output
        return hook

    handles = [submodel.bus.layer4.register_forward_hook(keep("bus")),
               submodel.cdfi.layer4.register_forward_hook(keep("cdfi"))]
    was_training = submodel.training
    try:
        submodel.eval()
        with torch.enable_grad():
            # Inputs that require grad give layer4 a graph even when the weights are frozen.
            logits = submodel(bus.detach().requires_grad_(True), cdfi.detach().requires_grad_(True))
            maps = {"bus": [], "cdfi": []}
            for k in range(logits.shape[1]):
                # Summing over the batch is exact: in eval mode the samples do not interact.
                grads = torch.autograd.grad(logits[:, k].sum(), [activations["bus"], activations["cdfi"]],
                                            retain_graph=k < logits.shape[1] - 1)
                for name, grad in zip(("bus", "cdfi"), grads):
                    maps[name].append(torch.relu((torch.relu(grad) * activations[name]).sum(dim=1)).detach())
    finally:
        for handle in handles:
            handle.remove()
        submodel.train(was_training)
    return BranchCAMs(torch.softmax(logits.detach(), dim=1), torch.stack(maps["bus"], 1), torch.stack(maps["cdfi"], 1))


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
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(shape[1], x + side), min(shape[0], y + side)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = square[y0 - y:y1 - y, x0 - x:x1 - x]
    return np.clip(out, 0.0, 1.0)
