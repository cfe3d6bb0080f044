"""Observation 1 as the attack grows: untargeted and targeted PGD swept over ε or over the number
of steps on the same images (the landscape page's sweep, `sweep --store`), and what the sweep says."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from .landscape import energy_landscape, observation1, shift_by_outcome


def strength_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_values: Sequence[float] = (2, 4, 8, 16, 32),
    steps: int = 20,
    batch_size: int = 128,
    seed: int = 0,
    callback: Optional[Callable[[int, int, str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> pd.DataFrame:
    """Observation 1 as the attack grows: untargeted and targeted L∞ PGD (a random other class)
    at each ε in `eps_values` (in units of 1/255), `steps` steps of α = max(2/255, 2.5·ε/steps)
    (the usual 2/255 at ε = 8/255, and enough reach for the ball at large ε), on the same images.

    One row per (ε, attack): eps (×1/255), attack ("PGD" / "PGD-T"), accuracy, and
    `observation1`'s shift E(x), se, share E(x)↓, verdict, and "by outcome": {group: {n, shift}}
    from `shift_by_outcome` (what the attack did to each prediction). The direction of the shift can
    depend on ε: on the shipped small robust models untargeted PGD raises E(x) at 8/255 and
    lowers it only once ε is large enough to misclassify nearly every image. `callback(done, total, label)`
    follows the batches; `should_stop()` ends early (the finished ε values are returned)."""
    rows = _sweep(model, x, y, eps_values,
                  lambda e: (float(e) / 255, max(2 / 255, 2.5 * float(e) / 255 / steps), steps, f"ε = {e:g}/255"),
                  batch_size, seed, callback, should_stop)
    return pd.DataFrame([{"eps": float(p), **r} for p, r in rows], columns=["eps", *SWEEP_COLUMNS])


def steps_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps_values: Sequence[int] = (1, 2, 5, 10, 20),
    eps: float = 8,
    batch_size: int = 128,
    seed: int = 0,
    callback: Optional[Callable[[int, int, str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> pd.DataFrame:
    """Observation 1 as the attack runs longer: untargeted and targeted L∞ PGD at one ε (in units
    of 1/255) with each number of steps in `steps_values`, step 2/255 and a random start, on the
    same images. The rows are `strength_sweep`'s with a steps column in place of eps (which
    holds the one ε). On our standard model, targeted PGD-2 raises E(x) and targeted PGD-20
    lowers it: how far an attack lifts a wrong class's logit decides the direction."""
    rows = _sweep(model, x, y, steps_values, lambda k: (float(eps) / 255, 2 / 255, int(k), f"{int(k)} steps"),
                  batch_size, seed, callback, should_stop)
    return pd.DataFrame([{"steps": int(p), "eps": float(eps), **r} for p, r in rows],
                        columns=["steps", "eps", *SWEEP_COLUMNS])


SWEEP_COLUMNS = ["attack", "accuracy", "expected", "shift E(x)", "se", "share E(x)↓", "unchanged", "verdict", "by outcome"]


def _sweep(model, x, y, points, settings, batch_size, seed, callback, should_stop) -> list[tuple[Any, dict]]:
    """The landscape of untargeted and targeted PGD at each point; `settings(point)` gives
    (ε, α, steps, label). Returns (point, row) pairs, two per finished point."""
    from ..attacks import PGD

    rows = []
    total = len(points)
    for i, p in enumerate(points):
        if should_stop is not None and should_stop():
            break
        eps, alpha, steps, label = settings(p)
        attacks = {"PGD": (PGD(eps=eps, alpha=alpha, steps=steps), None),
                   "PGD-T": (PGD(eps=eps, alpha=alpha, steps=steps, targeted=True), None)}

        def cb(done: int, n: int, name: str, _i: int = i, _label: str = label) -> None:
            if callback is not None:
                callback(_i * n + done, total * n, f"{_label}, {name}")

        land = energy_landscape(model, x, y, attacks, batch_size=batch_size, seed=seed, callback=cb,
                                should_stop=should_stop)
        if land.stopped:
            break
        ob = observation1(land.summary).set_index("attack")
        acc = land.summary.set_index("attack")["accuracy"]
        split = shift_by_outcome(land.per_image)
        for a in attacks:
            parts = split[split["attack"] == a]
            rows.append((p, {"attack": a, "accuracy": float(acc[a]), **ob.loc[a].to_dict(),
                             "by outcome": {r["outcome"]: {"n": int(r["n"]), "shift": float(r["shift E(x)"])}
                                            for _, r in parts.iterrows()}}))
    return rows


def lowers_from(sweep: pd.DataFrame, by: str = "eps") -> Optional[float]:
    """The smallest ε (×1/255) of a `strength_sweep` (or, with by="steps", the fewest steps of a
    `steps_sweep`) from which untargeted PGD lowers mean E(x) beyond two standard errors at that
    and every larger value tried; None when it does not at the largest. Needs the columns `by`,
    attack and verdict."""
    pgd = sweep[sweep["attack"] == "PGD"].sort_values(by)
    verdicts = list(pgd["verdict"])
    if not verdicts or verdicts[-1] != "holds":
        return None
    first = next(i for i in range(len(verdicts)) if all(v == "holds" for v in verdicts[i:]))
    return float(pgd[by].iloc[first])


def sweep_summary(sweep: pd.DataFrame, by: str = "eps") -> str:
    """One sentence on a `strength_sweep` (or, with by="steps", a `steps_sweep`): what untargeted
    PGD did to mean E(x) at each ε or number of steps (beyond two standard errors or not), and
    from which on it lowers E(x), if it does."""
    pgd = sweep[sweep["attack"] == "PGD"].sort_values(by)
    marks = {"holds": "✓ lower", "fails": "✗ higher", "unclear": "≈ within the noise"}
    what = "ε" if by == "eps" else "number of steps"

    def at(v: float) -> str:
        return f"{v:g}/255" if by == "eps" else f"{v:g} step{'' if v == 1 else 's'}"

    per = " · ".join(f"{at(v)} {marks[d]}" for v, d in zip(pgd[by], pgd["verdict"]))
    verdicts = list(pgd["verdict"])
    start = lowers_from(sweep, by)
    if verdicts and all(v == "holds" for v in verdicts):
        end = f"untargeted PGD lowers mean E(x) at every {what} tried, as Observation 1 expects."
    elif start is not None:
        acc = float(pgd.loc[pgd[by] == start, "accuracy"].iloc[0])
        where = f"ε = {at(start)}" if by == "eps" else at(start)
        end = f"untargeted PGD lowers mean E(x) only from {where} on, where it leaves {acc:.0%} of the images " \
              "correctly classified."
    elif "holds" not in verdicts:
        end = f"untargeted PGD does not lower mean E(x) at any {what} tried."
    else:
        end = f"the direction changes with {'ε' if by == 'eps' else 'the number of steps'}."
    return f"Untargeted PGD, mean E(x*) vs E(x) (beyond two standard errors): {per}. So {end}"
