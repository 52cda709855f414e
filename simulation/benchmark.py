"""`python -m simulation.benchmark`: how fast the federation runs on this machine, and where time goes.

Prints the bootstrap time of a site's evaluation, then three tables:
  1. training samples/s of the client's loop (data pipeline, augmentation, deep supervision)
     against a bare forward/backward loop over the same model and batch size (their ratio);
  2. per round of a short simulated federation: seconds, local compute, everything else, bytes
     each site sends and receives, peak memory of a site process;
  3. the same per sub-model averages.
Figures only: nothing here asserts a target (targets are judged by people reading the table).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from common.config import PROFILES


def bare_loop(profile, batch_size: int, steps: int, device: torch.device) -> float:
    """Samples/s of forward + backward + Adam step on random tensors (no data pipeline)."""
    from common.model import SubModel

    model = SubModel(profile.model).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    size = profile.data.input_size
    x = torch.randn(batch_size, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    for step in range(steps + 1):
        if step == 1:  # the first step pays one-off allocation costs
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x, x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def forward_ms_per_case(profile_name: str, batch_size: int = 8, repeats: int = 3) -> float:
    """CPU/GPU inference time of the whole CLA-HDM (three sub-models), ms per case, random init."""
    from common.config import get_profile
    from common.model import CLAHDM
    from common.training import resolve_device

    profile = get_profile(profile_name, {"model": {"pretrained": "none"}})
    device = resolve_device("auto")
    model = CLAHDM(profile.model).to(device).eval()
    x = torch.randn(batch_size, 3, profile.data.input_size, profile.data.input_size, device=device)
    times = []
    with torch.inference_mode():
        model(x, x)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / batch_size)
    return 1000 * min(times)


def client_loop(profile, manifest: Path, device: torch.device, epochs: int) -> float:
    """Samples/s of common.training.train_submodel on real (synthetic) cases, images cached."""
    from common.dataset import CaseDataset
    from common.labels import LEVELS
    from common.model import SubModel
    from common.training import train_submodel
    from common.validation import load_cases

    dataset = CaseDataset(load_cases(manifest), profile.data, level=LEVELS[0], train=True)
    model = SubModel(profile.model)
    cfg = replace(profile.train, progress=False)
    train_submodel(model, dataset, cfg, epochs=1, device=device)  # decode and cache the images once
    start = time.perf_counter()
    train_submodel(model, dataset, cfg, epochs=epochs, device=device)
    return epochs * len(dataset) / (time.perf_counter() - start)


def round_table(run_dir: Path) -> list[dict]:
    from server import run_dir as rd
    return rd.read_jsonl(run_dir / rd.METRICS_FILE)


def bootstrap_seconds(n_resamples: int = 1000) -> float:
    """Seconds for every figure's bootstrap CI on a cohort shaped like hospital 1's 2021 test (n = 171)."""
    import numpy as np

    from common.bootstrap import bootstrap_ci

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), (50, 7, 15, 99))
    logits = rng.normal(size=(y.size, 4))
    logits[np.arange(y.size), y] += 1.5
    proba = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    started = time.perf_counter()
    bootstrap_ci("cohort", y, proba, n_resamples=n_resamples, rng=0)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=tuple(PROFILES))
    parser.add_argument("--preset", default="small", choices=("small", "paper"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="steps of the bare loop")
    parser.add_argument("--out", default=None, help="keep the simulated run here (default: a temp folder)")
    parser.add_argument("--forward", action="store_true",
                        help="also time CLA-HDM inference for every profile (resnet50 at 224 px included)")
    args = parser.parse_args(argv)

    from common.config import get_profile
    from common.training import resolve_device
    from server.settings import Settings
    from simulation.runner import Federation, simulate, synthetic_data

    profile = get_profile(args.profile)
    device = resolve_device("auto")
    if args.forward:
        print(f"\n== CLA-HDM inference ({device}, {torch.get_num_threads()} threads, batch 8)")
        for name in PROFILES:
            p = get_profile(name)
            print(f"{name:<8} {p.model.backbone} at {p.data.input_size} px: {forward_ms_per_case(name):7.0f} ms/case")
    print(f"\n== evaluation: every figure's 95 % bootstrap CI (1000 resamples, 171 cases): "
          f"{bootstrap_seconds():.1f} s (target: seconds, not minutes)")
    threads = os.cpu_count() or 1  # as one simulated site gets by default (sites train one after another)
    torch.set_num_threads(threads)
    manifests = synthetic_data(args.preset, 0)
    bare = bare_loop(profile, profile.train.batch_size, args.steps, device)
    ours = client_loop(profile, manifests["hospital1"], device, epochs=1)
    print(f"\n== training throughput ({args.profile} profile, {device}, {threads} threads, "
          f"batch {profile.train.batch_size})")
    print(f"bare forward/backward: {bare:8.1f} samples/s")
    print(f"client training loop:  {ours:8.1f} samples/s   ratio {ours / bare:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.out or tmp) / "bench"
        settings = Settings(profile=args.profile, rounds=args.rounds, shared_rounds=min(1, args.rounds),
                            localiser_rounds=min(1, args.rounds), local_epochs=1, run_dir=str(run_dir),
                            bootstrap=100, connect_timeout=120.0)
        started = time.perf_counter()
        simulate(run_dir, settings, Federation(heatmaps_per_class=0), manifests, ["federated"])
        total = time.perf_counter() - started
        rows = round_table(run_dir)
    print(f"\n== simulated federation: {args.preset} data, 3 sites, {args.rounds} rounds per sub-model, "
          f"{total:.0f} s in all (Ray start-up and the final evaluation included)")
    print(f"{'sub-model':<10} {'round':>5} {'round s':>8} {'compute s':>9} {'other s':>8} {'other %':>7} "
          f"{'MB sent/site':>12} {'MB recv/site':>12} {'peak RSS MB':>11}")
    slots = max(1, min(3, os.cpu_count() or 1))  # simulated sites that can train at once (1 core each)
    shares = []
    for row in rows:
        peak = max((s.get("peak_rss_bytes", 0) for s in row["sites"].values()), default=0)
        # On fewer cores than sites, sites queue: local compute is at least total / parallel slots.
        compute = max(row["compute_seconds"], row.get("compute_seconds_total", 0.0) / slots)
        other = max(0.0, row["round_seconds"] - compute)
        shares.append(other / row["round_seconds"])
        print(f"{row['level']:<10} {row['round']:>5} {row['round_seconds']:>8.1f} {compute:>9.1f} "
              f"{other:>8.1f} {100 * other / row['round_seconds']:>6.1f}% {row['bytes_sent_per_site'] / 1e6:>12.1f} "
              f"{row['bytes_received_per_site'] / 1e6:>12.1f} {peak / 1e6:>11.0f}")
    print(f"mean share of a round outside local compute: {100 * statistics.mean(shares):.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
