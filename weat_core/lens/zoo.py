"""The model zoo: what a model is, and clean/robust accuracy and energy gaps across models."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .landscape import toward_expected
from .sweep import lowers_from


def describe_model(model: nn.Module) -> dict[str, Any]:
    """arch, classes, parameter count and provenance of a model (from `model.config`)."""
    cfg = dict(getattr(model, "config", {}))
    return {"arch": cfg.get("arch", type(model).__name__), "num_classes": cfg.get("num_classes"),
            "params": sum(p.numel() for p in model.parameters()), "method": cfg.get("method", "?"),
            "dataset": cfg.get("dataset", "?"), "epoch": cfg.get("epoch"), "source": cfg.get("source", "")}


def recorded_table(infos: Sequence[Mapping[str, Any]], attack: str = "pgd20") -> pd.DataFrame:
    """The metrics stored in checkpoints' config.json (`checkpoints.list_checkpoints()` entries
    as dicts), one row per checkpoint, in the columns `zoo_table` uses: accuracies under every
    recorded attack, mean natural E(x), ΔE / |ΔE| under `attack`, from which ε on untargeted PGD
    lowers E(x) (a stored sweep), the mean span of E(x) on each test image's attack plane (a stored
    `plane`) and the attacks for which Observation 1 holds or fails at 8/255 (a stored landscape).
    Nothing is computed."""
    rows = []
    for i in infos:
        row = {"model": i["name"], "arch": i.get("arch"), "method": i.get("method"), "dataset": i.get("dataset"),
               "n": i.get("n"), **{k: v for k, v in i.items() if k.endswith("_acc")}}
        energy, gap = i.get("energy_mean") or {}, i.get("delta_e") or {}
        if "clean" in energy:
            row["E(x) natural"] = energy["clean"]
        if isinstance(gap, Mapping) and attack in gap:
            row["ΔE"] = gap[attack]
            row["|ΔE|"] = abs(gap[attack])
        sweep = (i.get("obs1_sweep") or {}).get("rows")
        if sweep:  # `sweep --store`: from which ε on untargeted PGD lowers mean E(x)
            row["PGD lowers E(x) from ε (/255)"] = lowers_from(pd.DataFrame(sweep))
        span = i.get("plane_span") or {}
        if "mean" in span:  # `plane --store`: how much E(x) changes around each test image, on average
            row["E(x) span, attack plane"] = span["mean"]
        attacks = (i.get("obs1_attacks") or {}).get("rows")
        if attacks:  # `landscape --store`: the attacks that move E(x) as Observation 1 says, or against it
            for verdict in ("holds", "fails"):
                row[f"Observation 1 {verdict} for"] = ", ".join(r["attack"] for r in attacks if r["verdict"] == verdict)
        rows.append(row)
    return pd.DataFrame(rows)


def observation1_grid(infos: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Observation 1 for every attack on every checkpoint that stores it (`landscape --store`:
    `obs1_attacks` in its metrics), one row per model and attack: the expected direction, the
    mean shift of E(x) from the natural images with its standard error, the verdict, and `z`,
    the shift in standard errors counted positive the expected way (|z| > 2 is the verdict's
    "beyond the noise"; ±inf where the standard error is 0, as when an attack hands every image
    back). Models and attacks keep their stored order. Nothing is computed but that ratio."""
    cols = ["model", "method", "attack", "expected", "shift", "se", "verdict", "z"]
    rows = []
    for i in infos:
        for r in (i.get("obs1_attacks") or {}).get("rows") or []:
            if r.get("expected") not in ("lower", "higher") or r.get("shift") is None:
                continue
            signed = toward_expected(float(r["shift"]), r["expected"])
            se = float(r.get("se") or 0.0)
            z = signed / se if se > 0 else (np.sign(signed) * np.inf if signed else 0.0)
            rows.append({"model": i["name"], "method": i.get("method"), "attack": r["attack"],
                         "expected": r["expected"], "shift": float(r["shift"]), "se": se,
                         "verdict": r.get("verdict"), "z": float(z)})
    return pd.DataFrame(rows, columns=cols)


def zoo_table(
    models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, attacks: Sequence[str] = ("pgd20",),
    eps: float = 8 / 255, batch_size: int = 128, callback: Optional[Callable[[str, str, int, int], None]] = None,
    per_image: Optional[dict[str, dict[str, list[bool]]]] = None,
) -> pd.DataFrame:
    """One row per model: clean and robust accuracy under each attack ("pgd20", "aa-fast",
    "aa", …), mean natural/adversarial E(x) and the gap ΔE = mean E(x) − mean E(x*) under
    the first attack (MISSION.md observation 3: robust models have smaller gaps). `per_image`,
    a dict, receives each model's per-image results ({model: {"clean" / attack: [bool]}}) for
    `paired_table`."""
    from ..evaluate import evaluate

    rows = []
    for name, model in models.items():
        cb = (lambda a, d, t, name=name: callback(name, a, d, t)) if callback is not None else None
        r = evaluate(model, x, y, attacks=list(attacks), eps=eps, batch_size=batch_size, callback=cb,
                     per_image=per_image is not None)
        if per_image is not None:
            per_image[name] = r["correct"]
        first = attacks[0] if attacks else None
        row = {"model": name, **{k: v for k, v in describe_model(model).items() if k != "source"},
               "n": r["n"], "clean_acc": r["clean_acc"], **{f"{a}_acc": r[f"{a}_acc"] for a in attacks},
               "E(x) natural": r["energy"]["clean"]["mean"]}
        if first:
            row["E(x*) " + first] = r["energy"][first]["mean"]
            row["ΔE"] = r["delta_e"][first]
            row["|ΔE|"] = abs(r["delta_e"][first])
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(per_image: Mapping[str, Mapping[str, Sequence[bool]]], reference: str) -> pd.DataFrame:
    """Every other model against `reference`, image by image on the same images (`zoo_table`'s
    `per_image`): per measure, its accuracy, the difference from the reference in points with
    two standard errors of the paired difference, the images only one of the two gets right, and
    "ahead" / "behind" (beyond those two errors) or "level" (`results.compare_results`)."""
    from ..results import compare_results

    rows = compare_results({k: {"correct": dict(v)} for k, v in per_image.items()}, reference)
    return pd.DataFrame([{"model": r["model"], "measure": r["measure"], "accuracy": r["acc_b"],
                          "vs " + reference: 100 * r["diff"], "± 2 SE": 200 * r["se"],
                          "right only for " + reference: r["only_a"], "right only for this": r["only_b"],
                          "verdict": r["verdict"]} for r in rows])


def gap_trend(table: pd.DataFrame, rob: str = "pgd20_acc", gap: str = "|ΔE|") -> Optional[dict[str, Any]]:
    """Observation 3 across the models of a `recorded_table` or `zoo_table`: Spearman's rank
    correlation between robust accuracy (`rob`) and the energy gap |ΔE| over the robust models
    (standard training left out, whose gap is of another kind). Negative: the gap shrinks as
    robustness grows, as Mirza et al. (2024) report. `{"rho", "p", "n", "verdict"}`: `p` is the
    two-sided permutation p-value (`rank_corr_p`), and the verdict is "holds" (ρ < 0) or "runs
    against it" (ρ > 0) at p < 0.05, else "no clear trend" (always so under five models: no
    order of three or four is rarer than that by chance). `gap` names another measure of
    smoothness in place of |ΔE|, e.g. "E(x) span, attack plane" (`recorded_table`). None under
    three models or when either column is constant."""
    if rob not in table or gap not in table:
        return None
    t, a, b = _robust_ranks(table, rob, gap)
    if len(t) < 3 or t[rob].nunique() < 2 or t[gap].nunique() < 2:
        return None
    rho = float(a @ b)  # Pearson on average ranks (ties included): Spearman's ρ
    p = rank_corr_p(a, b)
    return {"rho": rho, "p": p, "n": int(len(t)), "verdict": _verdict(rho, p)}


def _robust_ranks(table: pd.DataFrame, rob: str, gap: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The robust models' rows that have both numbers, and the centred, unit-length vectors of
    their ranks by `rob` and by `gap` (their dot product is Spearman's ρ)."""
    t = table[table["method"] != "standard"] if "method" in table else table
    t = t.dropna(subset=[rob, gap])
    return t, _unit(t[rob].rank().to_numpy(float)), _unit(t[gap].rank().to_numpy(float))


def _unit(r: np.ndarray) -> np.ndarray:
    if r.size == 0:
        return r
    c = r - r.mean()
    norm = np.linalg.norm(c)
    return c / norm if norm > 0 else c


def _verdict(rho: float, p: float) -> str:
    return "no clear trend" if p >= 0.05 else "holds" if rho < 0 else "runs against it"


def rank_corr_p(ra: np.ndarray, rb: np.ndarray, draws: int = 20_000, seed: int = 0) -> float:
    """Two-sided permutation p-value of the correlation of two rank vectors: the share of pairings
    of the ranks whose |ρ| is at least the one found. Every pairing up to 7 values (5,040),
    else `draws` random ones (seeded; (k + 1) / (draws + 1), so never 0)."""
    a, b = _unit(np.asarray(ra, float)), _unit(np.asarray(rb, float))
    n, found = len(a), abs(float(a @ b)) - 1e-12
    if n <= 7:
        return float(np.mean(np.abs(_every_order(a, b)) >= found))
    perms = np.random.default_rng(seed).permuted(np.tile(np.arange(n), (draws, 1)), axis=1)  # (draws, n)
    return float((np.sum(np.abs(a[perms] @ b) >= found) + 1) / (draws + 1))


def _every_order(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ρ of unit rank vector `a`, in every order of its entries (n! of them), with `b`."""
    return a[np.array(list(itertools.permutations(range(len(a)))))] @ b


def training_recipe(cfg: Mapping[str, Any], length: bool = True) -> tuple:
    """How a checkpoint or recorded run (its config.json) was trained, its method and seed apart:
    dataset, model and its settings (width), how many training images (`--limit`), batch,
    learning rate and schedule, ε, and with `length` the planned epochs and the number of
    stages (`train --init` fine-tunes). Models with one recipe were trained alike, so what
    differs between them comes from the method (and the seed)."""
    t = cfg.get("training") or {}
    key: tuple = (cfg.get("dataset"), cfg.get("arch"), json.dumps(cfg.get("arch_kwargs") or {}, sort_keys=True),
                  t.get("limit"), t.get("batch_size"), t.get("lr"), t.get("schedule"), t.get("eps"))
    return key + (t.get("epochs"), len(cfg.get("stages") or ())) if length else key


def gap_trend_within(table: pd.DataFrame, recipes: Mapping[str, Hashable],
                     rob: str = "pgd20_acc", gap: str = "|ΔE|") -> Optional[dict[str, Any]]:
    """Observation 3 within groups of models trained alike (`recipes`: model → its
    `training_recipe`; models without one are left out). Across groups, architecture, length
    and data move robustness and |ΔE| together, which can hide or invert the relation the paper
    states for robustness alone; within a group only the method differs. `{"groups", "rho", "p",
    "n", "verdict"}`: `groups` holds `gap_trend` of every group of at least three robust models
    (with its `models`), largest first; `rho` is the mean of their ρ, and `p` its two-sided
    permutation p-value with ranks shuffled only within each group (every combination of the groups'
    orders when there are at most 20,000, else 20,000 seeded draws), the verdict
    as `gap_trend`'s; `gap` as for `gap_trend`. None without such a group."""
    if "model" not in table:
        return None
    keyed = table[table["model"].isin(list(recipes))]
    members: dict[Hashable, list[str]] = {}
    for m in keyed["model"]:
        members.setdefault(recipes[m], []).append(m)
    groups, units = [], []
    for models in members.values():
        sub = keyed[keyed["model"].isin(models)]
        trend = gap_trend(sub, rob, gap)
        if trend is None:
            continue
        robust, a, b = _robust_ranks(sub, rob, gap)
        groups.append({"models": robust["model"].tolist(), **trend})
        units.append((a, b))
    if not groups:
        return None
    rho = float(np.mean([a @ b for a, b in units]))
    draws = 20_000
    if math.prod(math.factorial(len(a)) for a, _ in units) <= draws:  # few orders (three trios: 216): all of them
        per_group = [_every_order(a, b) for a, b in units]
        null = np.array([sum(c) for c in itertools.product(*per_group)])
        p = float(np.mean(np.abs(null / len(units)) >= abs(rho) - 1e-12))
    else:
        rng, null = np.random.default_rng(0), np.zeros(draws)
        for a, b in units:  # each group's ρ under a shuffle of its own ranks
            null += rng.permuted(np.tile(a, (draws, 1)), axis=1) @ b
        p = float((np.sum(np.abs(null / len(units)) >= abs(rho) - 1e-12) + 1) / (draws + 1))
    return {"groups": sorted(groups, key=lambda g: (-g["n"], g["models"])), "rho": rho, "p": p,
            "n": int(sum(g["n"] for g in groups)), "verdict": _verdict(rho, p)}
