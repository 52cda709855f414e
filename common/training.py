"""Local training and inference of one sub-model, and inference of the assembled CLA-HDM."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from common.config import TrainConfig
from common.dataset import CaseDataset, balanced_sampler, class_weights
from common.labels import LEVELS, LOCALISER, SHARED
from common.model import CLAHDM, SubModel, view_logits


@dataclass(frozen=True)
class EpochStats:
    """Aggregate figures of one local epoch (no per-case values)."""

    epoch: int
    loss: float
    accuracy: float
    num_examples: int
    lr: float = 0.0  # learning rate of the epoch's last step


@dataclass
class OptimizerCarry:
    """AdamW's second-moment estimates carried from one round's local epochs to the next round's.

    A fresh AdamW's first steps move every weight by about the full learning rate (its
    second-moment estimate starts from a single gradient), and a small site takes only a few
    steps per round, so restarting each round turns most of its training into such steps. The
    carried estimates (and step counts) keep the step sizes of one long run. The first moment
    starts from zero each round: it points where the site's own previous weights were going,
    not the new global ones. The carry stays at the site (client/optimizer_store.py).
    """

    state: dict | None = None


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


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype training steps autocast to on `device` (None: plain fp32); see TrainConfig.precision."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


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


def lr_factor(progress: float, warmup: float, floor: float) -> float:
    """The schedule's multiplier of the base learning rate at `progress` (0..1) of the whole run.

    Linear warm-up from `floor` to 1 over the first `warmup` of the run, then a cosine decay to
    `floor` at the end. Progress counts over every round of a federated run, so each round's
    local steps continue the same curve instead of restarting it.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return floor + (1.0 - floor) * progress / warmup
    decay = (progress - warmup) / max(1e-12, 1.0 - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * decay))


def train_submodel(model: SubModel, dataset: CaseDataset, cfg: TrainConfig, epochs: int | None = None,
                   device: torch.device | None = None, proximal_mu: float = 0.0,
                   desc: str = "train", span: tuple[float, float] = (0.0, 1.0),
                   carry: OptimizerCarry | None = None) -> list[EpochStats]:
    """Train one sub-model on a site's cases for `epochs` (default cfg.epochs) local epochs.

    Args:
        model: the sub-model, updated in place (left on `device`).
        dataset: a CaseDataset of this sub-model's level (or 4-class for the shared phase), train=True.
        cfg: optimiser, schedule, balancing, auxiliary-loss weight, seed.
        proximal_mu: FedProx's proximal term weight (0 = plain local SGD/Adam as in FedAvg).
        span: the part (start, end) of the whole training schedule these epochs cover; a federated
            round r of R covers ((r-1)/R, r/R), so the learning rate follows one curve over the run.
        carry: the optimiser state to start from (the previous round's), replaced by the state
            after these epochs; None starts a fresh optimiser and keeps nothing.
    Returns:
        One EpochStats per epoch; an empty dataset trains nothing and returns [].
    """
    if len(dataset) == 0:
        return []
    device = device or resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device).train()
    # Faster convolutions on CPU (simulation.benchmark), and what tensor cores want under autocast.
    channels_last = device.type in ("cpu", "cuda")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(dataset, cfg, shuffle=True)
    n_classes = model.n_classes
    weights = class_weights(dataset.targets(), n_classes) if cfg.balance == "loss" else None
    weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if carry is not None and carry.state is not None:
        restore_optimizer(optimizer, carry.state)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    n_epochs = epochs if epochs is not None else cfg.epochs
    steps = max(1, n_epochs * len(loader))

    def set_lr(step: int) -> float:
        return set_scheduled_lr(optimizer, cfg, span, step, steps)

    amp = autocast_dtype(cfg.precision, device)
    # fp16 needs its loss scaled so small gradients do not flush to zero; bf16 has fp32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    history = []
    for epoch in range(n_epochs):
        dataset.set_epoch(epoch)
        history.append(_train_epoch(model, loader, criterion, optimizer, cfg, device, epoch,
                                    anchor, proximal_mu, desc, set_lr, epoch * len(loader), channels_last,
                                    amp, scaler))
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    if carry is not None:
        carry.state = carried_state(optimizer)
    return history


def set_scheduled_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, span: tuple[float, float], step: int,
                     steps: int) -> float:
    """Set (and return) the learning rate of local step `step` of `steps` covering `span` of the run.

    Step k of n sits at the end of its share of the span: the last step of the last round runs at
    exactly the schedule's final rate.
    """
    progress = span[0] + (span[1] - span[0]) * (step + 1) / steps
    lr = cfg.lr * lr_factor(progress, cfg.warmup, cfg.lr_floor)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's mu/2 * ||w - w_received||^2 over the model's parameters."""
    return mu / 2 * torch.stack([((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor)]).sum()


def carried_state(optimizer: torch.optim.Optimizer) -> dict:
    """What an OptimizerCarry keeps of AdamW: each parameter's step count and second moment (on
    the CPU, in the parameter's layout) and the parameter groups."""
    saved = optimizer.state_dict()
    state = {index: {key: s[key].detach().to("cpu").clone() for key in ("step", "exp_avg_sq")}
             for index, s in saved["state"].items()}
    return {"state": state, "param_groups": saved["param_groups"]}


def restore_optimizer(optimizer: torch.optim.Optimizer, carried: dict) -> bool:
    """Load a carried state into a fresh AdamW of the same parameters, the first moment at zero.

    A state whose tensors do not fit the parameters is not loaded (False): the optimiser stays fresh.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = carried.get("state", {})
    if len(saved) != len(params) or any(tuple(saved[i]["exp_avg_sq"].shape) != tuple(p.shape)
                                        for i, p in enumerate(params) if i in saved):
        return False
    state = {index: {"step": s["step"], "exp_avg_sq": s["exp_avg_sq"], "exp_avg": torch.zeros_like(s["exp_avg_sq"])}
             for index, s in saved.items()}
    optimizer.load_state_dict({"state": state, "param_groups": carried["param_groups"]})
    return True


def _train_epoch(model, loader, criterion, optimizer, cfg, device, epoch, anchor, mu, desc, set_lr, step,
                 channels_last, amp, scaler) -> EpochStats:
    total_loss, correct, seen = 0.0, 0, 0
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}", disable=not cfg.progress, leave=False)
    lr = 0.0
    for batch in bar:
        bus, cdfi, target = batch[:3]
        lr = set_lr(step)
        step += 1
        bus = bus.to(device, memory_format=fmt, non_blocking=True)
        cdfi = cdfi.to(device, memory_format=fmt, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model.forward_all(bus, cdfi)
            loss = criterion(out.logits.float(), target)
            if cfg.aux_weight > 0:
                loss = loss + cfg.aux_weight * (criterion(out.bus_logits.float(), target)
                                                + criterion(out.cdfi_logits.float(), target))
            if len(batch) > 3 and out.bus_mask is not None and out.cdfi_mask is not None and cfg.mask_target:
                masks = batch[3].to(device, non_blocking=True)
                have = masks.flatten(1).amin(1) >= 0  # cases without a mask add nothing
                if bool(have.any()):
                    loss = loss + cfg.mask_weight * (mask_loss(out.bus_mask[have], masks[have, 0])
                                                     + mask_loss(out.cdfi_mask[have], masks[have, 1]))
        if anchor is not None:
            loss = loss + proximal_term(model, anchor, mu)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total_loss += loss.item() * len(target)
        correct += int((out.logits.argmax(1) == target).sum())
        seen += len(target)
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.2f}")
    return EpochStats(epoch + 1, total_loss / seen, correct / seen, seen, lr)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice of node-mask logits (B, 1, h, w) against masks (B, S, S)
    in [0, 1], averaged down to the logits' size."""
    truth = nn.functional.adaptive_avg_pool2d(target[:, None], (logits.shape[-2], logits.shape[-1]))
    logits = logits.float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, truth)
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * truth).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + truth.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def train_phases(model: CLAHDM, shared_rounds: int, shared: Callable[[], SubModel],
                 train_phase: Callable[[str, nn.Module], None],
                 untrained: Callable[[str], bool] = lambda key: True, localiser_rounds: int = 0) -> None:
    """Every run's phase order, federated or not: the shared 4-class network first (when it has
    rounds), whose weights then start each sub-model that has not trained yet; then each sub-model;
    then the node localiser (when it has rounds), marked trained once its phase is complete.

    Args:
        shared: builds (or, on resume, reloads) the shared network; not called without a shared phase.
        train_phase: trains one phase's network in place, `train_phase(phase, network)`; it may leave
            the localiser's phase untrained when no site has ROIs to learn from.
        untrained: whether a phase has no completed round (a resumed run keeps trained ones).
    """
    if shared_rounds > 0:
        network = shared()
        train_phase(SHARED, network)
        for level in LEVELS:
            if untrained(level.key):
                model.submodel(level.key).initialise_from(network)
    for level in LEVELS:
        train_phase(level.key, model.submodel(level.key))
    if localiser_rounds > 0:
        train_phase(LOCALISER, model.localiser)
        if not untrained(LOCALISER):
            model.localiser_trained.fill_(1.0)


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


def predict_probabilities(model: SubModel, dataset: CaseDataset, batch_size: int = 32,
                          device: torch.device | None = None, mirror: bool = False) -> np.ndarray:
    """Softmax of the fused head (n, n_classes) for every case of `dataset` (in its order); with
    `mirror`, of the logits averaged with the mirrored images' as CLAHDM reads them
    (ModelConfig.mirror_average)."""
    device = device or resolve_device()
    model.to(device)
    out = []
    with evaluating(model):
        for bus, cdfi, _ in DataLoader(dataset, batch_size=batch_size):
            out.append(torch.softmax(view_logits(model, bus.to(device), cdfi.to(device), mirror), 1).cpu())
    return _cat(out, torch.float32).reshape(-1, model.n_classes)


def predict_submodel(model: SubModel, dataset: CaseDataset, batch_size: int = 32,
                     device: torch.device | None = None, mirror: bool = False) -> Predictions:
    """P(positive class) of one sub-model for every case of `dataset` (in its order)."""
    proba = predict_probabilities(model, dataset, batch_size, device, mirror)
    return Predictions([c.case_id for c in dataset.cases], dataset.targets(), proba[:, 1].astype(np.float32))


def predict_clahdm(model: CLAHDM, dataset: CaseDataset, batch_size: int = 32,
                   device: torch.device | None = None, num_workers: int = 0) -> Predictions:
    """Soft and hard 4-class probabilities and each level's probability for every case."""
    device = device or resolve_device()
    model.to(device)
    soft, hard, levels, targets = [], [], [], []
    with evaluating(model):
        for bus, cdfi, target in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
            out = model(bus.to(device), cdfi.to(device))
            soft.append(out.soft.cpu())
            hard.append(out.hard.cpu())
            levels.append(out.levels.cpu())
            targets.append(target)
    return Predictions([c.case_id for c in dataset.cases], _cat(targets, torch.long), _cat(soft, torch.float32),
                       _cat(hard, torch.float32), _cat(levels, torch.float32))


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
    return torch.cat(parts).to(dtype).numpy() if parts else np.zeros((0,), dtype=np.float32)
