"""ResNet feature extractors from torchvision: one registry of backbones; building never loads weights.

Like torchvision's constructors without `weights`, `build_extractor` only builds (random init);
`load_pretrained` is the one place that reads ImageNet or local-file weights into a network.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet

# The backbone registry: how each ResNet is built, and its ImageNet weights where it has them.
# resnet10 (one block per stage) exists only to keep tests and the `tiny` profile small.
BACKBONES = {
    "resnet10": (lambda: ResNet(BasicBlock, [1, 1, 1, 1]), None),
    "resnet18": (lambda: models.resnet18(weights=None), models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (lambda: models.resnet34(weights=None), models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (lambda: models.resnet50(weights=None), models.ResNet50_Weights.IMAGENET1K_V2),
}


class ResNetExtractor(nn.Module):
    """A torchvision ResNet without its pooling and classifier.

    The stages keep torchvision's names (`conv1` ... `layer4`) so a ResNet state_dict loads
    directly and CAM code can target `branch.layer4` as a plain attribute.
    """

    def __init__(self, resnet: ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.out_channels = resnet.fc.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the final-stage feature map (B, C, H/32, W/32)."""
        return self.stages(x)[-1]

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps of layer2, layer3 and layer4 (strides 8, 16, 32), for heads that read several."""
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        maps = [self.layer2(x)]
        maps.append(self.layer3(maps[-1]))
        maps.append(self.layer4(maps[-1]))
        return maps

    @property
    def stage_channels(self) -> tuple[int, int, int]:
        """Channels of the maps `stages` returns."""
        # A residual stage's output has its last block's last BatchNorm's width.
        widths = [[m for m in layer[-1].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
                  for layer in (self.layer2, self.layer3, self.layer4)]
        return widths[0], widths[1], widths[2]


def build_extractor(backbone: str) -> ResNetExtractor:
    """A randomly initialised ResNet extractor (resnet10 | resnet18 | resnet34 | resnet50)."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    return ResNetExtractor(BACKBONES[backbone][0]())


def load_pretrained(model: nn.Module, backbone: str, source: str) -> nn.Module:
    """Load pretrained ResNet weights into every extractor of `model` (returned for chaining).

    `source`: `none` (leave the random init), `imagenet` (torchvision's weights; downloaded once
    into the torch cache) or the path of a local torchvision ResNet state_dict (air-gapped sites).
    """
    if source == "none":
        return model
    if source == "imagenet":
        weights = BACKBONES[backbone][1]
        if weights is None:
            raise ValueError(f"{backbone} has no ImageNet weights; use resnet18/34/50 or pretrained: none")
        state = weights.get_state_dict(progress=False)
    else:
        state = _read_local_weights(Path(source))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not used
    for extractor in (m for m in model.modules() if isinstance(m, ResNetExtractor)):
        missing, unexpected = extractor.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{source}: not a {backbone} state_dict (missing {missing[:3]}..., "
                             f"unexpected {unexpected[:3]}...)")
    return model


def _read_local_weights(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision-format ResNet state_dict from a file (a `state_dict` key and `module.` prefixes allowed)."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} "
                                "(set model.pretrained to none, imagenet or an existing file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}
