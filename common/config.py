"""Typed configuration: model, preprocessing, training, named profiles and site YAMLs."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from common.labels import LOCALISER, SHARED
from common.names import name_problem
from common.typed_config import ConfigError, from_dict, merge, read_yaml, to_dict

BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50")
# Ultrasound frames are far below this; a larger image (a decompression bomb: a 1.6 MB PNG can
# decode to gigabytes) is refused from its header before any pixel is decoded.
MAX_IMAGE_PIXELS = 50_000_000
# Smaller frames (either side) carry too little of the node to classify.
MIN_IMAGE_SIZE = 64
# The ResNet stages a heatmap can be computed from, shallow to deep.
CAM_STAGES = ("layer1", "layer2", "layer3", "layer4")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class ModelConfig:
    """What builds one sub-model (all three share it)."""

    # resnet50 is the paper's extractor; resnet10 (torchvision's ResNet with one block per stage)
    # exists only to keep tests and the `tiny` profile small.
    backbone: str = "resnet50"
    # none | imagenet | path of a local torchvision ResNet state_dict (air-gapped hospitals)
    pretrained: str = "none"
    # The authors' late-fusion head is 2F -> 512 -> 64 -> 2; the auxiliary heads F -> 64 -> 2.
    fusion_hidden: tuple[int, ...] = (512, 64)
    aux_hidden: int = 64
    # Dropout before each hidden layer of the heads: the cohorts are a few hundred cases.
    dropout: float = 0.2
    # Gate of the hard assembly: P(malignant) above it routes a case to sub-model 3.
    threshold: float = 0.5
    # Decision thresholds of sub-models 2 and 3 in the gated answer: P(tuberculous) and
    # P(metastatic) above them name the positive subtype. A run sets all three together from
    # federated validation (the gated answer's balanced accuracy), so a rare class is not lost
    # to a fixed 0.5.
    subtype_thresholds: tuple[float, float] = (0.5, 0.5)
    # Each level's logit is divided by its temperature (common/calibration.py): 1 as trained; a
    # run fits them on federated validation so that probabilities mean what they say.
    temperatures: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # At inference each level reads the images and their left-right mirror and averages the two
    # logits: training flips images left-right (AugmentConfig.hflip), so both are valid views
    # of the node, and their mean is a steadier reading than either. False reads one view (half
    # the inference cost).
    mirror_average: bool = True
    # The node localiser's trunk (common/localiser.py): it reads a whole frame, not a crop, so
    # the smallest ResNet serves on CPU; the paper profile gives it the sub-models' backbone.
    localiser_backbone: str = "resnet10"

    def __post_init__(self) -> None:
        for name in (self.backbone, self.localiser_backbone):
            if name not in BACKBONES:
                raise ValueError(f"backbone and localiser_backbone must be one of {', '.join(BACKBONES)}, got {name!r}")
        thresholds = (self.threshold, *self.subtype_thresholds)
        if len(thresholds) != 3 or not all(0.0 < t < 1.0 for t in thresholds):
            raise ValueError(f"threshold and the two subtype_thresholds must lie in (0, 1), got {thresholds}")
        if len(self.temperatures) != 3 or not all(0.0 < t < 100.0 for t in self.temperatures):
            raise ValueError(f"temperatures must be three numbers in (0, 100), got {self.temperatures}")

    @property
    def decision_thresholds(self) -> tuple[float, float, float]:
        """Each level's threshold on P(positive): the gate, then sub-models 2 and 3."""
        return (self.threshold, *self.subtype_thresholds)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; CDFI hue is never touched (colour encodes flow direction)."""

    hflip: bool = True
    rotate_deg: float = 10.0
    # Random scaling and shift of the ROI box, as a fraction of its size: clinicians' boxes vary.
    box_jitter: float = 0.1
    # Multiplicative gain applied to BUS and (hue-preserving) to CDFI: scanners differ in gain.
    gain: float = 0.15
    # BUS-only contrast/gamma: dynamic range differs by scanner.
    contrast: float = 0.15


@dataclass(frozen=True)
class DataConfig:
    """How a case's two images become tensors."""

    input_size: int = 224
    # Fraction of the ROI's width/height added on each side: margins and edema are diagnostic.
    roi_margin: float = 0.15
    # The smallest image side `clafed predict` accepts for this model (sites apply their own
    # SiteConfig.min_image_size when they load their data).
    min_image_size: int = MIN_IMAGE_SIZE
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Side of the square the node localiser sees a whole (letterboxed) B-mode frame at.
    localiser_size: int = 128


@dataclass(frozen=True)
class TrainConfig:
    """How the sub-models are trained: the schedule of a run and each site's local optimisation.

    The schedule (rounds, shared_rounds, epochs) lives here so that one profile says how long a
    run trains; a coordinator's run config may override it (server/settings.py).
    """

    # Local epochs per federated round (the pooled and local baselines count rounds the same way).
    epochs: int = 1
    # Federated rounds per sub-model.
    rounds: int = 4
    # Rounds of the shared first phase: one 4-class network over every labelled case whose
    # extractors then initialise all three sub-models (0: each sub-model starts from scratch or
    # from the ImageNet initialisation).
    shared_rounds: int = 0
    # Rounds of the node localiser's phase, after the sub-models (0: no localiser; cases then need
    # an ROI, or are read whole).
    localiser_rounds: int = 0
    batch_size: int = 16
    # Peak learning rate of AdamW (Adam as in the paper, decoupled weight decay); 1e-4 suits
    # ImageNet-initialised ResNets, from scratch it must be higher.
    lr: float = 1e-4
    weight_decay: float = 1e-4
    # One schedule over the whole run (every round of every phase): linear warm-up over this
    # fraction, then cosine decay to lr * lr_floor at the last step.
    warmup: float = 0.1
    lr_floor: float = 0.02
    # Weight of the two auxiliary per-branch losses (deep supervision); 0 switches them off.
    aux_weight: float = 0.3
    # Weight of the shared phase's node-mask target (each branch segments the node where the site's
    # manifest has node_mask_path, as Y-Net does): dense labels teach the extractors where the
    # node and its boundary are. 0 switches it off (and builds no mask heads).
    mask_weight: float = 0.0
    # Lymphoma and tuberculosis are rare: oversample them (sampler) or weight the loss (loss).
    balance: Literal["none", "sampler", "loss"] = "sampler"
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    # Mixed precision of the training steps (weights and optimiser stay fp32): "auto" is bf16
    # autocast on a CUDA GPU that has bf16 (fp16 with loss scaling on an older one) and fp32 on
    # a CPU, where autocast is slower (python -m simulation.benchmark --precision).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.rounds < 1 or self.shared_rounds < 0 or self.localiser_rounds < 0:
            raise ValueError(f"epochs and rounds must be >= 1, shared_rounds and localiser_rounds >= 0 "
                             f"(got {self.epochs}, {self.rounds}, {self.shared_rounds}, {self.localiser_rounds})")
        if self.mask_weight < 0 or self.aux_weight < 0:
            raise ValueError(f"aux_weight and mask_weight must be >= 0 (got {self.aux_weight}, {self.mask_weight})")
        if not 0.0 <= self.warmup < 1.0 or not 0.0 <= self.lr_floor <= 1.0:
            raise ValueError(f"warmup must lie in [0, 1) and lr_floor in [0, 1] (got {self.warmup}, {self.lr_floor})")

    @property
    def mask_target(self) -> bool:
        """Whether the shared phase's network has node-mask heads and learns the masks."""
        return self.mask_weight > 0

    def phase_rounds(self, phase: str) -> int:
        """Rounds of a training phase: `shared_rounds`, `localiser_rounds`, or `rounds` for a sub-model."""
        return {SHARED: self.shared_rounds, LOCALISER: self.localiser_rounds}.get(phase, self.rounds)


@dataclass(frozen=True)
class Profile:
    """A named bundle of model, data and training settings."""

    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig


PROFILES: dict[str, Profile] = {
    # Tests: the smallest network at 64 px, so a round trains in seconds on a laptop CPU.
    "tiny": Profile("tiny", ModelConfig(backbone="resnet10", fusion_hidden=(64,), aux_hidden=32),
                    DataConfig(input_size=64, localiser_size=64),
                    TrainConfig(rounds=2, shared_rounds=1, localiser_rounds=1, epochs=1, batch_size=8, lr=1e-3,
                                mask_weight=0.5)),
    # The default demo, sized to end within 15 minutes on a 2-core machine: resnet18 at 96 px
    # from scratch (128 px doubles a round's time; resnet10 at 128 px learned less). The shared
    # phase carries most of the steps: each of its epochs teaches both extractors from every case.
    # No localiser by default: its 8 rounds (`--localiser-rounds 8`) would add about 3 minutes.
    "cpu": Profile("cpu", ModelConfig(backbone="resnet18", fusion_hidden=(256, 64)), DataConfig(input_size=96),
                   TrainConfig(rounds=4, shared_rounds=5, epochs=1, batch_size=32, lr=1e-3, mask_weight=0.5)),
    # The paper's setting, for GPUs: ImageNet-initialised resnet50 at 224 px, a lower peak rate.
    "paper": Profile("paper", ModelConfig(backbone="resnet50", pretrained="imagenet", localiser_backbone="resnet18"),
                     DataConfig(input_size=224, localiser_size=224),
                     TrainConfig(rounds=10, shared_rounds=10, localiser_rounds=10, epochs=2, batch_size=16, lr=1e-4,
                                 mask_weight=0.5)),
}


def get_profile(name: str, overrides: dict | None = None) -> Profile:
    """Return the named profile, optionally with nested overrides (checked like a YAML)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return merge(PROFILES[name], overrides, f"profile {name} overrides")


@dataclass(frozen=True)
class HoldoutRule:
    """Which of a site's labelled cases are held out for evaluation."""

    # date: cases with exam_date on/after `date`; fraction: a seeded stratified fraction;
    # all: every case (evaluate-only sites); none: nothing held out.
    kind: Literal["date", "fraction", "all", "none"] = "date"
    date: str = "2021-01-01"
    fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind == "date":
            try:
                dt.date.fromisoformat(self.date)
            except ValueError:
                raise ValueError(f"holdout.date must be an ISO date (YYYY-MM-DD), got {self.date!r}") from None
        if not 0.0 < self.fraction < 1.0:
            raise ValueError(f"holdout.fraction must lie in (0, 1), got {self.fraction}")


@dataclass(frozen=True)
class HeatmapSelection:
    """Which held-out cases get a heatmap picture during the final evaluation."""

    mode: Literal["none", "per_class", "all"] = "per_class"
    per_class: int = 2
    # ResNet stages whose Layer-CAMs are fused (client/cam.py). layer4 alone is the default: on the
    # default model it localises as well as any fusion that passes the randomisation check.
    stages: tuple[str, ...] = ("layer4",)
    # How several stages combine: max (the Layer-CAM paper's) or product (sharper on the node but it
    # fails the randomisation check: partly the image's structure rather than the model's evidence).
    fusion: Literal["product", "max"] = "max"

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in CAM_STAGES]
        if unknown or not self.stages:
            raise ValueError(f"heatmaps.stages must be some of layer1..layer4, got {list(self.stages)}")


@dataclass(frozen=True)
class SiteConfig:
    """One hospital's client settings, read from its YAML in `sites/`."""

    name: str
    # Path of the site's manifest.csv; relative paths are taken from the YAML's folder.
    manifest: Path
    role: Literal["train", "evaluate"] = "train"
    holdout: HoldoutRule = field(default_factory=HoldoutRule)
    # Stratified share of the training cases kept for federated validation (each round's
    # aggregate validation loss/AUC, and the gate threshold); 0 switches it off at this site.
    validation_fraction: float = 0.1
    device: str = "auto"
    # Batch size of local inference (evaluation, heatmaps); training uses the run's profile.
    batch_size: int = 16
    num_workers: int = 0
    heatmaps: HeatmapSelection = field(default_factory=HeatmapSelection)
    # Where the site writes its local outputs (predictions, plots, heatmaps); never sent away.
    output_dir: Path = Path("site_outputs")
    # Deployment only: the SuperLink's Fleet address and the credentials the SuperNode uses.
    server_address: str = "127.0.0.1:8000"
    root_certificates: Path | None = None
    auth_private_key: Path | None = None
    auth_public_key: Path | None = None
    # The coordinator's Ed25519 public key: models not signed by it are refused.
    coordinator_public_key: Path | None = None
    # Small-number rules for what leaves the site (client/disclosure.py): a cohort below
    # min_cohort returns case counts only; confusion cells below min_cell cases are left out.
    min_cohort: int = 10
    min_cell: int = 3
    # The images this site accepts: at least min_image_size px per side, at most
    # max_image_pixels (read from the file's header, before decoding).
    min_image_size: int = MIN_IMAGE_SIZE
    max_image_pixels: int = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        problem = name_problem(self.name)
        if problem:
            raise ValueError(f"name: {problem} (it names the site's files at the coordinator)")
        if self.batch_size < 1 or self.num_workers < 0 or self.min_cohort < 1 or self.min_cell < 1:
            raise ValueError(f"batch_size, min_cohort and min_cell must be >= 1 and num_workers >= 0 (got "
                             f"{self.batch_size}, {self.min_cohort}, {self.min_cell}, {self.num_workers})")
        if self.min_image_size < 1 or self.max_image_pixels < self.min_image_size ** 2:
            raise ValueError(f"min_image_size must be >= 1 and max_image_pixels at least its square (got "
                             f"{self.min_image_size}, {self.max_image_pixels})")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not 0.0 <= self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must lie in [0, 0.5), got {self.validation_fraction}")


def load_site_config(path: str | Path) -> SiteConfig:
    """Read a site YAML; relative paths in it are resolved against the YAML's folder."""
    path = Path(path)
    site = from_dict(SiteConfig, read_yaml(path), str(path))
    base = path.resolve().parent
    resolved: dict[str, Any] = {name: (base / value).resolve() for name, value in vars(site).items()
                                if isinstance(value, Path) and not value.is_absolute()}
    return replace(site, **resolved)


__all__ = [
    "AugmentConfig", "ConfigError", "DataConfig", "HeatmapSelection", "HoldoutRule", "ModelConfig",
    "PROFILES", "Profile", "SiteConfig", "TrainConfig", "get_profile", "load_site_config", "to_dict",
]
