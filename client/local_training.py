"""One site's part of a federated round: train one phase's network on the local cases, report counts."""
from __future__ import annotations

import os
import resource
import time
from dataclasses import replace

import numpy as np
import torch
from flwr.app import ArrayRecord

from client import optimizer_store
from client.disclosure import shareable_validation
from common import federated_validation as fv
from common import messages as msg
from common.config import Profile, TrainConfig
from common.dataset import CaseDataset
from common.errors import ProtocolError
from common.labels import CLASS_INDEX, GATE_PHASE, LOCALISER, check_phase, phase_level
from common.localiser import LocaliserDataset, NodeLocaliser
from common.localiser_training import train_localiser
from common.model import SubModel
from common.site import SiteData
from common.training import predict_probabilities, resolve_device, train_submodel


def show_progress() -> bool:
    """Progress bars help a hospital's operator; the simulation turns them off (CLAFED_PROGRESS=0)."""
    return os.environ.get("CLAFED_PROGRESS", "1") != "0"


def phase_network(profile: Profile, phase: str) -> SubModel | NodeLocaliser:
    """The network a phase trains: a binary sub-model, the 4-class shared one, or the localiser
    (random init: the weights come from the server)."""
    if check_phase(phase) == LOCALISER:  # unknown phases are refused by name
        return NodeLocaliser(profile.model.localiser_backbone)
    if phase_level(phase):
        return SubModel(profile.model)
    return SubModel(profile.model, n_classes=4, mask_heads=profile.train.mask_target)


def local_train_config(profile: Profile, site: SiteData, seed: int) -> TrainConfig:
    """The training configuration a site uses for one round, with one stated precedence.

    1. The profile the server sends (a named profile with the coordinator's run-config overrides:
       schedule, learning rate, batch size, balance...) decides everything about how to train,
       so every site trains alike.
    2. The site YAML decides only where it runs: `device` and `num_workers` (its `batch_size` is
       for local inference, never training).
    3. The environment decides only what is shown: progress bars (CLAFED_PROGRESS; the
       simulation turns them off) and, in simulation, torch threads (CLAFED_TORCH_THREADS).
    `seed` is the round's seed (the run's seed and the round number).
    """
    return replace(profile.train, seed=seed, num_workers=site.config.num_workers, device=site.config.device,
                   progress=show_progress())


def train_round(site: SiteData, instruction: msg.PhaseInstruction, arrays: ArrayRecord,
                run_id: int | None = None) -> tuple[ArrayRecord, dict[str, float | int]]:
    """Train the received network of the instruction's phase locally; return its weights with
    aggregate figures only.

    With `transfer` fp16 the reply holds the update (trained minus received weights) in fp16. With
    `validate_received` the figures also hold validation_figures of the received weights.
    Round r of the phase's `rounds` covers that share of its learning-rate schedule, so a resumed
    run continues the same curve. With the Flower run's `run_id`, the site's AdamW state carries
    over from the previous round of the phase (client/optimizer_store.py, on the site's disk).
    A site without cases of this phase returns the weights unchanged with 0 examples, which the
    server leaves out of the average.
    """
    phase, profile, server_round, rounds = (instruction.phase, instruction.profile, instruction.round,
                                            instruction.rounds)
    if not 1 <= server_round <= rounds:
        raise ProtocolError(f"round {server_round} lies outside the phase's {rounds} rounds")
    model = phase_network(profile, phase)
    received = msg.arrays_to_state(arrays, model.state_dict())
    model.load_state_dict(received)
    # The previous round's global network, scored before it trains (no separate validate message).
    validating = time.perf_counter()
    validation = (validation_figures(site, phase, profile, model)
                  if instruction.validate_received and isinstance(model, SubModel) else {})
    validation_seconds = time.perf_counter() - validating
    seed = instruction.seed + 1000 * server_round
    cfg = local_train_config(profile, site, seed)
    device = resolve_device(cfg.device)
    dataset = (site.localiser_dataset(profile.data, seed=seed) if isinstance(model, NodeLocaliser)
               else site.train_dataset(phase_level(phase), profile.data, seed=seed, masks=model.has_mask_heads))
    # Images come from the site's disk cache after the first round (decoding is not training).
    prepared = time.perf_counter()
    site.prepare(dataset)
    started = time.perf_counter()
    carry = (optimizer_store.load(site.config.output_dir, run_id, phase, server_round)
             if run_id is not None else None)
    options = dict(epochs=cfg.epochs, device=device, proximal_mu=instruction.proximal_mu,
                   desc=f"{site.config.name} {phase} round {server_round}",
                   span=((server_round - 1) / rounds, server_round / rounds), carry=carry)
    if isinstance(model, NodeLocaliser):
        assert isinstance(dataset, LocaliserDataset)
        history = train_localiser(model, dataset, cfg, **options)
    else:
        assert isinstance(dataset, CaseDataset)
        history = train_submodel(model, dataset, cfg, **options)
    if carry is not None:
        optimizer_store.save(site.config.output_dir, run_id, phase, server_round, rounds, carry)
    seconds = time.perf_counter() - started
    last = history[-1] if history else None
    figures = {msg.NUM_EXAMPLES: len(dataset), "loss": last.loss if last else 0.0,
               "accuracy": last.accuracy if last else 0.0, "train_seconds": seconds, "epochs": len(history),
               "prepare_seconds": started - prepared, "validation_seconds": validation_seconds,
               "lr": last.lr if last else 0.0,
               # ru_maxrss is in KiB on Linux: the site process's peak memory so far
               "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               # The same figures from every site, GPU or not (0 without one).
               "peak_gpu_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else 0}
    figures |= {msg.VALIDATION_PREFIX + key: value for key, value in validation.items()}
    trained = model.cpu().state_dict()
    reply = msg.update_arrays(trained, received) if instruction.transfer == "fp16" else msg.state_to_arrays(trained)
    return reply, figures


def validate_round(site: SiteData, instruction: msg.PhaseInstruction, arrays: ArrayRecord) -> dict[str, float | int]:
    """Score the round's global network of the instruction's phase on the site's validation cases.

    Returns aggregate figures only (summed loss, counts, score histograms per class; see
    common.federated_validation); a site without validation cases returns zero counts.
    """
    phase, profile = instruction.phase, instruction.profile
    model = phase_network(profile, phase)
    if not isinstance(model, SubModel):
        raise ProtocolError(f"the {phase} phase has no federated validation")
    model.load_state_dict(msg.arrays_to_state(arrays, model.state_dict()))
    return validation_figures(site, phase, profile, model)


def validation_figures(site: SiteData, phase: str, profile: Profile, model: SubModel) -> dict[str, float | int]:
    """Aggregate validation figures of `model` (the network of `phase`) on the site's validation cases."""
    dataset = site.validation_dataset(phase_level(phase), profile.data)
    site.prepare(dataset)
    proba = predict_probabilities(model, dataset, batch_size=site.config.batch_size,
                                  device=resolve_device(site.config.device),
                                  mirror=profile.model.mirror_average)  # (0, n_classes) without cases
    targets = dataset.targets()
    loss_sum = float(-np.log(np.clip(proba[np.arange(len(targets)), targets], 1e-7, 1.0)).sum())
    figures = fv.site_figures(targets, proba, loss_sum)
    if phase == GATE_PHASE:  # the gate's scores per 4-class label: thresholds chosen for the gated answer
        labels = np.array([CLASS_INDEX[c.label] for c in dataset.cases], dtype=int)
        figures |= fv.gate_figures(labels, proba[:, 1] if len(proba) else np.zeros(0))
    return shareable_validation(figures, site.config.min_cohort)
