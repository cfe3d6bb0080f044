"""Adversarial attacks, as small frozen dataclasses called with the model:

    x_adv = PGD(eps=8/255, steps=10)(model, x, y)

Every attack takes images in [0, 1] (B, C, H, W), returns a detached x_adv in [0, 1],
leaves the model's train/eval mode as it found it and never changes its parameters.
`callback(step, x_adv, logits)` lets a UI follow each step.
"""

from __future__ import annotations

import re
from typing import Optional

from .. import WeatError
from .autoattack import TorchAttack
from .base import AttackCallback, check_budget, eval_mode, project
from .energy_attack import EnergyAttack
from .pgd import PGD, margin, pick_target, random_targets, seeded_targets
from .trades import TradesAttack, kl_div

__all__ = [
    "AttackCallback",
    "EnergyAttack",
    "PGD",
    "TorchAttack",
    "TradesAttack",
    "attack_title",
    "eval_mode",
    "kl_div",
    "margin",
    "make_attack",
    "pick_target",
    "random_targets",
    "seeded_targets",
    "project",
]


ATTACK_NAMES = ("use pgdN, cwN (either with -t: targeted at a random other class, or -ll: at the least likely "
                "one), tradesN, energy-lowerN or energy-raiseN, where N is the number of steps (e.g. pgd20, "
                "pgd20-t), or apgd-ce, apgd-dlr, apgd-t, fab-t, square, aa (AutoAttack) or aa-fast")
# the step-counted names: kind, steps, and -t (random other class) or -ll (least likely class)
_STEPPED = re.compile(r"(pgd|cw|trades|energy-lower|energy-raise)(\d+)(-t|-ll)?")


def make_attack(spec: str, eps: float = 8 / 255, norm: str = "linf", alpha: Optional[float] = None):
    """Attack from a short name used by the CLI and the app.

    "pgd20" (untargeted PGD-20, step `alpha`, by default 2/255 L∞ or eps/4 L2), "pgd10-t" (targeted, random
    other class), "pgd10-ll" (targeted, least-likely), "cw20" (PGD on the CW margin),
    "trades10", "energy-lower10", "energy-raise10", and the torchattacks ones:
    "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack", "autoattack-fast".
    Returns (attack, target) where target is the `target=` argument to pass. Any other name
    raises a WeatError that lists the names.
    """
    if alpha is None:
        alpha = 2 / 255 if norm == "linf" else eps / 4
    try:  # here, not only in the attacks' constructors, so that torchattacks' ones are checked too
        check_budget(eps, alpha, 0, norm)
    except ValueError as e:
        raise WeatError(str(e)) from None
    s = spec.lower()
    if s in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "autoattack", "autoattack-fast", "aa", "aa-fast"):
        name = {"aa": "autoattack", "aa-fast": "autoattack-fast"}.get(s, s)
        return TorchAttack(name, eps=eps, norm=norm), None
    m = _STEPPED.fullmatch(s)
    if not m:
        raise WeatError(f"unknown attack {spec!r}: {ATTACK_NAMES}")
    kind, steps, suffix = m.group(1), int(m.group(2)), m.group(3)
    if kind in ("pgd", "cw"):
        loss = "ce" if kind == "pgd" else "cw"
        target = "least-likely" if suffix == "-ll" else None
        return PGD(eps=eps, alpha=alpha, steps=steps, norm=norm, targeted=suffix is not None, loss=loss), target
    if suffix:
        raise WeatError(f"{kind} attacks are untargeted: {spec!r} has no -t or -ll form ({ATTACK_NAMES})")
    if kind == "trades":
        return TradesAttack(eps=eps, alpha=alpha, steps=steps, norm=norm), None
    return EnergyAttack(direction=kind.split("-")[1], eps=eps, alpha=alpha, steps=steps, norm=norm), None


_TITLES = {"clean": "clean", "apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab-t": "FAB-T",
           "square": "Square", "aa": "AutoAttack", "autoattack": "AutoAttack",
           "aa-fast": "AutoAttack (APGD-CE and APGD-T)", "autoattack-fast": "AutoAttack (APGD-CE and APGD-T)"}


def attack_title(name: str) -> str:
    """A `make_attack` name as people read it, for model cards: "pgd20" → "PGD-20", "pgd20-t" →
    "targeted PGD-20", "pgd20-ll" → "PGD-20 at the least likely class", "aa" → "AutoAttack";
    "clean" stays; a name it does not know comes back as it is."""
    if name.lower() in _TITLES:
        return _TITLES[name.lower()]
    m = _STEPPED.fullmatch(name.lower())
    if not m:
        return name
    base = {"pgd": "PGD", "cw": "CW", "trades": "TRADES-KL", "energy-lower": "energy-lowering PGD",
            "energy-raise": "energy-raising PGD"}[m.group(1)] + f"-{m.group(2)}"
    return {None: base, "-t": f"targeted {base}", "-ll": f"{base} at the least likely class"}[m.group(3)]
