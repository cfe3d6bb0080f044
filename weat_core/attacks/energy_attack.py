"""Energy attacks, for teaching: PGD that directly lowers or raises the marginal energy
E(x) = −logsumexp f(x) inside the ε-ball. They show that an image can be pushed "into" or
"out of" the model's data distribution without aiming at any class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..energy import energy
from .base import AttackCallback, check_budget, pgd_loop, random_start


@dataclass(frozen=True)
class EnergyAttack:
    """direction="lower" descends E(x); direction="raise" ascends it.  x (B, C, H, W) → (B, C, H, W)."""

    direction: str = "lower"
    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True

    def __post_init__(self):
        check_budget(self.eps, self.alpha, self.steps, self.norm)
        if self.direction not in ("lower", "raise"):
            raise ValueError(f"direction must be 'lower' or 'raise', got {self.direction!r}")

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        target=None,
        callback: Optional[AttackCallback] = None,
    ) -> torch.Tensor:
        sign = -1.0 if self.direction == "lower" else 1.0
        start = random_start(x, self.eps, self.norm) if self.random_start else x
        return pgd_loop(
            model, x, start, lambda logits: sign * energy(logits), self.eps, self.alpha, self.steps, self.norm, callback
        )
