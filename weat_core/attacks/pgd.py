"""Projected Gradient Descent (Madry et al. 2018, "Towards deep learning models resistant
to adversarial attacks"), L∞ or L2, untargeted or targeted, with a CE or CW margin loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .base import AttackCallback, check_budget, num_classes_of, pgd_loop, random_start

Target = Union[None, str, torch.Tensor]


def random_targets(y: torch.Tensor, num_classes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A uniformly random class other than y for each image (B,), on y's device.

    Drawn on the CPU (from `generator`, else torch's default CPU generator) whatever y's device,
    so that one seed gives the same targets on a CPU and a GPU."""
    shift = torch.randint(1, num_classes, tuple(y.shape), generator=generator)  # (B,) in 1..K-1
    return (y + shift.to(y.device)) % num_classes


def seeded_targets(attack, target: Target, y: torch.Tensor, num_classes: int, seed: int) -> Target:
    """`target` for all of y (N,) at once. Where `attack` is a targeted PGD left to pick a random
    class (target None or "random"), every image's class is drawn up front on the CPU from a
    generator of its own seeded with `seed`: the same targets on a CPU and a GPU, for any batch
    size, whatever ran before. Any other attack or target comes back as given."""
    if isinstance(attack, PGD) and attack.targeted and (target is None or target == "random"):
        return random_targets(y.cpu(), num_classes, generator=torch.Generator().manual_seed(seed))
    return target


def pick_target(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target, num_classes: int) -> torch.Tensor:
    """Target classes (B,): given; a random other class (None); or the least-likely class."""
    if isinstance(target, torch.Tensor):
        return target.to(y.device).long().view(-1).expand_as(y) if target.numel() == 1 else target.to(y.device).long()
    if target == "least-likely":
        from .base import eval_mode

        with torch.no_grad(), eval_mode(model):
            return model(x).argmin(dim=1)
    if target is None or target == "random":
        return random_targets(y, num_classes)
    raise ValueError(f"target must be a tensor, None, 'random' or 'least-likely', got {target!r}")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW margin max_{k≠y} f_k − f_y (B,), positive when x is misclassified."""
    other = logits.float().masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return other.amax(dim=1) - logits.float().gather(1, y.view(-1, 1)).squeeze(1)


@dataclass(frozen=True)
class PGD:
    """PGD-`steps` attack.

    Untargeted: ascend the loss of the true class y. Targeted: descend the loss of `target`
    (a tensor (B,) or scalar, None/"random" for a random other class, or "least-likely").
    loss="ce" is cross-entropy; loss="cw" is the Carlini–Wagner margin (CW∞ in AutoAttack's
    paper). Crafting runs in eval mode; the model's mode and parameters are left as found.

    Shapes: x (B, C, H, W) in [0, 1], y (B,) → x_adv (B, C, H, W) in [0, 1], detached.

    Example: ``x_adv = PGD(eps=8/255, steps=20)(model, x, y)``
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    targeted: bool = False
    random_start: bool = True
    loss: str = "ce"

    def __post_init__(self):
        check_budget(self.eps, self.alpha, self.steps, self.norm)
        if self.loss not in ("ce", "cw"):
            raise ValueError(f"loss must be 'ce' or 'cw', got {self.loss!r}")

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: Target = None,
        callback: Optional[AttackCallback] = None,
    ) -> torch.Tensor:
        y = y.to(x.device).long()
        if self.targeted:
            num_classes = num_classes_of(model, x)
            t = pick_target(model, x, y, target, num_classes)
            if self.loss == "ce":
                objective = lambda logits: -F.cross_entropy(logits.float(), t, reduction="none")  # noqa: E731
            else:
                objective = lambda logits: -margin(logits, t)  # noqa: E731
        else:
            if target is not None:
                raise ValueError("this PGD is untargeted (targeted=False); build PGD(targeted=True) to aim at a class")
            if self.loss == "ce":
                objective = lambda logits: F.cross_entropy(logits.float(), y, reduction="none")  # noqa: E731
            else:
                objective = lambda logits: margin(logits, y)  # noqa: E731
        start = random_start(x, self.eps, self.norm) if self.random_start else x
        return pgd_loop(model, x, start, objective, self.eps, self.alpha, self.steps, self.norm, callback)

