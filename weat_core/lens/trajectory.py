"""One image attacked step by step: energies, probabilities, top-k and every frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..energy import energy, joint_energy
from ._common import _device, _logits, _threads, _to_model
from .attack_specs import AttackSpec, _run_attack, _spec


@dataclass
class Trajectory:
    steps: pd.DataFrame  # step, E(x), E(x,y), E(x,t), p(y), p(t), pred, Linf, L2 (step 0 = natural image)
    frames: torch.Tensor  # (S+1, C, H, W): the natural image, then x_adv at every step
    x: torch.Tensor  # (1, C, H, W)
    x_adv: torch.Tensor  # (1, C, H, W)
    top_before: pd.DataFrame  # class, prob (top-k of p(·|x))
    top_after: pd.DataFrame  # class, prob (top-k of p(·|x*))
    label: int = 0
    target: Optional[int] = None

    @property
    def perturbation(self) -> torch.Tensor:
        """x* − x, (1, C, H, W)."""
        return self.x_adv - self.x


def _topk(logits: torch.Tensor, k: int, classes: Sequence[str]) -> pd.DataFrame:
    p = F.softmax(logits.float(), dim=-1).view(-1)
    v, i = p.topk(min(k, p.numel()))
    return pd.DataFrame({"class": [_name(classes, j) for j in i.tolist()], "index": i.tolist(), "prob": v.tolist()})


def _name(classes: Sequence[str], i: int) -> str:
    return str(classes[i]) if classes and i < len(classes) else str(i)


def attack_trajectory(
    model: nn.Module,
    x: torch.Tensor,
    y: int,
    attack: AttackSpec,
    target: Union[None, int, str] = None,
    topk: int = 5,
    classes: Sequence[str] = (),
    seed: int = 0,
    callback: Optional[Callable[[int, int, str], None]] = None,
) -> Trajectory:
    """Attack one image x (C, H, W) or (1, C, H, W) with true class y, recording E(x), E(x, y)
    (and E(x, t) for a target t), p(y|x) and the prediction at every step, plus every frame.
    `target` is a class index, "random", "least-likely" or None (the attack's own default).
    `callback(step, steps, "")` follows the attack's steps (where it reports them, as ours do)."""
    x = x.reshape(1, *x.shape[-3:]).float()
    attack, default_target = _spec(attack)
    yt = torch.tensor([int(y)], device=_device(model))
    tgt = default_target if target is None else target
    if isinstance(tgt, int):
        tgt = torch.tensor([tgt], device=_device(model))
    if getattr(attack, "targeted", False) and not isinstance(tgt, torch.Tensor):
        from ..attacks import pick_target

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tgt = pick_target(model, _to_model(model, x), yt, tgt, int(_logits(model, x).shape[1]))
    t = int(tgt.view(-1)[0]) if isinstance(tgt, torch.Tensor) else None
    with _threads(1):
        return _trajectory(model, x, int(y), yt, attack, tgt, t, topk, classes, seed, callback)


def _trajectory(model, x, y, yt, attack, tgt, t, topk, classes, seed, callback) -> Trajectory:
    frames, logits = [x.cpu()], [_logits(model, x)]
    steps = max(1, int(getattr(attack, "steps", 1)))

    def record(step: int, x_adv: torch.Tensor, lg: torch.Tensor) -> None:
        frames.append(x_adv.detach().float().cpu())
        logits.append(lg.detach().float().cpu())
        if callback is not None:
            callback(min(step, steps), steps, "")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x_adv = _run_attack(attack, tgt if getattr(attack, "targeted", False) else None, model,
                            _to_model(model, x), yt, callback=record).float().cpu()
    if not torch.equal(frames[-1], x_adv):  # torchattacks reports only the end point; keep it exact
        frames.append(x_adv)
        logits.append(_logits(model, x_adv))
    lg = torch.cat(logits)  # (S+1, K)
    fr = torch.cat(frames)  # (S+1, C, H, W)
    lab = torch.full((lg.shape[0],), int(y))
    p = F.softmax(lg, dim=1)
    d = (fr - x).flatten(1)
    steps = pd.DataFrame({"step": np.arange(lg.shape[0]), "E(x)": energy(lg).numpy(),
                          "E(x,y)": joint_energy(lg, lab).numpy(), "p(y)": p[:, int(y)].numpy(),
                          "pred": lg.argmax(1).numpy(), "Linf": d.abs().amax(1).numpy(), "L2": d.norm(dim=1).numpy()})
    if t is not None:
        steps["E(x,t)"] = joint_energy(lg, torch.full_like(lab, t)).numpy()
        steps["p(t)"] = p[:, t].numpy()
    steps["pred_name"] = [_name(classes, i) for i in steps["pred"]]
    return Trajectory(steps, fr, x.cpu(), x_adv, _topk(lg[0], topk, classes), _topk(lg[-1], topk, classes),
                      int(y), t)
