"""One site's part of a federated round: train one sub-model on the local cases, report counts."""
from __future__ import annotations

import os
import resource
import time
from dataclasses import replace

import torch
from flwr.app import ArrayRecord

from common import messages as msg
from common.config import Profile
from common.labels import Level
from common.model import SubModel
from common.site import SiteData
from common.training import resolve_device, train_submodel


def show_progress() -> bool:
    """Progress bars help a hospital's operator; the simulation turns them off (CLAFED_PROGRESS=0)."""
    return os.environ.get("CLAFED_PROGRESS", "1") != "0"


def train_round(site: SiteData, level: Level, profile: Profile, arrays: ArrayRecord, *, epochs: int,
                seed: int, server_round: int, proximal_mu: float = 0.0) -> tuple[ArrayRecord, dict[str, float | int]]:
    """Train the received sub-model locally and return its weights with aggregate figures only.

    A site without cases of this level returns the weights unchanged with 0 examples, which
    the server leaves out of the average.
    """
    model = SubModel(replace(profile.model, pretrained="none"))  # weights come from the server
    model.load_state_dict(msg.arrays_to_state(arrays, model.state_dict()))
    dataset = site.train_dataset(level, profile.data, seed=seed + 1000 * server_round)
    cfg = replace(profile.train, seed=seed + 1000 * server_round, batch_size=site.config.batch_size,
                  num_workers=site.config.num_workers, device=site.config.device, progress=show_progress())
    device = resolve_device(site.config.device)
    started = time.perf_counter()
    history = train_submodel(model, dataset, cfg, epochs=epochs, device=device, proximal_mu=proximal_mu,
                             desc=f"{site.config.name} {level.key} round {server_round}")
    seconds = time.perf_counter() - started
    last = history[-1] if history else None
    figures = {msg.NUM_EXAMPLES: len(dataset), "loss": last.loss if last else 0.0,
               "accuracy": last.accuracy if last else 0.0, "train_seconds": seconds, "epochs": len(history),
               # ru_maxrss is in KiB on Linux: the site process's peak memory so far
               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device.type == "cuda":
        figures["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return msg.state_to_arrays(model.cpu().state_dict()), figures
