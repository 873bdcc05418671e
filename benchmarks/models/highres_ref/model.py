"""A high-resolution candidate for the reference (benchmarks only): the compute spent at 32x32.

The question it answers: at 10 epochs every design of about 30-40 M mult-adds per image stopped at
82.5% (benchmarks/results/ablations.md). This one spends about 100 M, most of it in two full residual
blocks at 32x32 (where a parameter costs 1,024 mult-adds per image), and keeps the parameters of the
low-resolution blocks in depthwise separable layers. Same rules: C1|C2|C3|C4|O, three stride-2
convolutions, depthwise separable layers, a dilated one in C3, GAP then one linear layer, < 200k.
"""

import torch
from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, groups: int = 1, k: int = 3) -> list[nn.Module]:
    pad = dilation * (k // 2)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


def depthwise_separable(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    """3x3 depthwise (groups = channels) + BN + ReLU, then 1x1 pointwise + BN (the caller adds the ReLU)."""
    return [*conv_bn(cin, cin, stride, dilation, groups=cin), nn.ReLU(inplace=True), *conv_bn(cin, cout, k=1)]


class Residual(nn.Module):
    """relu(x + body(x)); the body's last BatchNorm starts at zero, so the block starts as the identity."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


def basic(c: int) -> Residual:
    return Residual(*conv_bn(c, c), nn.ReLU(inplace=True), *conv_bn(c, c))


def separable_block(c: int, dilation: int = 1) -> Residual:
    return Residual(*depthwise_separable(c, c, dilation=dilation), nn.ReLU(inplace=True), *depthwise_separable(c, c))


class Net(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        # C1 (32x32): a stem and two full residual blocks: most of the compute
        self.c1 = nn.Sequential(*conv_bn(3, 48), nn.ReLU(inplace=True), basic(48), basic(48))
        # C2 (16x16): stride-2 transition, a separable residual block
        self.c2 = nn.Sequential(*conv_bn(48, 64, stride=2), nn.ReLU(inplace=True), separable_block(64))
        # C3 (8x8): separable stride-2 transition, a residual block with a dilated depthwise layer
        self.c3 = nn.Sequential(*depthwise_separable(64, 96, stride=2), nn.ReLU(inplace=True), separable_block(96, 2))
        # C4 (4x4): separable stride-2 transition, one separable layer as a residual
        self.c4 = nn.Sequential(
            *depthwise_separable(96, 128, stride=2),
            nn.ReLU(inplace=True),
            Residual(*depthwise_separable(128, 128)),
        )
        # O: global average pooling and one linear layer
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c4(self.c3(self.c2(self.c1(x))))
        return self.fc(self.gap(x).flatten(1))
