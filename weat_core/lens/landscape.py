"""The energy landscape: E(x), E(x, y) and predictions of natural images and of each attack's x*."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..attacks import seeded_targets
from ..attacks.base import Polled, num_classes_of
from ..energy import energy, joint_energy
from ._common import _device, _logits, _to_model
from .attack_specs import EXPECTED_SHIFT, AttackSpec, _run_attack, _spec, bf16_ok


@dataclass
class Landscape:
    per_image: pd.DataFrame  # one row per (attack, image): attack, index, label, pred, correct, E(x), E(x,y),
    #                          unchanged (x* is exactly x: the attack handed the natural image back)
    summary: pd.DataFrame  # one row per attack: accuracy, mean/std E(x), shift vs natural, …
    stopped: bool = False


def energy_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, AttackSpec],
    batch_size: int = 128,
    seed: int = 0,
    callback: Optional[Callable[[int, int, str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    amp: Optional[bool] = None,
) -> Landscape:
    """E(x) and E(x, y) of the natural images and of each attack's x*.

    x (N, C, H, W) in [0, 1], y (N,); `attacks` maps a display name to an `ATTACKS` label, a
    `make_attack` name, or an (attack, target) pair. `callback(done, total, name)` follows the
    batches; `should_stop()` ends the run early (`stopped`). Both are also called inside the
    attacks, between their forward passes, every `attacks.base.POLL_S` seconds (Square makes 1,000 a batch,
    minutes on a laptop; PGD-10 on a PreActResNet-18 tens of seconds), so a stop takes effect
    within one. `amp` crafts the attacks under
    bf16 autocast (default: where `bf16_ok`); every energy is computed in fp32.
    MISSION.md, observation 1: untargeted attacks lower E(x), targeted ones raise it.
    """
    if amp is None:
        amp = bf16_ok(_device(model))
    y = y.long().cpu()
    n = int(y.shape[0])
    specs = {"natural": (None, None), **{k: _spec(v) for k, v in attacks.items()}}
    nb = (n + batch_size - 1) // batch_size
    total, done = len(specs) * nb, 0
    frames, rows, stopped = [], [], False
    dev = _device(model)

    def poll(name: str) -> None:
        """Inside an attack, before a forward pass (at most every `POLL_S` seconds, `Polled` sees to
        that): the callback (in the app, a point where a Stop click takes effect) and `should_stop`."""
        if callback is not None:
            callback(done, total, name)
        if should_stop is not None and should_stop():
            raise _Stopped

    k = num_classes_of(model, _to_model(model, x[:1]))  # once: a forward pass where the model does not say
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for name, (attack, target) in specs.items():
            t0, logits, same = time.perf_counter(), [], []
            if attack is not None:  # random target classes drawn once for all n images, from `seed`
                target = seeded_targets(attack, target, y, k, seed)
            polled = Polled(model, lambda _name=name: poll(_name))  # the attack's view of the model
            for i in range(0, n, batch_size):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                xb, yb = _to_model(model, x[i:i + batch_size]), y[i:i + batch_size].to(dev)
                if attack is not None:
                    tb = target[i:i + batch_size].to(dev) if isinstance(target, torch.Tensor) else target
                    try:  # before each of the attack's forward passes: report, and stop if asked
                        xa = _run_attack(attack, tb, polled, xb, yb, amp=amp)
                    except _Stopped:
                        stopped = True
                        break
                    same.append((xa == xb).flatten(1).all(1).cpu())
                    xb = xa
                logits.append(_logits(model, xb, batch_size))
                done += 1
                if callback is not None:
                    callback(done, total, name)
            if stopped or not logits:
                break
            lg = torch.cat(logits)  # (N, K)
            pred = lg.argmax(1)
            frames.append(pd.DataFrame({
                "attack": name, "index": np.arange(n), "label": y.numpy(), "pred": pred.numpy(),
                "correct": (pred == y).numpy(), "E(x)": energy(lg).numpy(), "E(x,y)": joint_energy(lg, y).numpy(),
                "unchanged": torch.cat(same).numpy() if same else np.zeros(n, dtype=bool)}))
            rows.append({"attack": name, "time_s": time.perf_counter() - t0})
    per_image = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["attack", "index", "label", "pred", "correct", "E(x)", "E(x,y)", "unchanged"])
    return Landscape(per_image, _summary(per_image, rows), stopped)


class _Stopped(Exception):
    """`should_stop()` said so inside an attack."""


def _summary(per_image: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    if per_image.empty:
        return pd.DataFrame()
    g = per_image.groupby("attack", sort=False)
    s = pd.DataFrame({"n": g.size(), "accuracy": g["correct"].mean(), "mean E(x)": g["E(x)"].mean(),
                      "std E(x)": g["E(x)"].std(ddof=0), "mean E(x,y)": g["E(x,y)"].mean()})
    nat = s.loc["natural"] if "natural" in s.index else None
    if nat is not None:
        s["shift E(x)"] = s["mean E(x)"] - nat["mean E(x)"]  # negative: x* sits lower than x
        s["shift E(x,y)"] = s["mean E(x,y)"] - nat["mean E(x,y)"]
        # per image, paired with its own natural image: E(x*) − E(x); below 0, x* sits lower than x
        e_nat = per_image[per_image["attack"] == "natural"].set_index("index")["E(x)"]
        diff = pd.Series(per_image["E(x)"].to_numpy() - e_nat.reindex(per_image["index"]).to_numpy(),
                         index=per_image.index)
        s["share E(x)↓"] = (diff < 0).groupby(per_image["attack"], sort=False).mean()
        by = diff.groupby(per_image["attack"], sort=False)
        s["shift E(x) se"] = by.std(ddof=1) / np.sqrt(by.count())  # standard error of the mean shift
    s["unchanged"] = g["unchanged"].mean().astype(float)  # images handed back as they were (APGD-T where it fails)
    if "natural" in s.index:
        s.loc["natural", "unchanged"] = np.nan
    s["time_s"] = pd.Series({r["attack"]: r["time_s"] for r in rows})
    return s.reset_index()


def toward_expected(shift: float, expected: str) -> float:
    """A shift of mean E(x) counted positive the way Observation 1 expects it (`EXPECTED_SHIFT`:
    "lower" or "higher")."""
    return -shift if expected == "lower" else shift


def observation1(summary: pd.DataFrame) -> pd.DataFrame:
    """Observation 1 checked on a landscape's summary: for each attack with an expected direction
    (`EXPECTED_SHIFT`), the mean shift of E(x) from the natural images and its standard error
    (paired, per image), the share of images whose E(x) dropped, the share handed back
    unchanged, and the verdict: "holds" when the mean moved the expected way by more than two
    standard errors, "fails" when it moved the other way by as much, "unclear" in between.
    Empty when nothing applies."""
    cols = ["attack", "expected", "shift E(x)", "se", "share E(x)↓", "unchanged", "verdict"]
    if summary.empty or "shift E(x)" not in summary:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, r in summary.iterrows():
        want = EXPECTED_SHIFT.get(r["attack"])
        if want is None:
            continue
        shift, se = float(r["shift E(x)"]), float(r.get("shift E(x) se", 0.0))
        signed = toward_expected(shift, want)
        verdict = "holds" if signed > 2 * se else ("fails" if signed < -2 * se else "unclear")
        rows.append({"attack": r["attack"], "expected": want, "shift E(x)": shift, "se": se,
                     "share E(x)↓": r["share E(x)↓"], "unchanged": r.get("unchanged", 0.0), "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


OUTCOMES = ("stays correct", "flipped", "already wrong", "corrected")  # natural → x*, by the true class


def shift_by_outcome(per_image: pd.DataFrame) -> pd.DataFrame:
    """Where each attack moved E(x), split by what it did to the prediction. Every image of an
    attack's x* is paired with its own natural image and falls in one group: "stays correct"
    (right before and after), "flipped" (right before, wrong after), "already wrong" (wrong on
    the natural image) and "corrected" (wrong before, right after). One row per (attack, group)
    with images: n, its share of the attack's images, the mean shift of E(x) and of E(x, y)
    (x* minus x), the shift's standard error, the share of images whose E(x) dropped and the
    share handed back unchanged (APGD-T, FAB-T and Square where they do not flip an image).
    Needs a landscape's per_image with its "natural" rows; empty without them."""
    cols = ["attack", "outcome", "n", "share", "shift E(x)", "se", "share E(x)↓", "shift E(x,y)", "unchanged"]
    nat = per_image[per_image["attack"] == "natural"].set_index("index")
    if nat.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for name, g in per_image[per_image["attack"] != "natural"].groupby("attack", sort=False):
        before = nat["correct"].reindex(g["index"]).to_numpy().astype(bool)
        after = g["correct"].to_numpy().astype(bool)
        d = g["E(x)"].to_numpy() - nat["E(x)"].reindex(g["index"]).to_numpy()
        dy = g["E(x,y)"].to_numpy() - nat["E(x,y)"].reindex(g["index"]).to_numpy()
        same = g["unchanged"].to_numpy().astype(bool) if "unchanged" in g else np.zeros(len(g), bool)
        groups = dict(zip(OUTCOMES, (before & after, before & ~after, ~before & ~after, ~before & after)))
        for outcome, m in groups.items():
            k = int(m.sum())
            if k == 0:
                continue
            rows.append({"attack": name, "outcome": outcome, "n": k, "share": k / len(g), "shift E(x)": float(d[m].mean()),
                         "se": float(d[m].std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan"),
                         "share E(x)↓": float((d[m] < 0).mean()), "shift E(x,y)": float(dy[m].mean()),
                         "unchanged": float(same[m].mean())})
    return pd.DataFrame(rows, columns=cols)


def outcome_summary(by_outcome: pd.DataFrame, attack: str) -> str:
    """One sentence on `shift_by_outcome` for one attack: the mean shift of E(x) in each group,
    with its size, and where a whole group came back unchanged, that it did; "" when the attack
    is not there."""
    g = by_outcome[by_outcome["attack"] == attack]
    if g.empty:
        return ""
    parts = [f"{r['outcome']} ({r['n']} images{', all handed back unchanged' if r.get('unchanged', 0) == 1 else ''}) "
             f"{r['shift E(x)']:+.3f}" for _, r in g.iterrows()]
    return f"{attack}, mean E(x*) − E(x) by what the attack did to the prediction: " + " · ".join(parts) + "."
