"""The energy around one image: E(x) on the plane through the natural image and two
perturbations, such as the untargeted and the targeted PGD image of the attack explorer.

A 2-D slice is how loss landscapes are usually drawn (Li et al. 2018, "Visualizing the loss
landscape of neural nets", arXiv:1712.09913); here the surface is the classifier's marginal
energy, and the plane is chosen so that the natural image sits at (0, 0) and the two attacked
images at (1, 0) and (0, 1). Mirza et al. (2024) report that stronger robust classifiers have
smoother energy landscapes (their Observation 3): on the plane, a robust model's E(x) changes
little across the square the two attacks span, a standard model's a lot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ..attacks import seeded_targets
from ..attacks.base import num_classes_of
from ..energy import energy, joint_energy
from ._common import _device, _logits, _to_model
from .attack_specs import _run_attack, attack_from


@dataclass
class EnergyPlane:
    u: np.ndarray  # (n,) coordinate along d1: x + u·d1 + v·d2
    v: np.ndarray  # (n,) coordinate along d2
    energy: np.ndarray  # (n, n) E(x) at [i, j] = (v[i], u[j]) (rows follow v, as a heatmap draws them)
    joint: Optional[np.ndarray]  # (n, n) E(x, y) of the true class, when y was given
    pred: np.ndarray  # (n, n) predicted class
    clipped: float  # share of the plane's pixels that [0, 1] clipped (0: the plane is flat)

    def spread(self, box: float = 1.0) -> float:
        """max − min of E(x) over the square |u|, |v| ≤ box: how much the energy changes between
        the natural image and perturbations of the two attacks' size. Smaller is smoother."""
        inside = (np.abs(self.u) <= box + 1e-9)[None, :] & (np.abs(self.v) <= box + 1e-9)[:, None]
        e = self.energy[inside]
        return float(e.max() - e.min())

    def at(self, u: float, v: float) -> float:
        """E(x) at the grid point nearest (u, v)."""
        return float(self.energy[int(np.abs(self.v - v).argmin()), int(np.abs(self.u - u).argmin())])


def energy_plane(model: nn.Module, x: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor, y: Optional[int] = None,
                 span: float = 1.5, n: int = 31, batch_size: int = 256,
                 callback: Optional[Callable[[int, int, str], None]] = None) -> EnergyPlane:
    """E(x + u·d1 + v·d2) for u, v on an n × n grid over [−span, span], each image clipped to
    [0, 1] as every attack's and SGLD's images are. x (C, H, W) or (1, C, H, W); d1, d2 the same
    shape (e.g. the two attacks' x* − x). With an odd n, (0, 0) is the natural image itself, and
    (1, 0) and (0, 1), the ends of d1 and d2, are grid points when (1 + span)(n − 1)/(2·span) is
    a whole number (the defaults: 25). `callback(done, total, "")` follows the n·n images."""
    if n < 2 or span <= 0:
        raise ValueError(f"energy_plane needs n ≥ 2 grid points and a positive span; got n={n}, span={span}")
    shape = x.shape[-3:]
    x, d1, d2 = (t.detach().float().cpu().reshape(1, *shape) for t in (x, d1, d2))
    g = np.linspace(-span, span, n)
    gu = torch.tensor(np.tile(g, n), dtype=torch.float32).view(-1, 1, 1, 1)  # (n·n, 1, 1, 1): u varies fastest
    gv = torch.tensor(np.repeat(g, n), dtype=torch.float32).view(-1, 1, 1, 1)
    raw = x + gu * d1 + gv * d2  # (n·n, C, H, W)
    pts = raw.clamp(0, 1)
    clipped = float((pts != raw).float().mean())
    lg = _logits(model, pts, batch_size, callback)  # (n·n, K)
    joint = None
    if y is not None:
        joint = joint_energy(lg, torch.full((lg.shape[0],), int(y))).numpy().reshape(n, n)
    return EnergyPlane(g, g.copy(), energy(lg).numpy().reshape(n, n), joint, lg.argmax(1).numpy().reshape(n, n),
                       clipped)


def plane_spreads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 8 / 255, steps: int = 10,
                  n: int = 9, seed: int = 0, batch_size: int = 128,
                  callback: Optional[Callable[[int, int, str], None]] = None) -> np.ndarray:
    """`EnergyPlane.spread()` for every image of a batch, each plane built as the attack explorer
    builds its own: through x and its untargeted and targeted (a random other class) PGD-`steps`
    images at L∞ `eps`, here on an n × n grid over |u|, |v| ≤ 1 only (the square the spread
    measures). The attacks' random starts and targets come from `seed`, so one image's spread can
    differ from the explorer's; a mean over many images measures how smooth a model's energy is
    around its test images (Observation 3). `callback(done, total, "plane")` follows the batches.
    x (B, C, H, W) in [0, 1], y (B,) → (B,)."""
    if n < 2:
        raise ValueError(f"plane_spreads needs n ≥ 2 grid points; got {n}")
    g = torch.linspace(-1, 1, n)
    gu, gv = g.repeat(n).view(1, -1, 1, 1, 1), g.repeat_interleave(n).view(1, -1, 1, 1, 1)  # (1, n·n, 1, 1, 1)
    dev, out = _device(model), []
    y = y.long().cpu()
    pgd, pgd_t = (attack_from(k, eps=eps, steps=steps)[0] for k in ("PGD", "PGD-T"))
    targets = seeded_targets(pgd_t, None, y, num_classes_of(model, _to_model(model, x[:1])), seed)  # (B,)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            xb, yb = _to_model(model, x[i:i + batch_size]), y[i:i + batch_size].to(dev)
            d1, d2 = [(_run_attack(a, t, model, xb, yb) - xb).float().cpu()[:, None]  # (B, 1, C, H, W)
                      for a, t in ((pgd, None), (pgd_t, targets[i:i + batch_size].to(dev)))]
            pts = (xb.float().cpu()[:, None] + gu * d1 + gv * d2).clamp(0, 1)  # (B, n·n, C, H, W)
            e = energy(_logits(model, pts.flatten(0, 1), 4 * batch_size)).view(pts.shape[0], -1)  # (B, n·n)
            out.append((e.amax(1) - e.amin(1)).numpy())
            if callback is not None:
                callback(i // batch_size + 1, -(-x.shape[0] // batch_size), "plane")
    return np.concatenate(out).astype(np.float64)
