"""Energies of a classifier read as an Energy-Based Model.

For logits f(x) ∈ R^K (Grathwohl et al. 2020, "Your classifier is secretly an energy based
model"; Mirza et al. 2024, "Shedding more light on robust classifiers under the lens of
energy-based models"):

- joint energy      E(x, y) = −f_y(x)
- marginal energy   E(x)    = −T · logsumexp_k f_k(x) / T
- cross-entropy     CE(x, y) = E(x, y) − E(x)

Low energy means "in-distribution" for the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["energy", "joint_energy", "cross_entropy_from_energies", "weat_weights", "energy_stats"]


def energy(logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Marginal energy E(x) = −T·logsumexp(f(x)/T).  logits (B, K) → (B,)."""
    return -T * torch.logsumexp(logits.float() / T, dim=-1)


def joint_energy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Joint energy E(x, y) = −f_y(x).  logits (B, K), y (B,) → (B,)."""
    return -logits.float().gather(-1, y.long().view(-1, 1)).squeeze(-1)


def cross_entropy_from_energies(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(x, y) = E(x, y) − E(x), per sample (B,). Equals F.cross_entropy(..., reduction='none')."""
    return joint_energy(logits, y) - energy(logits)


def weat_weights(e: torch.Tensor) -> torch.Tensor:
    """WEAT sample weights w(x) = 1 / log(1 + exp(|E(x)|)) = 1 / softplus(|E(x)|), (B,).

    softplus is evaluated in its overflow-free form (for large |e| it returns |e|), so the
    weight stays finite and positive for |E| up to 1e4 and beyond. The caller detaches E(x).
    """
    return 1.0 / F.softplus(e.float().abs())


def energy_stats(e: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """Summary statistics of a batch of energies (mean, std, 5/25/50/75/95 % quantiles)."""
    e = e.detach().float().flatten().cpu()
    if e.numel() == 0:
        return {}
    q = torch.quantile(e, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]))
    out = {"mean": e.mean().item(), "std": e.std(unbiased=False).item()}
    out.update({f"q{int(p * 100):02d}": v.item() for p, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), q)})
    return {f"{prefix}{k}": v for k, v in out.items()}
