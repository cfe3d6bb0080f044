"""The TRADES attack (Zhang et al. 2019, "Theoretically principled trade-off between
robustness and accuracy"): maximise KL(p(·|x) ‖ p(·|x*)) inside the L∞ ball.

Start at x + 0.001·N(0, I); `steps` sign-gradient ascent steps of size `alpha`; project to
the ε-ball and to [0, 1]; BatchNorm in eval mode while crafting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttackCallback, check_budget, eval_mode, pgd_loop, project


def kl_div(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p(·|x) ‖ p(·|x*)) per sample (B,), computed in fp32."""
    logp_nat = F.log_softmax(logits_nat.float(), dim=1)
    logp_adv = F.log_softmax(logits_adv.float(), dim=1)
    return (logp_nat.exp() * (logp_nat - logp_adv)).sum(dim=1)


@dataclass(frozen=True)
class TradesAttack:
    """x* = argmax_{‖x*−x‖∞ ≤ ε} KL(p(·|x) ‖ p(·|x*)).  x (B, C, H, W), y unused → x* (B, C, H, W).

    Example: ``x_adv = TradesAttack()(model, x, y)``
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    init_std: float = 0.001

    def __post_init__(self):
        check_budget(self.eps, self.alpha, self.steps, self.norm)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        target=None,
        callback: Optional[AttackCallback] = None,
        logits_nat: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if target is not None:
            raise ValueError("the TRADES attack is untargeted")
        if logits_nat is None:
            with torch.no_grad(), eval_mode(model):
                logits_nat = model(x)
        logits_nat = logits_nat.detach().clone()  # a CUDA-graph replay (compile mode reduce-overhead) reuses the output
        start = project(x + self.init_std * torch.randn_like(x), x, self.eps, self.norm)
        return pgd_loop(
            model, x, start, lambda logits: kl_div(logits_nat, logits), self.eps, self.alpha, self.steps, self.norm, callback
        )
