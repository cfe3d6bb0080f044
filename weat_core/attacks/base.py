"""Shared machinery for the attacks: mode handling, projections, the PGD loop."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import nn

# callback(step, x_adv, logits): step 0 is the starting point, step `steps` the result.
AttackCallback = Callable[[int, torch.Tensor, torch.Tensor], None]

__all__ = ["AttackCallback", "POLL_S", "Polled", "eval_mode", "frozen_params", "num_classes_of", "project", "random_start",
           "pgd_loop"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode (BatchNorm uses running stats and does not update
    them) and restore each one's own train/eval flag afterwards, even on error."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, f in flags:
            m.training = f


@contextmanager
def frozen_params(model: nn.Module) -> Iterator[None]:
    """Turn off requires_grad on the parameters while attacking, and restore it afterwards (even
    on error). An attack needs gradients with respect to the input only. Eager autograd already
    skips the weight gradients then, but a torch.compile'd model's backward is one fused graph
    that computes the gradient of every input that required grad when it was traced: with the
    parameters frozen it is traced without their gradients (on our CPU, a compiled weatnet_s
    crafts the TRADES-10 attack 1.6x faster). Also keeps attacks that call `.backward()`
    (torchattacks' FAB) from accumulating into the parameters' `.grad`."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


POLL_S = 0.25  # at most how often `Polled` calls its `poll` (a Stop then acts within about this)


class Polled(nn.Module):
    """`model`, calling `poll()` before a forward pass, at most every `every` seconds: what an attack
    is handed where a caller wants to report progress or stop between the attack's forward passes
    (Square makes 1,000 a batch, AutoAttack thousands). A wrapper, not a hook on the model: the app
    shares its models between sessions, and nothing may change them."""

    def __init__(self, model: nn.Module, poll: Callable[[], None], every: float = POLL_S):
        super().__init__()
        self.model, self.poll, self.every, self.last = model, poll, every, float("-inf")
        if isinstance(getattr(model, "num_classes", None), int):
            self.num_classes = model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self.poll()
        return self.model(x)


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """K: `model.num_classes` when the model declares it, else one forward pass of x[:1]."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.no_grad(), eval_mode(model):
        return int(model(x[:1]).shape[1])


def _norm_l2(v: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (B, 1, 1, 1)
    return v.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def check_budget(eps: float, alpha: float, steps: int, norm: str) -> None:
    """Raise ValueError for an attack no one can mean: a negative radius, a step that does not
    move (with a radius to move in), a negative number of steps, an unknown norm."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not eps >= 0:
        raise ValueError(f"the attack radius ε must be at least 0, got {eps}")
    if eps > 0 and not alpha > 0:
        raise ValueError(f"the attack step must be above 0, got {alpha}")
    if steps < 0:
        raise ValueError(f"steps must be at least 0, got {steps}")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project x_adv onto the `norm` ball of radius eps around x, then onto [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    elif norm == "l2":
        delta = delta * (eps / _norm_l2(delta)).clamp(max=1.0)
    else:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """A uniform random point of the ε-ball (L∞), or a random direction at a uniform radius (L2)."""
    if norm == "linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:
        d = torch.randn_like(x)
        r = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
        delta = d / _norm_l2(d) * r * eps
    return project(x + delta, x, eps, norm)


def step(x_adv: torch.Tensor, grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """One ascent step: sign of the gradient (L∞) or the normalised gradient (L2)."""
    if norm == "linf":
        return x_adv + alpha * grad.sign()
    return x_adv + alpha * grad / _norm_l2(grad)


def pgd_loop(
    model: nn.Module,
    x: torch.Tensor,
    x_start: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    eps: float,
    alpha: float,
    steps: int,
    norm: str,
    callback: Optional[AttackCallback] = None,
) -> torch.Tensor:
    """Projected gradient ascent of `objective(logits) -> (B,)` (summed over the batch),
    from x_start, in eval mode. Returns x_adv (B, C, H, W) in [0, 1], detached.

    Gradients are taken with `torch.autograd.grad` with respect to the input only, with the
    parameters' requires_grad off meanwhile (`frozen_params`), so their `.grad` is never
    touched. Gradients are enabled inside, so attacking works from a caller's `torch.no_grad()`
    block (e.g. an evaluation loop).
    """
    x = x.detach()
    x_adv = x_start.detach().clone()
    with eval_mode(model), frozen_params(model), torch.enable_grad():
        for i in range(steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)  # (B, K)
            loss = objective(logits).float().sum()
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach()
            if callback is not None:
                callback(i, x_adv, logits.detach())
            x_adv = project(step(x_adv, grad, alpha, norm), x, eps, norm)
        if callback is not None:
            with torch.no_grad():
                callback(steps, x_adv, model(x_adv))
    return x_adv.detach()
