"""TRADES as energies (the KL term split into a cross term and a marginal term), and the WEAT
weight w(x) = 1/softplus(|E(x)|)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import TradesAttack
from ..energy import energy, joint_energy, weat_weights
from ._common import _logits, _to_model
from .attack_specs import _run_attack


def trades_decomposition(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Optional[Callable] = None,
    batch_size: int = 128, seed: int = 0, callback: Optional[Callable[[int, int, str], None]] = None,
) -> pd.DataFrame:
    """Per image, the TRADES KL term split into energies (MISSION.md, "TRADES as energies"):

        KL(p(·|x) ‖ p(·|x*)) = E_{k∼p(·|x)}[E(x*,k) − E(x,k)]  +  E(x) − E(x*)
                               └──────── cross term ────────┘    └ marginal term ┘

    x* comes from `attack` (default: the TRADES attack, 10 steps, ε = 8/255). Columns: label,
    KL, cross term, marginal term, sum of terms, |error| (the identity's numerical residual),
    E(x), E(x*), w(x). `callback(done, total, "TRADES attack")` follows the attack's steps over
    all batches (where the attack reports its steps, as ours do)."""
    attack = attack or TradesAttack()
    y = y.long().cpu()
    nat, adv = [], []
    steps = max(1, int(getattr(attack, "steps", 1)))
    total = -(-x.shape[0] // batch_size) * steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for b, i in enumerate(range(0, x.shape[0], batch_size)):
            xb = _to_model(model, x[i:i + batch_size])
            step = None if callback is None else (
                lambda k, *_, b=b: callback(b * steps + min(k, steps), total, "TRADES attack"))
            adv.append(_logits(model, _run_attack(attack, None, model, xb, y[i:i + batch_size].to(xb.device),
                                                  callback=step)))
            nat.append(_logits(model, xb))
    ln, la = torch.cat(nat).double(), torch.cat(adv).double()  # (N, K); float64 so the check is tight
    p = F.softmax(ln, dim=1)
    cross = (p * (-la - -ln)).sum(1)  # E_{k∼p(·|x)}[E(x*,k) − E(x,k)], with E(x,k) = −f_k(x)
    e_nat, e_adv = -torch.logsumexp(ln, 1), -torch.logsumexp(la, 1)
    marginal = e_nat - e_adv
    kl = (p * (F.log_softmax(ln, 1) - F.log_softmax(la, 1))).sum(1)  # as attacks.kl_div, in float64
    return pd.DataFrame({
        "label": y.numpy(), "KL": kl.numpy(), "cross term": cross.numpy(), "marginal term": marginal.numpy(),
        "sum of terms": (cross + marginal).numpy(), "|error|": (kl - cross - marginal).abs().numpy(),
        "E(x)": e_nat.numpy(), "E(x*)": e_adv.numpy(), "w(x)": weat_weights(e_nat).numpy()})


def weight_curve(e_min: float = -30.0, e_max: float = 30.0, n: int = 601) -> pd.DataFrame:
    """The WEAT weight w(E) = 1/softplus(|E|) on a grid of energies (columns E, w)."""
    e = torch.linspace(e_min, e_max, n)
    return pd.DataFrame({"E": e.numpy(), "w": weat_weights(e).numpy()})


def weights_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> pd.DataFrame:
    """Natural energies, CE and WEAT weights of a batch, sorted by weight (largest first).
    Columns: index, label, pred, E(x), E(x,y), CE, w."""
    lg = _logits(model, x, batch_size)
    y = y.long().cpu()
    e = energy(lg)
    df = pd.DataFrame({"index": np.arange(len(y)), "label": y.numpy(), "pred": lg.argmax(1).numpy(),
                       "E(x)": e.numpy(), "E(x,y)": joint_energy(lg, y).numpy(),
                       "CE": F.cross_entropy(lg, y, reduction="none").numpy(), "w": weat_weights(e).numpy()})
    return df.sort_values("w", ascending=False, kind="stable").reset_index(drop=True)
