"""WeatNet: a small, fast CNN for CPU use (the app's default model).

Design (after airbench94's network): a 3×3 stem, then three stages of
conv → max-pool(2) → BN → act → conv → BN → act, doubling the width each stage, global
max-pool and a linear head. Pooling right after the first conv of a stage keeps most
convolutions at low resolution, which is what makes it cheap on a laptop CPU.
Widths (w, 2w, 4w, 8w); `weatnet_s` uses width 24 (≈0.66 M parameters, ≈2.6 MB fp32).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.SiLU(inplace=True)]
    return layers


class WeatNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        layers = _conv_bn(3, w, pool=False)  # (B, w, 32, 32)
        for c_in, c_out in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)):
            layers += _conv_bn(c_in, c_out, pool=True) + _conv_bn(c_out, c_out, pool=False)
        self.features = nn.Sequential(*layers)  # (B, 8w, 4, 4)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pool(self.features(x)).flatten(1))  # (B, K)
