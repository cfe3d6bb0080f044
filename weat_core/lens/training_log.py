"""Per-epoch training logs (a run folder's or a shipped checkpoint's `log.jsonl`, a live run's
history): as frames, smoothed, cut into the three phases of adversarial training, and summed up
per run (where robust accuracy peaked, whether it then fell: robust overfitting)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from .. import WeatError
from ..results import robust_peak

PHASE_NAMES = ("1 · warm-up", "2 · robust learning", "3 · robust overfitting", "3 · plateau", "1 · high learning rate")
MIN_EPOCHS_FOR_PHASES = 4


def load_training_log(path: Union[str, Path]) -> pd.DataFrame:
    """The per-epoch records of a run (`log.jsonl`, or a folder holding one) as a DataFrame
    sorted by epoch; unreadable lines are skipped."""
    p = Path(path)
    p = p / "log.jsonl" if p.is_dir() else p
    if not p.is_file():
        raise WeatError(f"no training log at {p}")
    recs = []
    for line in p.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and "epoch" in r:
            recs.append(r)
    if not recs:
        raise WeatError(f"{p} holds no epoch records")
    df = history_frame(recs)
    cfg_path = p.parent / "config.json"  # a shipped checkpoint: older logs name the subset size only there
    if "eval_size" not in df and cfg_path.is_file():
        try:
            size = (json.loads(cfg_path.read_text()).get("training") or {}).get("eval_size")
        except (json.JSONDecodeError, AttributeError):
            size = None
        if size:
            df["eval_size"] = int(size)
    return df


def history_frame(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Training records → DataFrame by epoch, with ΔE filled in from the energies if absent."""
    df = pd.DataFrame(list(history))
    if df.empty:
        return df
    df = df.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    if "delta_e" not in df and {"energy_nat_mean", "energy_adv_mean"} <= set(df):
        df["delta_e"] = df["energy_nat_mean"] - df["energy_adv_mean"]
    return df


def smooth_curves(df: pd.DataFrame, cols: Sequence[str], window: int, by: Optional[str] = None,
                  x: str = "epoch") -> pd.DataFrame:
    """`df` with each of `cols` replaced by its centred moving average over `window` recorded
    epochs (per `by` group, e.g. one run each; shorter at the ends), to read a trend through the
    per-epoch subsets' sampling noise. Centred, not exponential: a peak stays at its epoch.
    Epochs where a column is missing stay missing and do not count in the window."""
    if window < 1 or window % 2 == 0:
        raise WeatError(f"smoothing window must be an odd number of epochs, not {window}")
    out = df.reset_index(drop=True)  # rows stay in their order: the groups' order sets the charts' colours
    if window == 1:
        return out
    for _, g in (out.groupby(by, sort=False) if by else [(None, out)]):
        g = g.sort_values(x, kind="stable")
        for c in cols:
            if c in g:
                ok = g[c].dropna()
                out.loc[ok.index, c] = ok.rolling(window, center=True, min_periods=1).mean()
    return out


def training_phases(df: pd.DataFrame) -> dict[str, Any]:
    """Where the three phases of adversarial training lie in a run (a heuristic for display).

    Phase 1 lasts while the learning rate rises to or stays at its peak (one-cycle: the
    warm-up; step schedule: until the first decay; flat schedules: the first tenth of
    training); phase 2 runs up to the epoch of best robust test accuracy; phase 3 after it.
    Robust overfitting is flagged when the robust test accuracy ends below its best (of at
    least 5 %) by more than a point and more than the subset's noise (`robust_peak`, with the
    records' `eval_size`) while training goes on (Rice et al. 2020); by then ΔE
    typically drifts away from 0 for SAT and stays near 0 for TRADES/WEAT; without it phase 3
    is a plateau. Where robust accuracy peaks inside phase 1 (before the first decay of a step
    schedule, as on a tiny training set), phase 1 ends at the peak, no phase 2 follows, and
    `phase1_end` says where the schedule alone would have ended phase 1 (else None). Standard
    (non-adversarial) runs and runs under 4 epochs get no phases."""
    if df.empty or "test_pgd_acc" not in df or ("method" in df and (df["method"] == "standard").any()):
        # a standard (non-adversarial) run has no robust phases to speak of
        return {"phases": [], "best_epoch": None, "overfitting": False}
    ep = df["epoch"].to_numpy()
    rob = df["test_pgd_acc"].to_numpy(dtype=float)
    best_i, drop, overfit = robust_peak(rob, _eval_size(df))
    first = PHASE_NAMES[0]
    if "lr" in df and df["lr"].nunique() > 1:
        lr = df["lr"].to_numpy(dtype=float)
        warm_i = int(np.flatnonzero(lr >= 0.999 * lr.max())[-1])  # last epoch at the peak learning rate
        if lr[0] >= 0.5 * lr.max():  # no ramp (step schedule): phase 1 is the high-learning-rate stretch
            first = PHASE_NAMES[4]
    else:
        warm_i = max(0, len(ep) // 10 - 1)
    # robust accuracy peaked inside phase 1 (e.g. on a tiny training set, before the first decay):
    # phase 1 ends there and no phase 2 follows; `phase1_end` keeps where the schedule would have ended it
    early = int(ep[warm_i]) if best_i < warm_i else None
    warm_i = min(warm_i, best_i)
    bounds = [(ep[0], ep[warm_i]), (ep[warm_i], ep[best_i]), (ep[best_i], ep[-1])]
    names = (first, PHASE_NAMES[1], PHASE_NAMES[2] if overfit else PHASE_NAMES[3])
    phases = [{"name": n, "start": float(a), "end": float(b)} for n, (a, b) in zip(names, bounds) if b > a]
    if len(ep) < MIN_EPOCHS_FOR_PHASES:
        phases = []  # too short a run to tell phases apart
    return {"phases": phases, "best_epoch": int(ep[best_i]), "best_robust": float(rob[best_i]),
            "overfitting": overfit, "robust_drop": drop, "phase1_end": early if phases else None}


def _eval_size(df: pd.DataFrame) -> Optional[int]:
    """The images behind a log's per-epoch test accuracies (its newest `eval_size`), or None."""
    return int(df["eval_size"].dropna().iloc[-1]) if "eval_size" in df and df["eval_size"].notna().any() else None


def stage_starts(df: pd.DataFrame) -> list[int]:
    """First epoch of every later stage of a run that was fine-tuned from its own earlier
    checkpoint (`train --init`; export tags each record with its `stage`); [] for one stage."""
    if "stage" not in df or df["stage"].nunique() < 2:
        return []
    s = df["stage"].to_numpy()
    return [int(e) for e in df["epoch"].to_numpy()[1:][s[1:] != s[:-1]]]


def runs_summary(runs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per run: its best and last robust test accuracy, the drop between them (robust
    overfitting when `training_phases` flags it), the robust accuracy on the training subset and
    the train−test robust gap at the end, and
    ΔE at the best epoch, at the end and at its most negative; for a run with a weight average
    (`train --ema`), the average's best and last robust accuracy and drop too (`ema_*`).
    Accuracies as fractions."""
    rows = []
    for name, df in runs.items():
        if df.empty:
            continue
        ph = training_phases(df)
        last = df.iloc[-1]
        row: dict[str, Any] = {"run": name, "method": last.get("method", ""), "epochs": int(last["epoch"])}
        if ph.get("best_epoch") is not None:
            best = df.loc[df["epoch"] == ph["best_epoch"]].iloc[0]
            row.update(best_epoch=ph["best_epoch"], best_robust=ph["best_robust"],
                       last_robust=float(last["test_pgd_acc"]), robust_drop=ph["robust_drop"],
                       robust_overfitting=ph["overfitting"])
            if "train_pgd_acc" in df:
                row.update(train_robust_last=float(last["train_pgd_acc"]),
                           train_test_gap_last=float(last["train_pgd_acc"] - last["test_pgd_acc"]))
            if "delta_e" in df:
                row.update(delta_e_best=float(best["delta_e"]))
        if "delta_e" in df:
            row.update(delta_e_last=float(last["delta_e"]), delta_e_min=float(df["delta_e"].min()))
        if "ema_test_pgd_acc" in df and df["ema_test_pgd_acc"].notna().any() and ph.get("best_epoch") is not None:
            # a run with a weight average (`train --ema`): the same peak-and-fall test on the average
            sub = df.dropna(subset=["ema_test_pgd_acc"])
            rob = sub["ema_test_pgd_acc"].to_numpy(dtype=float)
            i, drop, fell = robust_peak(rob, _eval_size(sub))
            row.update(ema_best_epoch=int(sub["epoch"].iloc[i]), ema_best_robust=float(rob[i]),
                       ema_last_robust=float(rob[-1]), ema_robust_drop=drop, ema_robust_overfitting=fell)
        rows.append(row)
    return pd.DataFrame(rows)
