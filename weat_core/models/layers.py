"""Building blocks shared by the architectures."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# CIFAR-10 training-set channel statistics, the usual values for normalisation.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x − mean) / std per channel, so every model takes images in [0, 1] (RobustBench style)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1]
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Classifier(nn.Module):
    """A normalising front end plus a network; logits (B, K) for images (B, C, H, W) in [0, 1].

    `config` holds what is needed to rebuild the model (arch, num_classes, mean, std, arch
    kwargs); checkpoints store it in `config.json`.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], config: dict):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.config = dict(config, mean=list(mean), std=list(std))

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
