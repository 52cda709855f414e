"""ResNet feature extractors from torchvision, with ImageNet or local-file initialisation."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models
from torchvision.models.resnet import BasicBlock, ResNet

# torchvision weights enums, where a network has ImageNet weights.
_IMAGENET = {
    "resnet18": models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": models.ResNet50_Weights.IMAGENET1K_V2,
}
FEATURE_DIM = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048}


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
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_extractor(backbone: str, pretrained: str = "none") -> ResNetExtractor:
    """Build a ResNet extractor.

    Args:
        backbone: resnet10 | resnet18 | resnet34 | resnet50.
        pretrained: `none` (random init), `imagenet` (torchvision weights; downloads once into the
            torch cache) or the path of a local ResNet state_dict file for air-gapped sites.
    """
    if backbone == "resnet10":
        if pretrained == "imagenet":
            raise ValueError("resnet10 has no ImageNet weights; use resnet18/34/50 or pretrained: none")
        resnet = ResNet(BasicBlock, [1, 1, 1, 1])
    elif backbone in _IMAGENET:
        weights = _IMAGENET[backbone] if pretrained == "imagenet" else None
        resnet = getattr(models, backbone)(weights=weights)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(FEATURE_DIM)}")
    if pretrained not in ("none", "imagenet"):
        _load_local_weights(resnet, Path(pretrained))
    return ResNetExtractor(resnet)


def _load_local_weights(resnet: ResNet, path: Path) -> None:
    """Load a torchvision-format ResNet state_dict; the classifier (`fc.*`) may differ or be absent."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path} "
                                "(set model.pretrained to none, imagenet or an existing file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    missing, unexpected = resnet.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: not a matching ResNet state_dict "
                         f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
