"""A small, readable ResNet classifier (BasicBlocks with BN), timm-style: width and depth scale it. It is
DICOD's classification teacher, trained on object crops (``fastdiode train-classifier``).

For crops of 32-112 px the stem is one stride-1 3×3 conv (CIFAR-style; ImageNet's 7×7/2 conv and max-pool would
leave a 32 px crop 8 px wide before the first block). Stages double the channels and halve the resolution.
``stem`` is what DICOD's localization loss compares between crops (the teacher's early features).
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN with an identity (or 1×1 conv + BN) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with ``len(depths)`` stages of BasicBlocks; stage i has ``width·2^i`` channels and stride 2 from the
    second stage on. ``forward`` returns class logits (N, num_classes)."""

    checkpoint_kind = "classifier"

    def __init__(self, num_classes: int, width: int = 32, depths: tuple[int, ...] = (2, 2, 2),
                 input_size: int = 32, name: str = "resnet"):
        super().__init__()
        if num_classes < 1 or width < 1 or not depths or min(depths) < 1:
            raise ValueError(f"ResNet: num_classes, width and every depth must be >= 1, got {num_classes}, {width}, "
                             f"{list(depths)}")
        self.num_classes, self.width, self.depths = num_classes, width, tuple(depths)
        self.input_size, self.name = input_size, name
        self.class_names = [str(i) for i in range(num_classes)]
        self.stem = nn.Sequential(conv_bn(3, width, 3), nn.ReLU(inplace=True))
        stages, cin = [], width
        for i, depth in enumerate(self.depths):
            cout = width * 2 ** i
            stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else cout, cout, 2 if i and j == 0 else 1)
                                          for j in range(depth)]))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.modules():  # zero-init the last BN of each residual branch (timm's default)
            if isinstance(block, BasicBlock):
                nn.init.zeros_(block.conv2[1].weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))

    def checkpoint_spec(self) -> dict:
        return {"architecture": "resnet", "name": self.name, "width": self.width, "depths": list(self.depths)}

    @classmethod
    def from_checkpoint_spec(cls, info: dict, input_size: int) -> ResNet:
        return cls(info["num_classes"], info["width"], tuple(info["depths"]), input_size, info.get("name", "resnet"))
