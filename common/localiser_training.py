"""Local training of the node localiser: one site's epochs of its phase, like a sub-model's.

The same schedule (one warm-up + cosine curve over the phase's rounds), AdamW carry and FedProx
term as `common.training.train_submodel`; the loss is the box loss, and the "accuracy" a site
reports is the share of its training boxes found with IoU >= 0.5 (an aggregate, like a
sub-model's accuracy).
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_convert, box_iou
from tqdm.auto import tqdm

from common.config import TrainConfig
from common.localiser import LocaliserDataset, NodeLocaliser, localiser_loss
from common.training import (
    EpochStats,
    OptimizerCarry,
    carried_state,
    proximal_term,
    resolve_device,
    restore_optimizer,
    seed_everything,
    set_scheduled_lr,
)

# A proposed box "finds" the node when it overlaps the drawn one this much (the detection convention).
FOUND_IOU = 0.5


def train_localiser(model: NodeLocaliser, dataset: LocaliserDataset, cfg: TrainConfig, epochs: int | None = None,
                    device: torch.device | None = None, proximal_mu: float = 0.0, desc: str = "localiser",
                    span: tuple[float, float] = (0.0, 1.0), carry: OptimizerCarry | None = None) -> list[EpochStats]:
    """Train the localiser in place on a site's boxes; one EpochStats per epoch ([] without cases)."""
    if len(dataset) == 0:
        return []
    device = device or resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model.to(device).train()
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                        num_workers=cfg.num_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if carry is not None and carry.state is not None:
        restore_optimizer(optimizer, carry.state)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    n_epochs = epochs if epochs is not None else cfg.epochs
    steps, step, history = max(1, n_epochs * len(loader)), 0, []
    for epoch in range(n_epochs):
        dataset.set_epoch(epoch)
        total, found, seen, lr = 0.0, 0, 0, 0.0
        for image, target in tqdm(loader, desc=f"{desc} epoch {epoch + 1}", disable=not cfg.progress, leave=False):
            lr = set_scheduled_lr(optimizer, cfg, span, step, steps)
            step += 1
            image, target = image.to(device), target.to(device)
            pred = model(image)
            loss = localiser_loss(pred, target)
            if anchor is not None:
                loss = loss + proximal_term(model, anchor, proximal_mu)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(target)
            found += int((_iou(pred.detach(), target) >= FOUND_IOU).sum())
            seen += len(target)
        history.append(EpochStats(epoch + 1, total / seen, found / seen, seen, lr))
    if carry is not None:
        carry.state = carried_state(optimizer)
    return history


def _iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each predicted box with its own target (cx, cy, w, h)."""
    a, b = box_convert(pred, "cxcywh", "xyxy"), box_convert(target, "cxcywh", "xyxy")
    return box_iou(a, b).diagonal()
