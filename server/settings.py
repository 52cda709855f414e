"""The coordinator's run settings, read from Flower's run config (`flwr run --run-config ...`).

`clafed simulate` submits its settings as the run config too (run_config_toml). Settings may also
come as JSON in the CLAFED_RUN_CONFIG environment variable (a ServerApp started without a run
config); keys given in both places take the run config's value.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, Mapping

from common.config import ConfigError, Profile, get_profile
from common.typed_config import from_dict

ENV_RUN_CONFIG = "CLAFED_RUN_CONFIG"
# Fewer bootstrap resamples cannot give a confidence interval.
MIN_BOOTSTRAP = 10
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum")


@dataclass(frozen=True)
class Settings:
    """Everything that steers a federated run; every field can be set as a run-config key."""

    profile: str = "cpu"
    # Overrides of the profile's schedule (0, or -1 for shared_rounds and localiser_rounds, keeps
    # the profile's): federated rounds per sub-model, rounds of the shared 4-class phase, rounds of
    # the node localiser, local epochs per round.
    rounds: int = 0
    shared_rounds: int = -1
    localiser_rounds: int = -1
    local_epochs: int = 0
    # Overrides of the profile's learning rate and batch size (0 = keep the profile's).
    lr: float = 0.0
    batch_size: int = 0
    # Override of the shared phase's node-mask weight (-1 keeps the profile's; 0 switches it off).
    mask_weight: float = -1.0
    # fedmedian, fedtrimmedavg and krum are Flower's Byzantine-robust aggregators (they need
    # several training sites to mean anything).
    strategy: Literal["fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum"] = "fedavg"
    proximal_mu: float = 0.01  # FedProx only
    server_lr: float = 0.01  # FedAdam only (its eta)
    trim_beta: float = 0.2  # FedTrimmedAvg only: the fraction cut at each end
    krum_malicious: int = 0  # Krum only: how many sites may be malicious
    # A site's update larger, per training case, than this multiple of the round's median is
    # scaled down to it (needs two or more training sites; 0 switches clipping off).
    clip_factor: float = 3.0
    # Differential privacy of the published weights (server/privacy.py): Gaussian noise of
    # dp_noise x dp_clip (x the largest site weight) on each round's average, every site's update
    # clipped to L2 norm dp_clip first. 0 switches it off; fedavg and fedprox only.
    dp_noise: float = 0.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    # How weights travel in training and validation rounds: "fp16" halves the bytes each way (the
    # sites reply with fp16 updates; the server keeps and averages fp32). The final model always
    # goes out in fp32, as it was signed.
    transfer: Literal["fp32", "fp16"] = "fp32"
    # Sites: how many must be connected before the run starts, and how many training replies a
    # round needs to count (fewer: the run stops, resumable, instead of averaging one site).
    min_sites: int = 1
    min_train_sites: int = 1
    connect_timeout: float = 600.0
    round_timeout: float = 3600.0
    eval_timeout: float = 3600.0
    # Where the run's records go (a new timestamped folder under runs/ when empty).
    run_dir: str = ""
    resume: bool = False
    seed: int = 0
    # Bootstrap resamples for each site's confidence intervals.
    bootstrap: int = 1000
    # Coordinator's Ed25519 private key: the final model is signed with it when given.
    signing_key: str = ""
    # Local file of ImageNet-pretrained ResNet weights for the initial model (air-gapped servers).
    pretrained: str = ""
    # Which model the sites evaluate: each sub-model at its best round by pooled validation (temperature-scaled NLL)
    # ("best"), or at its last ("final"); the other is kept beside it (model_final.pt / model_best.pt).
    evaluate_model: Literal["best", "final"] = "best"
    # Fit each level's temperature on the pooled validation NLL (common/calibration.py): the same
    # calls, other probabilities. Off by default: on the default data (a few dozen validation
    # cases per level) it made the sub-models' held-out calibration worse (see the README).
    temperature_scaling: bool = False
    # How the gated answer's three decision thresholds are set (server/recorder.py): "auto" chooses
    # them on the pooled validation scores only when every class has enough validation cases
    # (fv.MIN_CLASS_CASES), else keeps the trained 0.5; "joint" always chooses them together for
    # the gated answer's balanced accuracy, "youden" level by level, "fixed" never.
    thresholds: Literal["auto", "joint", "youden", "fixed"] = "auto"
    # Stop before round 1 when the preflight finds a training site without any case of a class it
    # is meant to train (otherwise a warning).
    stop_on_missing_class: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.local_epochs < 0 or self.shared_rounds < -1 or self.localiser_rounds < -1:
            raise ConfigError(f"rounds and local_epochs must be >= 1 (0: the profile's), shared_rounds and "
                              f"localiser_rounds >= 0 (-1: the profile's); got {self.rounds}, {self.local_epochs}, "
                              f"{self.shared_rounds}, {self.localiser_rounds}")
        if self.min_train_sites < 1 or self.min_sites < 1:
            raise ConfigError("min_sites and min_train_sites must be >= 1")
        # Checked before any site is contacted: a bad value must not cost a trained run.
        ranges = {
            "lr": self.lr >= 0, "batch_size": self.batch_size >= 0, "proximal_mu": self.proximal_mu >= 0,
            "mask_weight": self.mask_weight >= 0 or self.mask_weight == -1,
            "server_lr": self.server_lr > 0, "trim_beta": 0 <= self.trim_beta < 0.5,
            "krum_malicious": self.krum_malicious >= 0, "clip_factor": self.clip_factor >= 0,
            "connect_timeout": self.connect_timeout > 0, "round_timeout": self.round_timeout > 0,
            "eval_timeout": self.eval_timeout > 0, "seed": self.seed >= 0,
            "bootstrap": self.bootstrap >= MIN_BOOTSTRAP, "dp_noise": self.dp_noise >= 0,
            "dp_clip": self.dp_clip > 0, "dp_delta": 0 < self.dp_delta < 1,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in ranges.items() if not ok]
        if bad:
            raise ConfigError(f"run config out of range: {', '.join(bad)} (lr, batch_size, proximal_mu, seed, "
                              f"krum_malicious, clip_factor >= 0; mask_weight >= 0 or -1 (the profile's); "
                              f"server_lr and timeouts > 0; trim_beta in [0, 0.5); "
                              f"bootstrap >= {MIN_BOOTSTRAP}; dp_noise >= 0, dp_clip > 0, dp_delta in (0, 1))")
        if self.dp_noise > 0 and self.strategy not in ("fedavg", "fedprox"):
            raise ConfigError(f"dp_noise works with fedavg or fedprox (a noised weighted mean), not {self.strategy}")
        get_profile(self.profile)  # unknown profile names fail here, before any site is contacted

    def build_profile(self) -> Profile:
        """The profile with this run's overrides applied."""
        train, model = {}, {}
        if self.rounds > 0:
            train["rounds"] = self.rounds
        if self.shared_rounds >= 0:
            train["shared_rounds"] = self.shared_rounds
        if self.localiser_rounds >= 0:
            train["localiser_rounds"] = self.localiser_rounds
        if self.local_epochs > 0:
            train["epochs"] = self.local_epochs
        if self.lr > 0:
            train["lr"] = self.lr
        if self.batch_size > 0:
            train["batch_size"] = self.batch_size
        if self.mask_weight >= 0:
            train["mask_weight"] = self.mask_weight
        if self.pretrained:
            model["pretrained"] = self.pretrained
        return get_profile(self.profile, {"train": train, "model": model})

    def run_path(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        import datetime as dt
        return Path("runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def load_settings(run_config: Mapping[str, object], environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the environment's JSON (simulation) overlaid with Flower's run config.

    Keys may be written with dashes or underscores (`local-epochs` or `local_epochs`).
    """
    merged: dict[str, object] = {}
    if environ.get(ENV_RUN_CONFIG):
        try:
            merged.update(json.loads(environ[ENV_RUN_CONFIG]))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{ENV_RUN_CONFIG} is not valid JSON: {err}") from None
    merged.update(run_config)
    values = {str(k).replace("-", "_"): v for k, v in merged.items()}
    return from_dict(Settings, values, "run config")


def settings_json(settings: Settings) -> str:
    """The settings as JSON (the run's records; CLAFED_RUN_CONFIG)."""
    return json.dumps({f.name: getattr(settings, f.name) for f in fields(settings)})


def run_config_toml(settings: Settings) -> str:
    """The settings as a run-config TOML file (`flwr run --run-config FILE`), keys as in pyproject.toml."""
    lines = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        # JSON's strings are TOML basic strings; repr() writes floats TOML reads back exactly.
        text = ("true" if value else "false") if isinstance(value, bool) else \
            json.dumps(value) if isinstance(value, str) else repr(value)
        lines.append(f"{f.name.replace('_', '-')} = {text}")
    return "\n".join(lines) + "\n"
