"""Adversarial training objectives, per sample.

Every loss takes logits and returns a `LossOutput`: `.loss`, the per-sample total (B,) whose
mean is the training loss, and `.terms`, per-sample tensors (B,) the trainer logs and the UI
plots: `ce`, `kl`, `energy` (E(x) of the natural images), `energy_adv` (E(x*)), `weight`.

- SAT    (Madry et al. 2018):   CE(f(x*), y)
- TRADES (Zhang et al. 2019):   CE(f(x), y) + β·KL(p(·|x) ‖ p(·|x*))
- MART   (Wang et al. 2020):    BCE(f(x*), y) + β·KL(p(·|x) ‖ p(·|x*))·(1 − p_y(x))
- WEAT-adv (Mirza et al. 2024): w(x)·[CE(f(x*), y) + β·KL(p(·|x) ‖ p(·|x*))]
- WEAT-nat:                     w(x)·[CE(f(x), y)  + β·KL(p(·|x) ‖ p(·|x*))]
  with w(x) = 1/softplus(|E(x)|) computed from the natural logits and detached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .attacks.trades import kl_div
from .energy import energy, weat_weights

__all__ = ["LossOutput", "sat", "trades", "mart", "weat_adv", "weat_nat", "LOSSES", "get_loss"]


@dataclass
class LossOutput:
    loss: torch.Tensor  # (B,) per-sample total
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # each (B,)

    def mean(self) -> torch.Tensor:
        return self.loss.mean()


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def sat(logits_adv: torch.Tensor, y: torch.Tensor, logits_nat: Optional[torch.Tensor] = None, **_) -> LossOutput:
    """Standard adversarial training (PGD-AT): cross-entropy on the adversarial images."""
    ce = _ce(logits_adv, y)
    terms = {"ce": ce, "energy_adv": energy(logits_adv).detach()}
    if logits_nat is not None:
        terms["energy"] = energy(logits_nat).detach()
    return LossOutput(ce, terms)


def trades(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0) -> LossOutput:
    """TRADES: CE on natural images plus β·KL(p(·|x) ‖ p(·|x*))."""
    ce = _ce(logits_nat, y)
    kl = kl_div(logits_nat, logits_adv)
    return LossOutput(ce + beta * kl, {"ce": ce, "kl": kl, "energy": energy(logits_nat).detach(),
                                       "energy_adv": energy(logits_adv).detach()})


def mart(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0) -> LossOutput:
    """MART: boosted CE on x* (CE plus a margin term on the strongest wrong class) plus
    β·KL(p(·|x) ‖ p(·|x*)) weighted by 1 − p_y(x), following the authors' reference code."""
    probs_adv = F.softmax(logits_adv.float(), dim=1)  # (B, K)
    top2 = probs_adv.argsort(dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])  # most likely wrong class
    bce = _ce(logits_adv, y) + F.nll_loss(torch.log(1.0001 - probs_adv + 1e-12), wrong, reduction="none")
    probs_nat = F.softmax(logits_nat.float(), dim=1)
    p_true = probs_nat.gather(1, y.view(-1, 1)).squeeze(1)
    kl = (probs_nat * (torch.log(probs_nat + 1e-12) - torch.log(probs_adv + 1e-12))).sum(dim=1)
    return LossOutput(bce + beta * kl * (1.0000001 - p_true),
                      {"ce": bce, "kl": kl, "energy": energy(logits_nat).detach(),
                       "energy_adv": energy(logits_adv).detach()})


def _weat(logits_ce: torch.Tensor, logits_nat, logits_adv, y, beta, weights) -> LossOutput:
    e_nat = energy(logits_nat).detach()
    w = weat_weights(e_nat) if weights is None else weights.to(e_nat.dtype).detach()
    ce = _ce(logits_ce, y)
    kl = kl_div(logits_nat, logits_adv)
    return LossOutput(w * (ce + beta * kl), {"ce": ce, "kl": kl, "energy": e_nat,
                                             "energy_adv": energy(logits_adv).detach(), "weight": w})


def weat_adv(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0,
             weights: Optional[torch.Tensor] = None) -> LossOutput:
    """WEAT-adv: w(x)·[CE(f(x*), y) + β·KL(p(·|x) ‖ p(·|x*))]; `weights` overrides w(x)."""
    return _weat(logits_adv, logits_nat, logits_adv, y, beta, weights)


def weat_nat(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0,
             weights: Optional[torch.Tensor] = None) -> LossOutput:
    """WEAT-nat: w(x)·[CE(f(x), y) + β·KL(p(·|x) ‖ p(·|x*))]; with unit weights this is TRADES."""
    return _weat(logits_nat, logits_nat, logits_adv, y, beta, weights)


def _sat_entry(logits_nat, logits_adv, y, beta=6.0):
    return sat(logits_adv, y, logits_nat=logits_nat)


def _standard(logits_nat, logits_adv, y, beta=6.0):
    ce = _ce(logits_nat, y)
    return LossOutput(ce, {"ce": ce, "energy": energy(logits_nat).detach()})


# Uniform signature (logits_nat, logits_adv, y, beta) -> LossOutput, keyed by method name.
LOSSES: dict[str, Callable[..., LossOutput]] = {
    "standard": _standard,
    "sat": _sat_entry,
    "trades": trades,
    "mart": mart,
    "weat-adv": weat_adv,
    "weat-nat": weat_nat,
}


def get_loss(method: str) -> Callable[..., LossOutput]:
    if method not in LOSSES:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(LOSSES)}")
    return LOSSES[method]
