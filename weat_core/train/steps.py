"""One training step and one per-epoch evaluation: the attack that crafts x*, the batched
augmentation, the step itself (attack, forwards, backward, SGD) and the fixed-subset metrics."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from ..attacks import PGD, TradesAttack
from ..energy import energy, energy_stats, joint_energy
from ..evaluate import eval_logits
from .config import TrainConfig
from .distributed import _all_cat

__all__ = ["augment", "make_attack", "train_step"]


def augment(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip, batched, on x's device.
    x (B, C, H, W) float → (B, C, H, W). Randomness from g, a generator on x's device (drawing
    on the device avoids a host→device copy, and so a host sync, every batch)."""
    B, C, H, W = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    sy = torch.randint(0, 2 * pad + 1, (B,), generator=g, device=x.device)
    sx = torch.randint(0, 2 * pad + 1, (B,), generator=g, device=x.device)
    flip = torch.rand(B, generator=g, device=x.device) < 0.5
    rows = (sy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (sx[:, None] + torch.arange(W, device=x.device))  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]  # (B, 1, 1, W)
    bidx = torch.arange(B, device=x.device)[:, None, None, None]
    cidx = torch.arange(C, device=x.device)[None, :, None, None]
    return xp[bidx, cidx, rows, cols]



def make_attack(cfg: TrainConfig):
    """The attack that crafts x* for `cfg.method` (None for standard training)."""
    if cfg.method == "standard":
        return None
    if cfg.method in ("sat", "mart"):
        return PGD(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps)
    return TradesAttack(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps)


def train_step(model: nn.Module, fwd: nn.Module, opt: torch.optim.Optimizer, attack, loss_fn, xb: torch.Tensor,
               yb: torch.Tensor, cfg: TrainConfig, amp: bool, attack_model: Optional[nn.Module] = None):
    """One optimizer step: craft x* on `attack_model` (default `model`; eval mode, the plain
    module even under DDP, or its compiled wrapper), then forward natural and adversarial batches
    separately in train mode through `fwd` (the DDP or compiled wrapper), as the reference
    TRADES/MART code does, so BatchNorm sees each batch alone. SAT forwards only x*. Returns the
    LossOutput (per-sample terms)."""
    if cfg.compile_mode in ("reduce-overhead", "max-autotune"):  # CUDA graphs: a new step starts here
        torch.compiler.cudagraph_mark_step_begin()
    with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=amp):
        x_adv = attack(model if attack_model is None else attack_model, xb, yb) if attack is not None else None
        logits_nat = fwd(xb) if cfg.method != "sat" else None
        logits_adv = fwd(x_adv) if x_adv is not None else None
        res = loss_fn(logits_nat, logits_adv, yb, beta=cfg.beta)
    opt.zero_grad(set_to_none=True)
    res.loss.mean().backward()
    opt.step()
    return res


def _eval_subset(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, amp: bool,
                 world: int, prefix: str) -> dict[str, Any]:
    """Clean and PGD accuracy and energy statistics on a fixed subset (sharded across ranks)."""
    attack = PGD(eps=cfg.eps, alpha=cfg.alpha, steps=cfg.eval_steps)
    nat_l, adv_l = [], []
    for i in range(0, x.shape[0], 256):
        xb, yb = x[i:i + 256], y[i:i + 256]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            xa = attack(model, xb, yb)
            nat_l.append(eval_logits(model, xb))
            adv_l.append(eval_logits(model, xa))
    ln, la = _all_cat(torch.cat(nat_l), world), _all_cat(torch.cat(adv_l), world)  # (N, K)
    yy = _all_cat(y, world)
    e_nat, e_adv = energy(ln), energy(la)
    rec = {f"{prefix}clean_acc": (ln.argmax(1) == yy).float().mean().item(),
           f"{prefix}pgd_acc": (la.argmax(1) == yy).float().mean().item()}
    tag = "" if prefix == "train_" else prefix
    rec.update(energy_stats(e_nat, f"{tag}energy_nat_"))
    rec.update(energy_stats(e_adv, f"{tag}energy_adv_"))
    rec[f"{tag}delta_e"] = rec[f"{tag}energy_nat_mean"] - rec[f"{tag}energy_adv_mean"]
    rec[f"{tag}joint_energy_nat_mean"] = joint_energy(ln, yy).mean().item()
    rec[f"{tag}joint_energy_adv_mean"] = joint_energy(la, yy).mean().item()
    return rec
