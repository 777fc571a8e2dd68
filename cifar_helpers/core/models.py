"""ResNet-18 for 32x32 images, after kuangliu/pytorch-cifar.

Its stem is a single 3x3 convolution at stride 1 without max-pool, so a 32x32 image reaches ``layer4``
as a 4x4 map; ``width`` scales every stage (64 is the standard network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al., 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            # A 1x1 projection only where the shape changes, as in the original paper's option B.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet-18: 3x3 stem, four stages ``layer1`` .. ``layer4`` (the default Grad-CAM
    layer) of two BasicBlocks, global average pool, linear head. Normalised float (N, 3, 32, 32) ->
    logits (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # Each stage doubles the channels and halves the resolution, except the first.
        stages = [
            nn.Sequential(_BasicBlock(max(p // 2, width), p, 1 if p == width else 2), _BasicBlock(p, p))
            for p in (width, 2 * width, 4 * width, 8 * width)
        ]
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(num_classes: int = 10, width: int = 64, zero_init_residual: bool = False) -> ResNet:
    """The CIFAR ResNet-18 (BasicBlock [2, 2, 2, 2]); 11,173,962 parameters at width 64.

    With ``zero_init_residual`` the last BatchNorm of every block starts with scale 0, so each block
    begins as its shortcut (Goyal et al., 2017).
    """
    model = ResNet(num_classes=num_classes, width=width)
    if zero_init_residual:
        for module in model.modules():
            if isinstance(module, _BasicBlock):
                nn.init.zeros_(module.bn2.weight)
    return model
