"""`python -m simulation.deploy_benchmark`: where a round's time goes on a real (loopback) deployment.

Starts a SuperLink with TLS and node authentication and three SuperNodes through `clafed server` /
`clafed client` (simulation/loopback.py), submits a run with `flwr run`, and prints per round:
the time from one round's end to the next (the previous round's validation exchange plus this
round's training exchange), the slowest site's local training, and everything else (Flower's
message delivery, starting the ClientApp, loading the site, decoding images, validation). The
first round of a phase has no previous round to measure from and is left out.

    python -m simulation.deploy_benchmark --profile tiny --preset small --rounds 3
    python -m simulation.deploy_benchmark --profile cpu --rounds 2            # the default data
    python -m simulation.deploy_benchmark --profile tiny --cold               # Flower's cold start
    python -m simulation.deploy_benchmark --profile tiny --transfer fp16      # half the bytes

Figures only: the targets (cpu ≤ 10 % outside local compute, tiny ≤ 5 s) are judged by reading.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common.config import PROFILES


def round_rows(run_dir: Path) -> list[dict]:
    """Per round after a phase's first: wall seconds since the previous round, compute, the rest."""
    from server import run_dir as rd

    rows, previous = [], {}
    for record in rd.read_jsonl(run_dir / rd.METRICS_FILE):
        ended = record["finished_at"]  # seconds since the epoch, when the round's average was taken
        if record["level"] in previous:
            wall = ended - previous[record["level"]]
            compute = record["compute_seconds"]
            prepare = max((s.get("prepare_seconds", 0.0) for s in record["sites"].values()), default=0.0)
            rows.append({"level": record["level"], "round": record["round"], "wall": wall, "compute": compute,
                         "other": max(0.0, wall - compute), "prepare": prepare,
                         "mb_up": record["bytes_sent_per_site"] / 1e6,
                         "mb_down": record["bytes_received_per_site"] / 1e6})
        previous[record["level"]] = ended
    return rows


def wait_for_run(run_dir: Path, deployment, timeout: float) -> None:
    """Until the run has written its final evaluation (or a recorded failure), else raise."""
    from server import run_dir as rd

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = rd.read_json(run_dir / rd.RUN_FILE, {})
        if info.get("finished") or (run_dir / "evaluation_failures.json").is_file():
            return
        if not deployment.superlink.alive():
            raise RuntimeError(f"the SuperLink stopped:\n{deployment.procs.dump()}")
        time.sleep(1.0)
    raise RuntimeError(f"the run did not finish within {timeout:.0f} s:\n{deployment.procs.dump()}")


def run_benchmark(base: Path, profile: str, preset: str, rounds: int, cold: bool, timeout: float,
                  transfer: str = "fp32") -> list[dict]:
    from simulation.loopback import REPO, Processes, run_flwr, start_deployment
    from simulation.runner import synthetic_data

    data = synthetic_data(preset, 0)
    folders = {Path(p).parent.parent for p in data.values()}
    procs = Processes(base / "logs")
    try:
        deployment = start_deployment(base, folders.pop(), procs=procs, client_args=("--cold",) if cold else ())
        run_dir = base / "run"
        config = (f'profile="{profile}" rounds={rounds} shared-rounds={rounds} localiser-rounds=0 '
                  f'transfer="{transfer}" '
                  f'run-dir="{run_dir}" signing-key="{deployment.creds.signing_key}" min-sites=3 bootstrap=50 '
                  f'connect-timeout=120.0 round-timeout={timeout} eval-timeout={timeout}')
        submitted = run_flwr(["run", str(REPO), deployment.federation, "--run-config", config], deployment.home,
                             300, cwd=base)
        if submitted.returncode != 0:
            raise RuntimeError(f"flwr run failed:\n{submitted.stdout}")
        wait_for_run(run_dir, deployment, timeout * (3 * rounds + 2))
        return round_rows(run_dir)
    finally:
        procs.stop_all()


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n== {title}")
    print(f"{'sub-model':<10} {'round':>5} {'round s':>8} {'compute s':>9} {'other s':>8} {'other %':>7} "
          f"{'decode s':>8} {'MB up/site':>10} {'MB down/site':>12}")
    for r in rows:
        print(f"{r['level']:<10} {r['round']:>5} {r['wall']:>8.1f} {r['compute']:>9.1f} {r['other']:>8.1f} "
              f"{100 * r['other'] / r['wall']:>6.1f}% {r['prepare']:>8.1f} {r['mb_up']:>10.1f} {r['mb_down']:>12.1f}")
    if rows:
        print(f"mean outside local compute: {statistics.mean(r['other'] for r in rows):.1f} s a round, "
              f"{100 * sum(r['other'] for r in rows) / sum(r['wall'] for r in rows):.1f} % of round time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.deploy_benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="tiny", choices=tuple(PROFILES))
    parser.add_argument("--preset", default=None, choices=("small", "paper"),
                        help="synthetic data (default: small for tiny, the default paper data otherwise)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per sub-model (and of the shared network)")
    parser.add_argument("--cold", action="store_true", help="start every ClientApp cold (clafed client --cold)")
    parser.add_argument("--transfer", default="fp32", choices=("fp32", "fp16"), help="how weights travel")
    parser.add_argument("--round-timeout", type=float, default=900.0)
    parser.add_argument("--out", default=None, help="keep the deployment's folder here (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (a phase's first round has nothing to measure from)")
    preset = args.preset or ("small" if args.profile == "tiny" else "paper")
    with tempfile.TemporaryDirectory(prefix="clafed-deploy-") as tmp:
        base = Path(args.out) if args.out else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        rows = run_benchmark(base, args.profile, preset, args.rounds, args.cold, args.round_timeout, args.transfer)
        total = time.perf_counter() - started
    starts = "cold" if args.cold else "warm"
    print_table(rows, f"loopback deployment: {args.profile} profile, {preset} data, 3 sites, {args.rounds} rounds per "
                      f"sub-model, {starts} ClientApps, {args.transfer} weights; {total:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
