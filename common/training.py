"""Local training and inference of one sub-model, and inference of the assembled CLA-HDM."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from common.config import TrainConfig
from common.dataset import CaseDataset, balanced_sampler, class_weights
from common.model import CLAHDM, SubModel


@dataclass(frozen=True)
class EpochStats:
    """Aggregate figures of one local epoch (no per-case values)."""

    epoch: int
    loss: float
    accuracy: float
    num_examples: int


@dataclass(frozen=True)
class Predictions:
    """Raw outputs on a cohort, kept at the site; metrics are computed from these arrays."""

    case_ids: list[str]
    targets: np.ndarray  # (n,) binary targets of a level, or 4-class indices (-1 unlabeled)
    scores: np.ndarray  # (n,) P(positive) for a sub-model; (n, 4) soft probabilities for CLA-HDM
    hard: np.ndarray | None = None  # (n, 4) gated probabilities (CLA-HDM only)
    levels: np.ndarray | None = None  # (n, 3) each level's P(positive) (CLA-HDM only)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a local run is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(dataset: CaseDataset, cfg: TrainConfig, shuffle: bool) -> DataLoader:
    """DataLoader with the configured class balancing (sampler) when shuffling for training."""
    sampler = None
    if shuffle and cfg.balance == "sampler":
        sampler, shuffle = balanced_sampler(dataset.targets(), cfg.seed), False
    generator = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, sampler=sampler,
                      num_workers=cfg.num_workers, generator=generator,
                      pin_memory=torch.cuda.is_available(), persistent_workers=cfg.num_workers > 0)


def train_submodel(model: SubModel, dataset: CaseDataset, cfg: TrainConfig, epochs: int | None = None,
                   device: torch.device | None = None, proximal_mu: float = 0.0,
                   desc: str = "train") -> list[EpochStats]:
    """Train one sub-model on a site's cases for `epochs` (default cfg.epochs) local epochs.

    Args:
        model: the sub-model, updated in place (left on `device`).
        dataset: a CaseDataset of this sub-model's level, with train=True.
        cfg: optimiser, balancing, auxiliary-loss weight, seed.
        proximal_mu: FedProx's proximal term weight (0 = plain local SGD/Adam as in FedAvg).
    Returns:
        One EpochStats per epoch; an empty dataset trains nothing and returns [].
    """
    if len(dataset) == 0:
        return []
    device = device or resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device).train()
    loader = make_loader(dataset, cfg, shuffle=True)
    weights = class_weights(dataset.targets()) if cfg.balance == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    history = []
    for epoch in range(epochs if epochs is not None else cfg.epochs):
        dataset.set_epoch(epoch)
        history.append(_train_epoch(model, loader, criterion, optimizer, cfg, device, epoch,
                                    anchor, proximal_mu, desc))
    return history


def _train_epoch(model, loader, criterion, optimizer, cfg, device, epoch, anchor, mu, desc) -> EpochStats:
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}", disable=not cfg.progress, leave=False)
    for bus, cdfi, target in bar:
        bus, cdfi, target = bus.to(device), cdfi.to(device), target.to(device)
        out = model.forward_all(bus, cdfi)
        loss = criterion(out.logits, target)
        if cfg.aux_weight > 0:
            loss = loss + cfg.aux_weight * (criterion(out.bus_logits, target) + criterion(out.cdfi_logits, target))
        if anchor is not None:
            loss = loss + mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(target)
        correct += int((out.logits.argmax(1) == target).sum())
        seen += len(target)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.2f}")
    return EpochStats(epoch + 1, total_loss / seen, correct / seen, seen)


class evaluating:
    """Context manager: eval mode and no_grad inside, the previous train/eval mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self) -> nn.Module:
        self.model.eval()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc) -> None:
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def predict_submodel(model: SubModel, dataset: CaseDataset, batch_size: int = 32,
                     device: torch.device | None = None) -> Predictions:
    """P(positive class) of one sub-model for every case of `dataset` (in its order)."""
    device = device or resolve_device()
    model.to(device)
    scores, targets = [], []
    with evaluating(model):
        for bus, cdfi, target in DataLoader(dataset, batch_size=batch_size):
            scores.append(torch.softmax(model(bus.to(device), cdfi.to(device)), 1)[:, 1].cpu())
            targets.append(target)
    return Predictions([c.case_id for c in dataset.cases], _cat(targets, torch.long), _cat(scores, torch.float32))


def predict_clahdm(model: CLAHDM, dataset: CaseDataset, batch_size: int = 32,
                   device: torch.device | None = None, num_workers: int = 0) -> Predictions:
    """Soft and hard 4-class probabilities and each level's probability for every case."""
    device = device or resolve_device()
    model.to(device)
    soft, hard, levels, targets = [], [], [], []
    with evaluating(model):
        for bus, cdfi, target in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
            out = model(bus.to(device), cdfi.to(device))
            soft.append(out.soft.cpu()), hard.append(out.hard.cpu()), levels.append(out.levels.cpu())
            targets.append(target)
    return Predictions([c.case_id for c in dataset.cases], _cat(targets, torch.long), _cat(soft, torch.float32),
                       _cat(hard, torch.float32), _cat(levels, torch.float32))


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    return torch.cat(parts).to(dtype).numpy() if parts else np.zeros((0,), dtype=np.float32)
