"""CLA-HDM: dual-modality sub-models and their hierarchical assembly."""
from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import nn

from common.backbone import BACKBONES, build_extractor, load_pretrained
from common.config import ModelConfig, Profile
from common.labels import LEVELS
from common.localiser import NodeLocaliser, initial_localiser


class ChannelAttention(nn.Module):
    """Reweights the R, G, B channels of a CDFI image (GAP -> FC 3->10 -> ReLU -> FC 10->3 -> softmax)."""

    def __init__(self, channels: int = 3, hidden: int = 10) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image channel weights (B, 3), summing to 1."""
        return torch.softmax(self.fc(x.mean(dim=(2, 3))), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Scaled by the channel count so uniform weights leave the image unchanged, which keeps
        # ImageNet-initialised extractors on the input statistics they were trained on.
        w = self.weights(x) * x.shape[1]
        return x * w[:, :, None, None]


class ModalityFusionAttention(nn.Module):
    """Gates the CDFI feature channels with weights computed from the BUS features (GAP -> FC -> sigmoid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, bus_map: torch.Tensor, cdfi_map: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(bus_map.mean(dim=(2, 3))))
        return cdfi_map * gate[:, :, None, None]


def _mlp(in_dim: int, hidden: tuple[int, ...], dropout: float, out_dim: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class MaskHead(nn.Module):
    """Node-mask logits (B, 1, H/8, W/8) read from a branch's layer2-4 maps (a small FPN-style decoder).

    Trained only as an auxiliary target: a dense label per pixel teaches an extractor where the
    node and its boundary are from far fewer cases than one class label per case does.
    """

    def __init__(self, channels: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.out = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1),
                                 nn.ReLU(inplace=True), nn.Conv2d(width, 1, 1))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        fused = self.lateral[0](maps[0])
        for lateral, deeper in zip(self.lateral[1:], maps[1:]):
            fused = fused + nn.functional.interpolate(lateral(deeper), size=size, mode="bilinear", align_corners=False)
        return self.out(fused)


class SubModelOutput(NamedTuple):
    """Logits of the fused head and of the two auxiliary per-branch heads (and, for a network
    with mask heads, each branch's node-mask logits)."""

    logits: torch.Tensor
    bus_logits: torch.Tensor
    cdfi_logits: torch.Tensor
    bus_mask: torch.Tensor | None = None
    cdfi_mask: torch.Tensor | None = None


class SubModel(nn.Module):
    """One binary sub-model: BUS and CDFI branches, two attention blocks, late fusion.

    `n_classes=4` builds the same network with 4-class heads: the shared first phase that learns
    both extractors from every case before they initialise the three binary sub-models.
    `mask_heads` adds a node-mask decoder to each branch (the shared phase's auxiliary target).
    """

    def __init__(self, cfg: ModelConfig, n_classes: int = 2, mask_heads: bool = False) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.cdfi_attention = ChannelAttention()
        self.bus = build_extractor(cfg.backbone)
        self.cdfi = build_extractor(cfg.backbone)
        dim = self.bus.out_channels
        self.fusion_attention = ModalityFusionAttention(dim)
        self.head = _mlp(2 * dim, cfg.fusion_hidden, cfg.dropout, n_classes)
        self.bus_head = _mlp(dim, (cfg.aux_hidden,), cfg.dropout, n_classes)
        self.cdfi_head = _mlp(dim, (cfg.aux_hidden,), cfg.dropout, n_classes)
        self.bus_mask_head = MaskHead(self.bus.stage_channels) if mask_heads else None
        self.cdfi_mask_head = MaskHead(self.cdfi.stage_channels) if mask_heads else None

    @property
    def has_mask_heads(self) -> bool:
        """Whether this network learns node masks (its training data must then give them)."""
        return self.bus_mask_head is not None

    def forward_all(self, bus: torch.Tensor, cdfi: torch.Tensor) -> SubModelOutput:
        """Fused and auxiliary logits; training uses all three (deep supervision), and the
        node-mask logits where the network has mask heads."""
        bus_maps, cdfi_maps = self.bus.stages(bus), self.cdfi.stages(self.cdfi_attention(cdfi))
        bus_map = bus_maps[-1]
        cdfi_map = self.fusion_attention(bus_map, cdfi_maps[-1])
        bus_vec, cdfi_vec = bus_map.mean(dim=(2, 3)), cdfi_map.mean(dim=(2, 3))
        logits = self.head(torch.cat([bus_vec, cdfi_vec], dim=1))
        if self.bus_mask_head is None or self.cdfi_mask_head is None:
            return SubModelOutput(logits, self.bus_head(bus_vec), self.cdfi_head(cdfi_vec))
        return SubModelOutput(logits, self.bus_head(bus_vec), self.cdfi_head(cdfi_vec),
                              self.bus_mask_head(bus_maps), self.cdfi_mask_head(cdfi_maps))

    def forward(self, bus: torch.Tensor, cdfi: torch.Tensor) -> torch.Tensor:
        """Fused logits (B, 2); index 1 is the level's positive class."""
        return self.forward_all(bus, cdfi).logits

    def initialise_from(self, shared: "SubModel") -> int:
        """Copy every weight of `shared` whose name and shape match (all but the output layers).

        Returns how many tensors were copied. The output layers keep their fresh initialisation
        because the shared phase predicts 4 classes and a sub-model 2.
        """
        own = self.state_dict()
        copied = {k: v.detach().clone() for k, v in shared.state_dict().items()
                  if k in own and own[k].shape == v.shape}
        self.load_state_dict(copied, strict=False)
        return len(copied)


class HierarchicalOutput(NamedTuple):
    """CLA-HDM output; 4-class tensors are in `common.labels.CLASSES` order."""

    soft: torch.Tensor  # (B, 4) product form: P(benign)*P(subtype|benign), ...
    hard: torch.Tensor  # (B, 4) gated form: sub-model 2's or 3's probabilities, zeros elsewhere
    levels: torch.Tensor  # (B, 3) P(malignant), P(tuberculous | benign), P(metastatic | malignant)
    malignant: torch.Tensor  # (B,) bool: the gate sent the case to sub-model 3


class CLAHDM(nn.Module):
    """Three sub-models and a gate threshold assembled into the 4-class hierarchical model, and the
    node localiser that proposes a case's box when it has no ROI."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.submodels = nn.ModuleDict({level.key: SubModel(cfg) for level in LEVELS})
        self.localiser = NodeLocaliser(cfg.localiser_backbone)
        # 1 once the localiser's phase has run: a buffer, so it travels (and is signed) with the weights.
        self.localiser_trained: torch.Tensor
        self.register_buffer("localiser_trained", torch.zeros(()))
        self.threshold = cfg.threshold
        self.subtype_thresholds = tuple(cfg.subtype_thresholds)
        self.temperatures = tuple(float(t) for t in cfg.temperatures)

    @property
    def has_localiser(self) -> bool:
        """Whether the localiser was trained (an untrained one must never propose a box)."""
        return bool(self.localiser_trained.item() > 0.5)

    @property
    def decision_thresholds(self) -> tuple[float, float, float]:
        """Each level's threshold on P(positive): the gate, then sub-models 2 and 3."""
        benign, malignant = (float(t) for t in self.subtype_thresholds)
        return float(self.threshold), benign, malignant

    def forward(self, bus: torch.Tensor, cdfi: torch.Tensor) -> HierarchicalOutput:
        """Run all three sub-models and assemble the soft and hard 4-class probabilities."""
        mirror = self.config.mirror_average and not self.training
        p1, p2, p3 = (self.level_proba(lv.key, view_logits(self.submodel(lv.key), bus, cdfi, mirror))[:, 1]
                      for lv in LEVELS)
        _, benign, malignant = self.decision_thresholds
        return assemble(p1, p2, p3, threshold=self.threshold, subtype_thresholds=(benign, malignant))

    def level_proba(self, key: str, logits: torch.Tensor) -> torch.Tensor:
        """A level's (B, 2) probabilities from its sub-model's logits (or log-probabilities, which
        differ by a constant), divided by the level's temperature."""
        index = [lv.key for lv in LEVELS].index(key)
        return torch.softmax(logits / self.temperatures[index], dim=1)

    def submodel(self, key: str) -> SubModel:
        """The sub-model of a level key, typed."""
        return cast(SubModel, self.submodels[key])


def view_logits(network: SubModel, bus: torch.Tensor, cdfi: torch.Tensor, mirror: bool) -> torch.Tensor:
    """The network's logits, or with `mirror` their mean over the images and their left-right mirror
    (neck ultrasound has no fixed left and right; training flips each image at random)."""
    if not mirror:
        return network(bus, cdfi)
    # One pass over both views (eval-mode BatchNorm reads each sample alone, so batching them
    # changes nothing but the number of kernel launches).
    both = network(torch.cat([bus, bus.flip(-1)]), torch.cat([cdfi, cdfi.flip(-1)]))
    plain, mirrored = both.chunk(2)
    return (plain + mirrored) / 2


def centre_on(p: torch.Tensor, threshold: float) -> torch.Tensor:
    """A monotone map of probabilities sending `threshold` to 0.5 (a shift of the logit)."""
    if threshold == 0.5:
        return p
    logit = torch.logit(p.clamp(1e-6, 1 - 1e-6)) - math.log(threshold / (1 - threshold))
    return torch.sigmoid(logit)


def assemble(p_malignant: torch.Tensor, p_tb: torch.Tensor, p_met: torch.Tensor, threshold: float = 0.5,
             subtype_thresholds: tuple[float, float] = (0.5, 0.5)) -> HierarchicalOutput:
    """Combine the three levels' positive-class probabilities into 4-class probabilities.

    The soft form is the plain product of the levels. The gated (hard) form follows the gate, then
    the chosen sub-model's probabilities re-centred on its decision threshold, so its argmax is the
    subtype that threshold names.
    """
    soft = torch.cat([(1 - p_malignant)[:, None] * torch.stack([1 - p_tb, p_tb], dim=1),
                      p_malignant[:, None] * torch.stack([1 - p_met, p_met], dim=1)], dim=1)
    tb, met = centre_on(p_tb, subtype_thresholds[0]), centre_on(p_met, subtype_thresholds[1])
    benign = torch.stack([1 - tb, tb], dim=1)  # reactive, tuberculous
    malignant = torch.stack([1 - met, met], dim=1)  # lymphoma, metastatic
    gate = p_malignant > threshold
    zeros = torch.zeros_like(benign)
    hard = torch.where(gate[:, None], torch.cat([zeros, malignant], 1), torch.cat([benign, zeros], 1))
    return HierarchicalOutput(soft, hard, torch.stack([p_malignant, p_tb, p_met], dim=1), gate)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of a module."""
    return sum(p.numel() for p in module.parameters())


def initial_model(cfg: ModelConfig) -> CLAHDM:
    """A CLA-HDM to start training from: random heads, extractors as `cfg.pretrained` says."""
    model = CLAHDM(cfg)
    for level in LEVELS:
        load_pretrained(model.submodel(level.key), cfg.backbone, cfg.pretrained)
    model.localiser = initial_localiser(cfg.localiser_backbone, localiser_pretrained(cfg))
    return model


def localiser_pretrained(cfg: ModelConfig) -> str:
    """Where the localiser's trunk starts from: ImageNet when the run asks for it and the trunk has
    such weights; a local weights file only when it was made for the same backbone."""
    if cfg.pretrained == "imagenet":
        return "imagenet" if BACKBONES[cfg.localiser_backbone][1] is not None else "none"
    return cfg.pretrained if cfg.localiser_backbone == cfg.backbone else "none"


def initial_shared_network(profile: Profile) -> SubModel:
    """The shared phase's 4-class network to start training from, with node-mask heads when the
    profile's mask target is on."""
    return initial_network(profile.model, n_classes=4, mask_heads=profile.train.mask_target)


def initial_network(cfg: ModelConfig, n_classes: int, mask_heads: bool = False) -> SubModel:
    """A sub-model-shaped network (the shared phase's 4-class one, with mask heads when its
    node-mask target is on) to start training from."""
    return cast(SubModel, load_pretrained(SubModel(cfg, n_classes, mask_heads), cfg.backbone, cfg.pretrained))
