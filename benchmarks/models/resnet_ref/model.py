"""A ResNet-style candidate for the reference (benchmarks only), 10-epoch question.

What changes from the reference: full 3x3 residual blocks at 32x32 and 16x16 (where the reference
spends almost nothing), post-activation residual blocks (ReLU after the sum) whose last BatchNorm
starts at zero, so each block begins as the identity (Goyal et al., 2017: trains faster early).
Same rules: C1|C2|C3|C4|O, three stride-2 convolutions, depthwise separable layers in C3/C4,
a dilated one in C3, GAP then one linear layer, under 200k parameters.
"""

import torch
from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, dilation: int = 1, groups: int = 1, k: int = 3) -> list[nn.Module]:
    pad = dilation * (k // 2)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


def depthwise_separable(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    """3x3 depthwise (groups = channels) + BN + ReLU, then 1x1 pointwise + BN (no ReLU: the caller adds it)."""
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


class Net(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        # C1 (32x32): a stem and one residual block
        self.c1 = nn.Sequential(*conv_bn(3, 32), nn.ReLU(inplace=True), basic(32))
        # C2 (16x16): stride-2 transition, one residual block
        self.c2 = nn.Sequential(*conv_bn(32, 56, stride=2), nn.ReLU(inplace=True), basic(56))
        # C3 (8x8): depthwise separable stride-2 transition, a residual block with a dilated depthwise layer
        self.c3 = nn.Sequential(
            *depthwise_separable(56, 128, stride=2),
            nn.ReLU(inplace=True),
            Residual(*depthwise_separable(128, 128, dilation=2), nn.ReLU(inplace=True), *depthwise_separable(128, 128)),
        )
        # C4 (4x4): depthwise separable stride-2 transition, one residual block
        self.c4 = nn.Sequential(
            *depthwise_separable(128, 128, stride=2),
            nn.ReLU(inplace=True),
            Residual(*depthwise_separable(128, 128), nn.ReLU(inplace=True), *depthwise_separable(128, 128)),
        )
        # O: global average pooling and one linear layer
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c4(self.c3(self.c2(self.c1(x))))
        return self.fc(self.gap(x).flatten(1))
