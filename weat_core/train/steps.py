"""One training step and one per-epoch evaluation: the attack that crafts x*, the batched
augmentation, the step itself (attack, forwards, backward, SGD), an epoch's summed training terms
and the fixed-subset metrics."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..attacks import PGD, TradesAttack
from ..energy import energy, energy_stats, joint_energy
from ..evaluate import eval_logits
from .config import TrainConfig
from .distributed import _all_cat, _all_reduce, _all_sum

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


class _EpochSums:
    """An epoch's per-sample training terms (loss, ce, kl, energy, …, weight), summed batch by
    batch on the device (no host sync), then averaged over every rank's images."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.w_min: Optional[torch.Tensor] = None
        self.w_max: Optional[torch.Tensor] = None

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """One batch's per-sample terms, each (b,)."""
        for k, v in terms.items():
            v = v.detach().float()
            self.sums[k] = self.sums.get(k, 0) + v.sum()
            if k == "weight":  # WEAT's weights: their spread too
                self.sums["weight_sq"] = self.sums.get("weight_sq", 0) + v.pow(2).sum()
                self.w_min = v.min() if self.w_min is None else torch.minimum(self.w_min, v.min())
                self.w_max = v.max() if self.w_max is None else torch.maximum(self.w_max, v.max())

    def means(self, seen: int, world: int = 1) -> dict[str, float]:
        """The epoch's means over `seen` images (all ranks'): each term's, the batch energies as
        `batch_energy_mean` / `batch_energy_adv_mean`, and the weights' mean, std, min and max."""
        out = {}
        for k, v in self.sums.items():
            out[k] = _all_sum(torch.as_tensor(v, dtype=torch.float32), world).item() / max(seen, 1)
        if "weight" in out:
            wm, wsq = out.pop("weight"), out.pop("weight_sq")
            out["weight_mean"], out["weight_std"] = wm, math.sqrt(max(wsq - wm * wm, 0.0))
            out["weight_min"] = _all_reduce(self.w_min.clone(), world, dist.ReduceOp.MIN).item()
            out["weight_max"] = _all_reduce(self.w_max.clone(), world, dist.ReduceOp.MAX).item()
        for k in ("energy", "energy_adv"):  # training-batch energies, renamed for clarity
            if k in out:
                out[f"batch_{k}_mean"] = out.pop(k)
        return out
