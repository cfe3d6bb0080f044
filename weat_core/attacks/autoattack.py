"""APGD-CE, APGD-T, FAB-T, Square and AutoAttack (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks"), through the
torchattacks library; we only wrap them in our calling convention.

torchattacks' own `AutoAttack` class builds its APGD/APGD-T/FAB-T with 10 iterations; the
standard AutoAttack of the paper uses 100 iterations (and 9 target classes for APGD-T and
FAB-T, 5000 Square queries), so we assemble the same four torchattacks attacks with the
paper's settings in a `torchattacks.MultiAttack`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from .base import AttackCallback, eval_mode, frozen_params, num_classes_of

_NORMS = {"linf": "Linf", "l2": "L2"}


def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:  # pragma: no cover - depends on the environment
        from .. import WeatError

        raise WeatError(
            "APGD/AutoAttack need the torchattacks package: pip install --no-deps -r requirements-nodeps.txt"
        ) from e
    return torchattacks


def _rng_devices(x: torch.Tensor) -> list[int]:
    """CUDA devices whose RNG state to fork: APGD/APGD-T reseed the global RNGs (CPU and
    current CUDA device) on every call, which must not reset the caller's random streams."""
    if x.device.type != "cuda":
        return []
    current = torch.cuda.current_device()
    return sorted({current, x.device.index if x.device.index is not None else current})



@dataclass(frozen=True)
class TorchAttack:
    """A torchattacks-based attack. `name` is one of:

    - "apgd-ce"  APGD on cross-entropy (untargeted)
    - "apgd-dlr" APGD on the DLR loss (untargeted)
    - "apgd-t"   targeted APGD on DLR, over the 9 most likely other classes (fewer when K < 10)
    - "fab-t"    targeted FAB
    - "square"   Square attack (score-based, no gradients)
    - "autoattack"  standard AutoAttack: apgd-ce, apgd-t, fab-t, square, each applied to
                    the points the previous ones did not break
    - "autoattack-fast"  apgd-ce then apgd-t only

    x (B, C, H, W) in [0, 1], y (B,) → x_adv (B, C, H, W) in [0, 1], detached. The model's
    train/eval mode is restored exactly as found (torchattacks alone only restores the
    top-level flag); parameters' `.grad` and the caller's global RNG state are left as found.

    `keep`: what comes back for an image the attack fails on. "adversarial" (robustness
    evaluation, as in AutoAttack): the natural image itself, unchanged. "max-loss" (apgd-ce and
    apgd-dlr only; for energy pictures): APGD's highest-loss point for every image, through
    torchattacks' `perturb(..., best_loss=True)`, so a robust image still shows where the
    attack pushed it.

    `on_stage(label, n)`: called as each attack starts, with its name ("APGD-CE", "APGD-T",
    "FAB-T", "Square") and how many images it gets; inside AutoAttack each attack gets only the
    images the ones before it did not break. One batch of AutoAttack takes minutes to hours on
    a CPU, so `evaluate` shows these stages beside its per-batch progress bar.
    """

    name: str = "autoattack"
    eps: float = 8 / 255
    norm: str = "linf"
    steps: int = 100
    n_restarts: int = 1
    n_queries: int = 5000
    seed: int = 0
    keep: str = "adversarial"
    on_stage: Optional[Callable[[str, int], None]] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.name not in _BUILDERS:
            raise ValueError(f"unknown torchattacks attack {self.name!r}; choose one of {sorted(_BUILDERS)}")
        if self.keep not in ("adversarial", "max-loss"):
            raise ValueError(f"keep must be 'adversarial' or 'max-loss', got {self.keep!r}")
        if self.keep == "max-loss" and self.name not in ("apgd-ce", "apgd-dlr"):
            raise ValueError(f"keep='max-loss' needs apgd-ce or apgd-dlr; {self.name} has no best-loss mode")
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be 'linf' or 'l2', got {self.norm!r}")

    def build(self, model: nn.Module, num_classes: int):
        return _BUILDERS[self.name](self, _torchattacks(), _FloatLogits(model), num_classes)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target=None,
        callback: Optional[AttackCallback] = None,
    ) -> torch.Tensor:
        if target is not None:
            raise ValueError(f"{self.name} chooses its own targets; pass target=None")
        atk = self.build(model, num_classes_of(model, x))
        if self.on_stage is not None:
            _announce(atk, self.on_stage, len(x))
        # torchattacks' FAB reshapes input gradients with .view, which fails on a channels_last batch
        # (the app's CPU models run channels_last); its images and their gradients keep the layout
        # of x, so give it the standard one
        x = x.contiguous()
        with eval_mode(model), frozen_params(model), torch.enable_grad(), \
                torch.random.fork_rng(devices=_rng_devices(x)):
            if self.keep == "max-loss":
                x_adv = atk.perturb(x.detach(), y.to(x.device).long(), best_loss=True)[1].detach()
            else:
                x_adv = atk(x.detach(), y.to(x.device).long()).detach()
        if callback is not None:
            with torch.no_grad(), eval_mode(model):
                callback(0, x_adv, model(x_adv))
        return x_adv


class _FloatLogits(nn.Module):
    """The model with fp32 logits: under bf16 autocast (`evaluate(amp=True)`) its logits come out
    in bf16, which torchattacks hands to NumPy (no bf16 there) and whose losses it compares."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


def _stage_label(atk) -> str:
    name = type(atk).__name__
    return {"APGD": f"APGD-{str(getattr(atk, 'loss', 'ce')).upper()}", "APGDT": "APGD-T", "FAB": "FAB-T"}.get(name, name)


def _announce(atk, on_stage: Callable[[str, int], None], n: int) -> None:
    """Make a built torchattacks attack report each of its stages to `on_stage` as it starts:
    the sub-attacks of a MultiAttack (which calls each on the images still unbroken, through the
    sub-attack's `forward`), or the single attack, at once."""
    subs = getattr(atk, "attacks", None)
    if subs is None:
        on_stage(_stage_label(atk), n)
        return
    for sub in subs:
        def forward(images, *args, _inner=sub.forward, _label=_stage_label(sub), **kwargs):
            on_stage(_label, int(images.shape[0]))
            return _inner(images, *args, **kwargs)
        sub.forward = forward  # an instance attribute: torchattacks' Attack.__call__ calls self.forward


def _apgd(loss):
    def build(cfg: TorchAttack, ta, model, k):
        return ta.APGD(model, norm=_NORMS[cfg.norm], eps=cfg.eps, steps=cfg.steps, n_restarts=cfg.n_restarts,
                       seed=cfg.seed, loss=loss)
    return build


# Standard AutoAttack targets the 9 most likely other classes whatever K is; torchattacks
# derives its number of targets as n_classes − 1, so cap n_classes at 10 (else CIFAR-100
# would run 99 targeted attacks per point instead of 9).
N_TARGET_CLASSES = 9


def _targets_arg(k: int) -> int:
    return min(k, N_TARGET_CLASSES + 1)


def _apgdt(cfg: TorchAttack, ta, model, k):
    return ta.APGDT(model, norm=_NORMS[cfg.norm], eps=cfg.eps, steps=cfg.steps, n_restarts=cfg.n_restarts,
                    seed=cfg.seed, n_classes=_targets_arg(k))


def _fabt(cfg: TorchAttack, ta, model, k):
    return ta.FAB(model, norm=_NORMS[cfg.norm], eps=cfg.eps, steps=cfg.steps, n_restarts=cfg.n_restarts,
                  seed=cfg.seed, multi_targeted=True, n_classes=_targets_arg(k))


def _square(cfg: TorchAttack, ta, model, k):
    return ta.Square(model, norm=_NORMS[cfg.norm], eps=cfg.eps, n_queries=cfg.n_queries, n_restarts=cfg.n_restarts,
                     seed=cfg.seed)


def _autoattack(cfg: TorchAttack, ta, model, k):
    return ta.MultiAttack([_apgd("ce")(cfg, ta, model, k), _apgdt(cfg, ta, model, k), _fabt(cfg, ta, model, k),
                           _square(cfg, ta, model, k)])


def _autoattack_fast(cfg: TorchAttack, ta, model, k):
    return ta.MultiAttack([_apgd("ce")(cfg, ta, model, k), _apgdt(cfg, ta, model, k)])


_BUILDERS = {
    "apgd-ce": _apgd("ce"),
    "apgd-dlr": _apgd("dlr"),
    "apgd-t": _apgdt,
    "fab-t": _fabt,
    "square": _square,
    "autoattack": _autoattack,
    "autoattack-fast": _autoattack_fast,
}
