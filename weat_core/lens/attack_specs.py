"""The attacks the app offers: labels → (attack, target) pairs, and running one on a batch
(under bf16 autocast where that pays off)."""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from ..attacks import TorchAttack, make_attack
from ..devices import bf16_ok  # noqa: F401 - re-exported by lens

# An attack plus its `target=` argument, e.g. make_attack("pgd10-t") → (PGD(..., targeted=True), None).
AttackSpec = Union[str, tuple, Callable]

# Labels the app offers → (make_attack pattern or torchattacks name, what it does to E(x) per MISSION.md)
ATTACKS: dict[str, str] = {
    "PGD": "pgd{steps}",            # untargeted: lowers E(x)
    "PGD-T": "pgd{steps}-t",        # targeted at a random other class: raises E(x)
    "CW": "cw{steps}",              # PGD on the CW margin: raises E(x)
    "APGD-CE": "apgd-ce",
    "APGD-T": "apgd-t",
    "TRADES-KL": "trades{steps}",
    "FAB-T": "fab-t",               # minimal targeted perturbation over the 9 likeliest other classes
    "Square": "square",             # score-based random search: forward passes only
    "E(x)↓": "energy-lower{steps}",
    "E(x)↑": "energy-raise{steps}",
}

# Where each attack should move the marginal energy E(x) of robust models, relative to the
# natural images (MISSION.md, observation 1, after Mirza et al. 2024). The E(x)↓ / E(x)↑ attacks
# move it by construction, so they are not a test of the observation.
EXPECTED_SHIFT: dict[str, str] = {
    "PGD": "lower", "APGD-CE": "lower", "TRADES-KL": "lower",
    "PGD-T": "higher", "APGD-T": "higher", "CW": "higher", "FAB-T": "higher", "Square": "higher",
}

# Square's budget in queries per unit of the app's "steps": a query is one forward pass, a PGD
# step a forward and a backward pass. At the default 10 steps that is 1,000 queries, a fifth of
# standard AutoAttack's 5,000 (Croce & Hein 2020). Measured on weatnet_s-weat-adv (256 test
# images, 8/255, 2 CPU cores): 100, 300 and 1,000 queries took 14, 36 and 104 s and left 58.6,
# 52.0 and 44.5 % of the images correct (PGD-10: 39.1 % in 3 s); fewer queries flip far fewer.
SQUARE_QUERIES_PER_STEP = 100


def batch_size_for(kinds: Sequence[str]) -> int:
    """Images per batch for running the attacks `kinds` (app labels) in the landscape: 32 when any
    of them goes through torchattacks, else 128. Those attacks report nothing until a batch is
    done, and APGD-T, FAB-T and Square take tens of seconds per 128 images on a laptop CPU; in
    batches of 32 they took the same time in all (128 images, one thread: Square-300 34.7 s
    against 34.9 s, FAB-T-3 9.9 s against 10.7 s), and a progress bar that counts batches moves
    four times as often. (A stop acts between their queries: `energy_landscape` polls.)"""
    slow = any(isinstance(attack_from(k)[0], TorchAttack) for k in kinds)
    return 32 if slow else 128


def attack_from(kind: str, eps: float = 8 / 255, steps: int = 10, norm: str = "linf") -> tuple:
    """(attack, target) for an app label in `ATTACKS` (or any `make_attack` name)."""
    pattern = ATTACKS.get(kind, kind)
    if pattern == "apgd-ce":  # the highest-loss point for every image, not the natural image where it fails
        return TorchAttack(pattern, eps=eps, norm=norm, steps=steps, keep="max-loss"), None
    # APGD-T, FAB-T and Square have no best-loss mode: they attack only the images the model gets
    # right and hand back the natural image for the rest and wherever they fail ("unchanged" column)
    if pattern in ("apgd-t", "fab-t"):
        return TorchAttack(pattern, eps=eps, norm=norm, steps=steps), None
    if pattern == "square":
        return TorchAttack(pattern, eps=eps, norm=norm, n_queries=SQUARE_QUERIES_PER_STEP * steps), None
    return make_attack(pattern.format(steps=steps), eps=eps, norm=norm)  # an unknown name: a WeatError


def _spec(spec: AttackSpec) -> tuple:
    if isinstance(spec, str):
        return attack_from(spec)
    if isinstance(spec, tuple):
        return spec
    return spec, None


def _run_attack(attack, target, model, x, y, callback=None, amp: bool = False) -> torch.Tensor:
    """x_adv, crafted under bf16 autocast when `amp` (PGD-style attacks only: sign-gradient steps
    do not need fp32 gradients; torchattacks' APGD compares losses, so it stays in fp32).
    Energies are always evaluated afterwards in fp32."""
    kw = {"callback": callback} if callback is not None else {}
    if target is not None:
        kw["target"] = target
    amp = amp and not isinstance(attack, TorchAttack)
    with torch.enable_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        return attack(model, x, y, **kw).float()
