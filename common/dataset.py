"""The one dataset interface every site satisfies: cases -> (BUS, CDFI, target) tensors."""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from common import augment
from common.config import DataConfig
from common.errors import ClafedError
from common.imaging import ImageError, crop, crop_padded, expand_roi, image_size, read_image, to_tensor
from common.labels import CLASS_INDEX, Level
from common.manifest import Case

UNLABELED = -1
# A case without a node mask: every pixel of its mask target (the loss leaves it out).
MASK_MISSING = -1.0


class CaseError(ClafedError, RuntimeError):
    """Reading or preparing one case failed; the message names the case and the file."""


class Prepared(NamedTuple):
    """A case image cropped once to its ROI (+ margin + room for jitter), at about the input size."""

    image: np.ndarray  # uint8 RGB
    box: tuple[int, int, int, int]  # the ROI + margin inside `image`


def input_box(roi: tuple[int, int, int, int] | None, margin: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The square (x, y, side, side) of the original image the un-augmented model input shows.

    The ROI plus margin is grown to a square around its centre (never stretched: the node's
    long/short-axis ratio is diagnostic); it may reach past the image, where it is black.
    Heatmaps are mapped back to the original image through this box.
    """
    x, y, w, h = roi if roi else (0, 0, shape[1], shape[0])
    side = max(1, round(max(w, h) * (1.0 + 2.0 * margin))) if roi else max(w, h)
    return round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side, side


def prepare(image: np.ndarray, roi: tuple[int, int, int, int] | None, cfg: DataConfig) -> Prepared:
    """Crop the square input box plus room for jitter, scaled so the box spans `input_size`."""
    box = input_box(roi, cfg.roi_margin, image.shape)
    room = round(box[2] * cfg.augment.box_jitter)
    context = (box[0] - room, box[1] - room, box[2] + 2 * room, box[3] + 2 * room)
    patch = crop_padded(image, context)
    scale = cfg.input_size / box[2]
    size = max(1, round(patch.shape[1] * scale))
    patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    inner = (round(room * scale), round(room * scale), cfg.input_size, cfg.input_size)
    return Prepared(patch, expand_roi(inner, 0.0, patch.shape))


class CaseDataset(Dataset):
    """Cases of one site as tensors, for one hierarchy level or for the 4-class model.

    Args:
        cases: validated cases (see `common.manifest.load_cases`).
        cfg: preprocessing settings.
        level: keep only this sub-model's classes and give binary targets; None gives 4-class
            indices (and -1 for unlabeled cases).
        train: apply augmentation.
        seed: augmentation seed; with `set_epoch` the draws depend on (seed, epoch, index) only.
        cache: decoded, cropped images by case id, shared between the datasets of one site and
            preprocessing so each image is decoded once per run (SiteData passes its own).
        mask_cache: the same for the cropped node masks (None for a case without one).
        masks: also give each case's node mask as seen by each branch (B, 2, S, S) after the same
            crop and augmentation as its image, in [0, 1]; all MASK_MISSING for a case without one.
    """

    def __init__(self, cases: list[Case], cfg: DataConfig, level: Level | None = None,
                 train: bool = False, seed: int = 0,
                 cache: dict[str, tuple[Prepared, Prepared]] | None = None, masks: bool = False,
                 mask_cache: dict[str, Prepared | None] | None = None) -> None:
        self.cases = [c for c in cases if level is None or c.label in level.labels]
        self.cfg, self.level, self.train, self.seed, self.epoch = cfg, level, train, seed, 0
        self._cache = {} if cache is None else cache
        self.masks = masks
        self._mask_cache = {} if mask_cache is None else mask_cache

    def __len__(self) -> int:
        return len(self.cases)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws for a new epoch."""
        self.epoch = epoch

    def prepare_all(self) -> None:
        """Decode and crop every case's images (and masks, when it gives them) now (see SiteData.prepare)."""
        for index in range(len(self.cases)):
            self._prepared(index)
            if self.masks:
                self._mask(index)

    def targets(self) -> np.ndarray:
        """Targets of all cases without reading any image."""
        return np.array([self._target(c) for c in self.cases], dtype=np.int64)

    def __getitem__(self, index: int) -> tuple:
        bus, cdfi = self._prepared(index)
        mask = self._mask(index) if self.masks else None
        target = self._target(self.cases[index])
        if not self.train:
            size = self.cfg.input_size
            images = to_tensor(crop(bus.image, bus.box), size), to_tensor(crop(cdfi.image, cdfi.box), size)
            views = [None if mask is None else crop(mask.image, mask.box)] * 2
        else:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            (bus_tensor, bus_view), (cdfi_tensor, cdfi_view) = (self._augment(bus, rng, cdfi=False, mask=mask),
                                                                self._augment(cdfi, rng, cdfi=True, mask=mask))
            images, views = (bus_tensor, cdfi_tensor), [bus_view, cdfi_view]
        if not self.masks:
            return *images, target
        return *images, target, self._mask_tensor(views)

    def _mask_tensor(self, views: list[np.ndarray | None]) -> torch.Tensor:
        size = self.cfg.input_size
        present = [v for v in views if v is not None]
        if len(present) < len(views):
            return torch.full((2, size, size), MASK_MISSING)
        resized = [cv2.resize(v, (size, size), interpolation=cv2.INTER_AREA if v.shape[0] > size else cv2.INTER_LINEAR)
                   for v in present]
        return torch.from_numpy(np.stack(resized).astype(np.float32) / 255.0)

    def _mask(self, index: int) -> Prepared | None:
        """The case's node mask cropped like its images, or None when it has none."""
        case = self.cases[index]
        if case.case_id not in self._mask_cache:
            mask = read_mask(case)
            self._mask_cache[case.case_id] = None if mask is None else prepare(mask, case.roi, self.cfg)
        return self._mask_cache[case.case_id]

    def _target(self, case: Case) -> int:
        if case.label is None:
            return UNLABELED
        return self.level.target(case.label) if self.level else CLASS_INDEX[case.label]

    def _prepared(self, index: int) -> tuple[Prepared, Prepared]:
        case = self.cases[index]
        if case.case_id not in self._cache:
            try:
                # Sizes were checked against the site's limit when its manifest was validated.
                self._cache[case.case_id] = (prepare(read_image(case.bus_path, None), case.roi, self.cfg),
                                             prepare(read_image(case.cdfi_path, None), case.roi, self.cfg))
            except (ImageError, cv2.error, ValueError) as err:
                raise CaseError(f"case {case.case_id}: {err} (run `clafed validate` on the manifest)") from None
        return self._cache[case.case_id]

    def _augment(self, prepared: Prepared, rng: np.random.Generator, cdfi: bool,
                 mask: Prepared | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
        """The augmented image tensor, and the mask's view under the same crop, flip and rotation."""
        aug = self.cfg.augment
        box = augment.jitter_box(prepared.box, aug.box_jitter, prepared.image.shape, rng)
        patch, view = augment.geometric(crop(prepared.image, box), aug, rng,
                                        None if mask is None else crop(mask.image, box))
        photometric = augment.cdfi_photometric if cdfi else augment.bus_photometric
        patch = cv2.resize(photometric(patch, aug, rng), (self.cfg.input_size, self.cfg.input_size),
                           interpolation=cv2.INTER_LINEAR)
        return to_tensor(patch, self.cfg.input_size), view


def read_mask(case: Case) -> np.ndarray | None:
    """A case's node mask as 0/255 uint8 of its BUS image's size (None: the case has none)."""
    if case.node_mask is None:
        return None
    mask = cv2.imread(str(case.node_mask), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise CaseError(f"case {case.case_id}: node mask {case.node_mask} is missing or not an image "
                        "(fix node_mask_path or leave it empty)")
    size = image_size(case.bus_path)
    if size is not None and mask.shape != (size[1], size[0]):
        raise CaseError(f"case {case.case_id}: node mask {case.node_mask} is {mask.shape[1]}x{mask.shape[0]} px, "
                        f"its BUS image {size[0]}x{size[1]} (they must match)")
    return np.where(mask > 0, 255, 0).astype(np.uint8)


def class_weights(targets: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 over the present classes (absent classes: 0)."""
    counts = np.bincount(targets, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0)
    return weights


def balanced_sampler(targets: np.ndarray, seed: int) -> WeightedRandomSampler:
    """Draw each class equally often (with replacement), seeded; an epoch keeps the dataset's length."""
    per_case = class_weights(targets, int(targets.max()) + 1)[targets]
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(per_case.astype(np.float64).tolist(), num_samples=len(targets),
                                 replacement=True, generator=generator)
