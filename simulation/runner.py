"""Run the whole federation on one machine: data, site YAMLs, Flower's simulation runtime, baselines.

The virtual hospitals run exactly the ClientApp and ServerApp a deployment runs, submitted with
`flwr run` to a SuperLink of the run's own; only the transport differs (Ray actors instead of
SuperNodes over the network).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from common.config import ConfigError
from server import run_dir as rd
from server.federation import FederationError
from server.settings import ENV_RUN_CONFIG, Settings, run_config_toml

DEFAULT_CACHE = Path(os.environ.get("CLAFED_CACHE", Path.home() / ".cache" / "clafed"))


@dataclass(frozen=True)
class Federation:
    """What a simulated run needs besides the server settings."""

    protocol: str = "federated"  # federated: every site trains | paper: the first site trains alone
    holdout: str = "date:2021-01-01"  # date:YYYY-MM-DD | fraction:F (held-out part of training sites)
    heatmaps_per_class: int = 1
    device: str = "auto"
    # None: every core for each site, so sites train one after another. Their cohorts differ
    # five-fold, and side by side on a few cores the largest one decides the round while the
    # others' cores idle.
    cpus_per_client: float | None = None
    gpus_per_client: float = 0.0


def synthetic_data(preset: str = "paper", seed: int = 0, cache: Path = DEFAULT_CACHE) -> dict[str, Path]:
    """The synthetic hospitals, generated once into the cache folder."""
    from simulation.synth import generate

    folder = cache / "synth" / f"{preset}-seed{seed}"
    done = folder / "complete.json"
    if not done.is_file():
        print(f"generating synthetic '{preset}' data (seed {seed}) into {folder} ...", flush=True)
        manifests = generate(preset, seed, folder)
        done.write_text(json.dumps({k: str(v) for k, v in manifests.items()}))
    return {name: Path(path) for name, path in json.loads(done.read_text()).items()}


def site_manifests(data: str | None, run_dir: Path, *, preset: str = "paper", seed: int = 0, by: str | None = None,
                   like: str | None = None, dirichlet: float | None = None, sites: int = 3) -> dict[str, Path]:
    """The sites' manifests: synthetic (no data), a folder of site folders, or a split pooled manifest."""
    if data is None:
        return synthetic_data(preset, seed)
    path = Path(data)
    if path.is_dir():
        found = {p.parent.name: p for p in sorted(path.glob("*/manifest.csv"))}
        if not found:
            raise ConfigError(f"{path}: no <site>/manifest.csv inside; pass a folder of site folders or a pooled manifest")
        return found
    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file or folder")
    from simulation.split import split_pooled, write_split

    if by is None and dirichlet is None:
        like = like or "paper"  # the simulation's default split: the paper's three hospitals
    parts, how = split_pooled(path, by=by, like=like, dirichlet=dirichlet,
                              sites=sites if dirichlet is not None else None, seed=seed)
    return write_split(parts, path, run_dir / "data", how)


def holdout_rule(text: str) -> dict:
    """`date:2021-01-01` or `fraction:0.3` as a site YAML's holdout mapping."""
    kind, _, value = text.partition(":")
    if kind == "date" and value:
        return {"kind": "date", "date": value}
    if kind == "fraction" and value:
        return {"kind": "fraction", "fraction": float(value)}
    raise ConfigError(f"hold-out rule {text!r}: use date:YYYY-MM-DD or fraction:F")


def write_site_yamls(manifests: dict[str, Path], run_dir: Path, federation: Federation, batch_size: int) -> list[Path]:
    """One site YAML per virtual hospital, as a hospital would write it (roles by protocol)."""
    if federation.protocol not in ("federated", "paper"):
        raise ConfigError(f"unknown protocol {federation.protocol!r}: federated or paper")
    folder = run_dir / rd.SITES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, manifest) in enumerate(sorted(manifests.items())):
        trains = federation.protocol == "federated" or index == 0
        site = {
            "name": name, "manifest": str(Path(manifest).resolve()),
            "role": "train" if trains else "evaluate",
            "holdout": holdout_rule(federation.holdout) if trains else {"kind": "all"},
            "device": federation.device, "batch_size": batch_size,
            "heatmaps": {"mode": "per_class" if federation.heatmaps_per_class else "none",
                         "per_class": max(1, federation.heatmaps_per_class)},
            "output_dir": str((run_dir / rd.SITE_OUTPUTS_DIR / name).resolve()),
            # Every virtual site lives on this machine: nothing is disclosed by returning every
            # figure, which a researcher wants even for small cohorts (real sites keep the defaults).
            "min_cohort": 1, "min_cell": 1,
        }
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(site, sort_keys=False))
        paths.append(path)
    return paths


def run_federated(settings: Settings, site_yamls: list[Path], federation: Federation, verbose: bool = False) -> Path:
    """Run ServerApp + one virtual SuperNode per site on a local SuperLink in simulation mode."""
    from client.site_context import ENV_SITES
    from simulation.flower_run import COMPLETED, run_and_follow
    from simulation.local_superlink import start_superlink, stop_superlink
    from simulation.run_view import RunView, phase_rounds

    run_dir = Path(settings.run_dir)
    cpus = os.cpu_count() or 1
    # Flower's federation config counts whole cores per virtual SuperNode.
    per_client = max(1, int(federation.cpus_per_client or cpus))
    gpus = _gpu_count()
    env = {k: v for k, v in os.environ.items() if k != ENV_RUN_CONFIG}  # the settings go as the run config
    env.update({ENV_SITES: json.dumps([str(p.resolve()) for p in site_yamls]),
                "CLAFED_PROGRESS": "0",  # interleaved bars from several virtual sites are unreadable
                "CLAFED_TORCH_THREADS": str(per_client)})
    simulation_config = {"num-supernodes": len(site_yamls), "client-resources-num-cpus": per_client,
                         "client-resources-num-gpus": float(federation.gpus_per_client if gpus else 0.0),
                         "init-args-num-cpus": cpus, "init-args-num-gpus": gpus, "verbose": verbose}
    completed = rd.read_json(run_dir / rd.STATE_FILE, {}).get("completed", {}) if settings.resume else {}
    view = RunView(phase_rounds(settings.build_profile().train), completed, verbose=verbose)
    link = start_superlink(run_dir, env)
    try:
        run_config = link.folder / "run_config.toml"
        run_config.write_text(run_config_toml(settings))
        _, status, details = run_and_follow(link, run_config, simulation_config, view.line)
    finally:
        view.close()
        stop_superlink(link)
    # A run that finished with site problems keeps its records (rd.run_problems reads them for
    # the summary and the exit code); one that stopped early is the caller's error.
    if status != COMPLETED and not rd.read_json(run_dir / rd.RUN_FILE, {}).get("finished"):
        raise FederationError(f"the federated run {status.split(':')[-1] or 'ended'}: {details or 'no details'} "
                              f"(Flower's log: {link.run_log})")
    return run_dir


def _gpu_count() -> int:
    import torch
    return torch.cuda.device_count()


def mode_dir(run_dir: Path, modes: list[str], mode: str) -> Path:
    """A single mode writes into RUN_DIR itself; a comparison gives each mode its sub-folder."""
    return run_dir if len(modes) == 1 else run_dir / mode


def simulate(run_dir: Path, settings: Settings, federation: Federation, manifests: dict[str, Path],
             modes: list[str], verbose: bool = False) -> dict[str, Path]:
    """Run each requested mode on identical site splits; returns {mode: its run folder}."""
    from simulation.baselines import run_local, run_pooled

    done = {}
    for mode in modes:
        folder = mode_dir(run_dir, modes, mode)
        if (folder / rd.STATE_FILE).is_file() and not settings.resume:
            raise ConfigError(f"{folder} already holds a run: resume it with --resume or choose another --out")
        folder.mkdir(parents=True, exist_ok=True)
        site_yamls = write_site_yamls(manifests, folder, federation, batch_size=settings.build_profile().train.batch_size)
        # Every site started here must take part: a site that fails to load stops the run.
        mode_settings = replace(settings, run_dir=str(folder.resolve()), min_sites=len(site_yamls))
        if mode == "federated":
            run_federated(mode_settings, site_yamls, federation, verbose)
        elif mode == "pooled":
            run_pooled(mode_settings, site_yamls, folder)
        elif mode == "local":
            run_local(mode_settings, site_yamls, folder)
        else:
            raise ConfigError(f"unknown mode {mode!r}: federated, pooled or local")
        # The simulation's own description of the run (mode, protocol, data).
        rd.update_run_info(folder, mode=mode, protocol=federation.protocol, holdout=federation.holdout)
        done[mode] = folder
    write_references(run_dir, site_yamls, manifests)
    return done


def write_references(run_dir: Path, site_yamls: list[Path], manifests: dict[str, Path]) -> None:
    """The histogram floor and (synthetic data) drawn-feature ceiling on the run's own split."""
    from simulation.baselines import load_sites
    from simulation.references import write_references as write

    folders = {Path(m).resolve().parent.parent for m in manifests.values()}
    data_dir = folders.pop() if len(folders) == 1 else None
    try:
        write(run_dir, load_sites(site_yamls), data_dir)
    except (ValueError, RuntimeError, OSError) as err:  # e.g. one class only: the run's results still stand
        print(f"references not computed ({err}); the run's results are complete", flush=True)
