"""The centralized (pooled) and single-site (local) baselines, on the federated run's exact splits.

Same sites, same hold-out rules, same training function, same number of epochs per sub-model
(shared rounds, then rounds x local epochs per sub-model, on the same learning-rate schedule),
same evaluation code: only where the training cases come from differs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from flwr.app import MetricRecord

from client.local_training import validation_figures
from common import messages as msg
from common.checkpoint import save_checkpoint
from common.dataset import CaseDataset
from common.labels import SHARED, phase_level
from common.localiser import LocaliserDataset, NodeLocaliser
from common.localiser_training import train_localiser
from common.model import CLAHDM, SubModel, initial_model, initial_shared_network
from common.site import SiteData
from common.training import OptimizerCarry, resolve_device, seed_everything, train_phases, train_submodel
from server import run_dir as rd
from server.federation import candidate_models
from server.recorder import RunRecorder
from server.records import RoundReport, SiteInfo
from server.settings import Settings


def load_sites(site_yamls: list[Path]) -> list[SiteData]:
    from common.config import load_site_config
    return [SiteData.load(load_site_config(p)) for p in site_yamls]


def site_infos(sites: list[SiteData]) -> list[SiteInfo]:
    return [SiteInfo(i, s.config.name, s.config.role, s.cohort(), s.counts()) for i, s in enumerate(sites)]


def train_centrally(settings: Settings, name: str, trainers: list[SiteData], folder: Path) -> CLAHDM:
    """Train every phase on the union of `trainers`' training cases, logged like federated rounds."""
    profile = settings.build_profile()
    recorder = RunRecorder.open(replace(settings, run_dir=str(folder), resume=False))
    recorder.started(site_infos(trainers), profile)
    seed_everything(settings.seed)
    model = initial_model(profile.model)
    device = resolve_device(trainers[0].config.device)
    cases = [c for site in trainers for c in site.train_cases]
    images: dict = {}  # decoded once for all phases, as a site does
    frames: dict = {}  # the localiser's whole frames, likewise

    def train_phase(phase: str, network: SubModel | NodeLocaliser) -> None:
        rounds = profile.train.phase_rounds(phase)
        localiser = isinstance(network, NodeLocaliser)
        if localiser:
            dataset = LocaliserDataset(cases, profile.data.localiser_size, train=True, seed=settings.seed,
                                       cache=frames)
        else:
            dataset = CaseDataset(cases, profile.data, level=phase_level(phase), train=True, seed=settings.seed,
                                  cache=images, masks=network.has_mask_heads)
        if localiser and len(dataset) == 0:
            return  # no ROIs: the model gets no localiser, as in a federated run
        carry = OptimizerCarry()  # one optimiser over the phase's rounds, as each federated site keeps its own
        for server_round in range(1, rounds + 1):
            seed = settings.seed + 1000 * server_round
            dataset.seed = seed
            cfg = replace(profile.train, seed=seed, progress=False)
            started = time.time()
            train = train_localiser if localiser else train_submodel
            history = train(network, dataset, cfg, epochs=profile.train.epochs, device=device,  # type: ignore[arg-type]
                            desc=f"{name} {phase} round {server_round}",
                            span=((server_round - 1) / rounds, server_round / rounds), carry=carry)
            finished = time.time()
            last = history[-1] if history else None
            figures = {msg.NUM_EXAMPLES: len(dataset), "loss": last.loss if last else 0.0,
                       "accuracy": last.accuracy if last else 0.0, "train_seconds": finished - started,
                       "lr": last.lr if last else 0.0}
            arrays = msg.state_to_arrays(network.cpu().state_dict())
            averaged = MetricRecord({"loss": figures["loss"], "accuracy": figures["accuracy"]})  # one "site"
            report = RoundReport(server_round, arrays, averaged, replies={0: figures}, started=started,
                                 finished=finished)
            recorder.round_completed(phase, server_round, model, report, {0: name},
                                     shared=network if phase == SHARED else None)
            if not localiser:
                recorder.validation_completed(phase, server_round, network.n_classes, {
                    site.config.name: validation_figures(site, phase, profile, network) for site in trainers},
                    network=network)

    train_phases(model, profile.train.shared_rounds, lambda: initial_shared_network(profile), train_phase,
                 untrained=lambda key: recorder.completed(key) == 0, localiser_rounds=profile.train.localiser_rounds)
    evaluated, candidates = candidate_models(settings, profile, model.cpu(), recorder)
    model = candidates[evaluated][0]
    save_checkpoint(folder / rd.MODEL_FILE, model, profile.data,
                    {"run": folder.name, "trained_on": name, "model": evaluated})
    recorder.finished()
    return model


def evaluate_at(model: CLAHDM, settings: Settings, site: SiteData, folder: Path) -> None:
    """Evaluate `model` on one site's held-out cohort with the site's own code; record it."""
    from client.evaluation import cases_with_boxes, evaluate_site

    profile = settings.build_profile()
    if not site.heldout_cases:
        return
    device = resolve_device(site.config.device)
    figures = evaluate_site(model, cases_with_boxes(model, site.heldout_cases, profile.data, device), profile.data,
                            site.config.output_dir / folder.name / "evaluation", n_resamples=settings.bootstrap,
                            seed=settings.seed, batch_size=site.config.batch_size, device=device)
    record = {"site": site.config.name, "role": site.config.role, "cohort": site.cohort(),
              "n_cases": int(figures.get("n_cases", 0)), "metrics": {k: float(v) for k, v in figures.items()}}
    rd.write_json(rd.evaluation_path(folder, site.config.name), record)


def run_pooled(settings: Settings, site_yamls: list[Path], folder: Path) -> None:
    """One model on every training site's cases pooled; evaluated at every site."""
    sites = load_sites(site_yamls)
    trainers = [s for s in sites if s.config.role == "train"]
    model = train_centrally(settings, "pooled", trainers, folder)
    rd.update_run_info(folder, sites=[asdict(i) for i in site_infos(sites)])
    for site in sites:
        evaluate_at(model, settings, site, folder)


def run_local(settings: Settings, site_yamls: list[Path], folder: Path) -> None:
    """One model per training site on its own cases, evaluated on its own held-out cohort."""
    sites = load_sites(site_yamls)
    for site in (s for s in sites if s.config.role == "train"):
        model = train_centrally(settings, site.config.name, [site], folder / rd.MODELS_DIR / site.config.name)
        evaluate_at(model, settings, site, folder)
    train = settings.build_profile().train
    rd.write_json(folder / rd.RUN_FILE, {
        "mode": "local", "profile": settings.profile, "rounds": train.rounds, "shared_rounds": train.shared_rounds,
        "local_epochs": train.epochs,
        "sites": [asdict(i) for i in site_infos(sites)]})
