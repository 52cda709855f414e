"""The node localiser: proposes the node's box on a whole B-mode frame, so a site needs no
hand-drawn ROI at prediction time (and no ROI column in its manifest).

A ResNet trunk (conv1 .. layer3, stride 16) on the letterboxed frame predicts a heat map of the
node's centre and a box size at every cell; the box is the heat map's expected centre (a
soft-argmax, so it is finer than a cell) and the size averaged under it. One node per frame is
what an ROI-based manifest assumes, so one box per frame is all it predicts. It trains on the
sites' hand-drawn ROIs (L1 + generalised IoU), federated like the sub-models.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import box_convert, generalized_box_iou_loss

from common.backbone import ResNetExtractor, build_extractor, load_pretrained
from common.imaging import read_image, to_tensor
from common.manifest import Case

Box = tuple[int, int, int, int]  # x, y, w, h in image pixels
# Cached frames are downscaled to this many times the input side: room for crop augmentation.
CACHE_SCALE = 2


class NodeLocaliser(nn.Module):
    """(B, 3, S, S) letterboxed B-mode frames -> (B, 4) boxes (cx, cy, w, h) as fractions of S."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.trunk = _trunk(build_extractor(backbone))
        channels = _trunk_channels(self.trunk)
        self.head = nn.Sequential(nn.Conv2d(channels, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.trunk(x))
        batch, _, h, w = out.shape
        heat = torch.softmax(out[:, 0].flatten(1), dim=1).view(batch, h, w)
        xs = (torch.arange(w, device=x.device, dtype=out.dtype) + 0.5) / w
        ys = (torch.arange(h, device=x.device, dtype=out.dtype) + 0.5) / h
        cx, cy = (heat.sum(1) * xs).sum(1), (heat.sum(2) * ys).sum(1)
        size = torch.sigmoid((heat[:, None] * out[:, 1:3]).sum(dim=(2, 3)))
        return torch.stack([cx, cy, size[:, 0], size[:, 1]], dim=1)


def _trunk(extractor: ResNetExtractor) -> nn.Sequential:
    """conv1 .. layer3 of a ResNet extractor: stride 16 keeps a node several cells wide."""
    e = extractor
    return nn.Sequential(e.conv1, e.bn1, e.relu, e.maxpool, e.layer1, e.layer2, e.layer3)


def _trunk_channels(trunk: nn.Sequential) -> int:
    convs = [m for m in trunk[-1].modules() if isinstance(m, nn.Conv2d)]  # layer3's
    return int(convs[-1].out_channels)


def initial_localiser(backbone: str, pretrained: str = "none") -> NodeLocaliser:
    """A localiser to start training from: the trunk from ImageNet or a local file when asked."""
    localiser = NodeLocaliser(backbone)
    if pretrained != "none":
        extractor = load_pretrained(build_extractor(backbone), backbone, pretrained)
        localiser.trunk = _trunk(cast(ResNetExtractor, extractor))
    return localiser


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The image scaled to fit a size x size square (top-left, black padding), and the scale used."""
    scale = size / max(image.shape[:2])
    h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.zeros((size, size, 3), np.uint8)
    out[:h, :w] = cv2.resize(image, (w, h), interpolation=interp)
    return out, scale


def box_to_target(box: Sequence[float], scale: float, size: int) -> np.ndarray:
    """An image-px box -> (cx, cy, w, h) as fractions of the letterboxed square."""
    x, y, w, h = box
    return np.array([(x + w / 2) * scale / size, (y + h / 2) * scale / size, w * scale / size, h * scale / size],
                    np.float32)


def target_to_box(target: Sequence[float], scale: float, size: int, shape: tuple[int, ...]) -> Box:
    """The inverse of `box_to_target`, clipped to the image (at least 1 px)."""
    cx, cy, w, h = (float(v) * size / scale for v in target)
    x0, y0 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
    x1, y1 = min(float(shape[1]), cx + w / 2), min(float(shape[0]), cy + h / 2)
    x0, y0 = min(x0, shape[1] - 1.0), min(y0, shape[0] - 1.0)
    return round(x0), round(y0), max(1, round(x1 - x0)), max(1, round(y1 - y0))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def localiser_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on (cx, cy, w, h) plus the generalised IoU loss (scale-free: small nodes count as much)."""
    giou = generalized_box_iou_loss(box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy"),
                                    reduction="mean")
    return (pred - target).abs().sum(dim=1).mean() + giou


class LocaliserDataset(Dataset):
    """B-mode frames of cases with an ROI -> (letterboxed tensor, target box).

    Training draws a random crop that still holds the whole box (and flips half the frames), so
    the localiser sees the node at many places and scales: full screens, ingested imaging regions.
    Frames are decoded once, downscaled, and kept in `cache` (shared across rounds).
    """

    def __init__(self, cases: list[Case], size: int, train: bool = False, seed: int = 0,
                 cache: dict | None = None) -> None:
        self.cases = [c for c in cases if c.roi is not None]
        self.size, self.train, self.seed, self.epoch = size, train, seed, 0
        self._cache = cache if cache is not None else {}

    def __len__(self) -> int:
        return len(self.cases)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def prepare_all(self) -> None:
        """Decode every frame now (a site does this before it trains: see SiteData.prepare)."""
        for case in self.cases:
            self._frame(case)

    def _frame(self, case: Case) -> tuple[np.ndarray, Box]:
        if case.case_id not in self._cache:
            image = read_image(case.bus_path, None)
            scale = min(1.0, CACHE_SCALE * self.size / max(image.shape[:2]))
            if scale < 1.0:
                image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                                   interpolation=cv2.INTER_AREA)
            assert case.roi is not None  # cases without an ROI were left out in __init__
            x, y, w, h = case.roi
            box = (x * scale, y * scale, w * scale, h * scale)
            self._cache[case.case_id] = (image, box)
        return self._cache[case.case_id]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, box = self._frame(self.cases[index])
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, box = _random_view(image, box, rng)
        square, scale = letterbox(image, self.size)
        target = box_to_target(box, scale, self.size)
        return to_tensor(square, self.size), torch.from_numpy(target)


def _random_view(image: np.ndarray, box: tuple, rng: np.random.Generator) -> tuple[np.ndarray, tuple]:
    """A random crop holding the whole box (between the box grown by 30 % and the whole frame), flipped
    left-right half the time."""
    rows, cols = image.shape[:2]
    x, y, w, h = box
    cw = rng.uniform(min(cols, w * 1.3), cols)
    ch = rng.uniform(min(rows, h * 1.3), rows)
    x0 = rng.uniform(max(0.0, x + w - cw), max(0.0, min(x, cols - cw)) + 1e-6)
    y0 = rng.uniform(max(0.0, y + h - ch), max(0.0, min(y, rows - ch)) + 1e-6)
    x0, y0 = int(max(0, min(x0, cols - 1))), int(max(0, min(y0, rows - 1)))
    x1, y1 = int(min(cols, x0 + max(1, round(cw)))), int(min(rows, y0 + max(1, round(ch))))
    view, box = image[y0:y1, x0:x1], (x - x0, y - y0, w, h)
    if rng.random() < 0.5:
        view, box = view[:, ::-1], (view.shape[1] - box[0] - w, box[1], w, h)
    return np.ascontiguousarray(view), box


def propose_box(localiser: NodeLocaliser, image: np.ndarray, size: int, device: torch.device | None = None) -> Box:
    """The localiser's box (x, y, w, h) on one RGB frame, in that frame's pixels."""
    return propose_boxes(localiser, [image], size, device)[0]


def propose_boxes(localiser: NodeLocaliser, images: list[np.ndarray], size: int,
                  device: torch.device | None = None, batch_size: int = 32) -> list[Box]:
    """The localiser's box on each RGB frame, in that frame's pixels."""
    device = device or torch.device("cpu")
    was_training = localiser.training
    localiser.to(device).eval()
    boxes: list[Box] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            squares = [letterbox(image, size) for image in chunk]
            batch = torch.stack([to_tensor(square, size) for square, _ in squares]).to(device)
            for image, (_, scale), target in zip(chunk, squares, localiser(batch).cpu().numpy()):
                boxes.append(target_to_box(target, scale, size, image.shape))
    localiser.train(was_training)
    return boxes


def propose_missing_rois(localiser: NodeLocaliser, cases: list[Case], size: int,
                         device: torch.device | None = None) -> tuple[list[Case], int]:
    """The cases with the localiser's box wherever the manifest gave no ROI, and how many got one."""
    missing = [i for i, c in enumerate(cases) if c.roi is None]
    if not missing:
        return list(cases), 0
    boxes = propose_boxes(localiser, [read_image(cases[i].bus_path, None) for i in missing], size, device)
    out = list(cases)
    for i, box in zip(missing, boxes):
        out[i] = replace(out[i], roi=box)
    return out, len(missing)
