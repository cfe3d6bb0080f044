"""Generation from a robust classifier: `generate(model, labels, ...)` runs SGLD chains on an
energy of the classifier (Grathwohl et al. 2020; Santurkar et al. 2019; Mirza et al. 2024).

Objectives (per chain, logits f(x) ∈ R^K, target class y):
- "joint"     E(x, y) = −f_y(x)              (class-conditional; the default)
- "ce"        CE(x, y) = E(x, y) − E(x)       (only p(y|x); tends to make adversarial-looking images)
- "marginal"  E(x) = −logsumexp_k f_k(x)      (unconditional; y only picks the initialisation)

Defaults: every argument left as None comes from `default_settings(model)`: per threat model
(L∞, L2 or a standard model), overridden by `model.config["generation"]` (a checkpoint's
config.json), so a user who changes nothing gets the settings we know work best for it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from .. import WeatError
from ..attacks.base import eval_mode
from ..energy import energy, joint_energy
from .class_stats import ClassStats
from .init import initial_images
from .settings import (  # noqa: F401 - re-exported (FAMILY_DEFAULTS, threat_model: see __all__)
    FAMILY_DEFAULTS,
    OBJECTIVES,
    GenerationSettings,
    _objective_name,
    default_settings,
    threat_model,
)
from .sgld import DIVERGENCE_REASONS, SamplingDiverged, SGLDState

__all__ = [
    "FAMILY_DEFAULTS",
    "GenerationResult",
    "GenerationSettings",
    "OBJECTIVES",
    "default_settings",
    "generate",
    "objective_energy",
    "threat_model",
]

log = logging.getLogger(__name__)

def objective_energy(logits: torch.Tensor, y: torch.Tensor, objective: str) -> torch.Tensor:
    """The energy SGLD descends, (B,): E(x, y), CE(x, y) or E(x) of logits (B, K)."""
    if objective == "joint":
        return joint_energy(logits, y)
    if objective == "marginal":
        return energy(logits)
    if objective == "ce":
        return joint_energy(logits, y) - energy(logits)
    raise WeatError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")


@dataclass
class GenerationResult:
    """What `generate` made.

    images (M, C, H, W) in [0, 1] and labels (M,): the chains that finished (diverged chains are
    never returned as images); chain (M,): their indices among the N requested labels.
    energies, joint, marginal (T+1, N): the objective, E(x, y) and E(x) of every chain at every
    step (row 0 = the initialisation), NaN from a chain's divergence on.
    diverged: one record per diverged chain {index, label, step, reason}.
    """

    images: torch.Tensor
    labels: torch.Tensor
    chain: torch.Tensor
    requested: torch.Tensor
    energies: torch.Tensor
    joint: torch.Tensor
    marginal: torch.Tensor
    diverged: list[dict] = field(default_factory=list)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    seed: Optional[int] = None
    seconds: float = 0.0

    @property
    def num_diverged(self) -> int:
        return len(self.diverged)

    def trace_dict(self) -> dict[str, Any]:
        """Settings and per-chain energy traces as plain JSON-able data (NaN → None)."""

        def col(t: torch.Tensor, i: int) -> list:
            return [None if not math.isfinite(v) else round(v, 5) for v in t[:, i].tolist()]

        chains = []
        ok = set(self.chain.tolist())
        for i, y in enumerate(self.requested.tolist()):
            chains.append({"index": i, "label": y, "finished": i in ok, "energy": col(self.energies, i),
                           "joint": col(self.joint, i), "marginal": col(self.marginal, i)})
        return {"settings": self.settings.to_dict(), "seed": self.seed, "seconds": round(self.seconds, 3),
                "diverged": self.diverged, "chains": chains}


def _image_shape(model: nn.Module, stats: Optional[ClassStats]) -> tuple[int, int, int]:
    if stats is not None:
        return stats.shape
    cfg = getattr(model, "config", {}) or {}
    for key in ("image_shape", "input_shape", "input_size"):
        if key in cfg and len(cfg[key]) == 3:
            return tuple(int(s) for s in cfg[key])
    ds = str(cfg.get("dataset", "")).lower()
    return (3, 64, 64) if ds in ("tinyimagenet", "tiny-imagenet") else (3, 32, 32)


def generate(
    model: nn.Module,
    labels: Union[torch.Tensor, Sequence[int]],
    steps: Optional[int] = None,
    step_size: Optional[float] = None,
    noise_std: Optional[float] = None,
    momentum: Optional[float] = None,
    init: Union[str, torch.Tensor, None] = None,
    objective: Optional[str] = None,
    seed: Optional[int] = None,
    callback: Optional[Callable[[int, SGLDState], None]] = None,
    *,
    sampler: Optional[str] = None,
    max_update: Optional[float] = None,
    update_norm: Optional[str] = None,
    pca_variance: Optional[float] = None,
    stats: Union[ClassStats, str, None] = "auto",
    batch_size: Optional[int] = 256,
    channels_last: Optional[bool] = None,
) -> GenerationResult:
    """Sample images of classes `labels` (N,) from `model` by SGLD on an energy.

    Arguments left as None come from `default_settings(model)`; `max_update=0` turns the
    update clamp off where the default has one. `init` is "uniform",
    "gaussian", "pca" or a tensor of starting images (N, C, H, W) in [0, 1]; the Gaussian and
    PCA starts need class statistics: `stats="auto"` loads the ones saved beside the model's
    checkpoint (when the default init needs them and none exist, it falls back to uniform).
    `seed` makes the run reproducible (on the same device and batch size). `callback(step,
    state)` is called after the initialisation (step 0) and after every step of every batch.

    Returns a `GenerationResult` (on the CPU: images (M, C, H, W) in [0, 1] of the M ≤ N chains
    that did not diverge, energy traces). Raises `SamplingDiverged` when every chain diverged.

    Example: ``res = generate(model, torch.arange(10).repeat_interleave(8), seed=0)``
    """
    t0 = time.perf_counter()
    explicit_init = init is not None
    base = default_settings(model)
    settings = base.updated(
        steps=steps, step_size=step_size, noise_std=noise_std, momentum=momentum,
        init=init if isinstance(init, str) else None, objective=_objective_name(objective) if objective else None,
        sampler=sampler, max_update=max_update or None, update_norm=update_norm, pca_variance=pca_variance,
    )
    if max_update == 0:  # 0: no clamp, overriding a family default that has one (the standard family's)
        settings = replace(settings, max_update=None)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    y_all = torch.as_tensor(labels, dtype=torch.long).view(-1).to(device)
    n = y_all.shape[0]
    k = getattr(model, "num_classes", None)
    if n == 0:
        raise WeatError("no labels given: nothing to generate")
    if isinstance(k, int) and (int(y_all.min()) < 0 or int(y_all.max()) >= k):
        raise WeatError(f"labels must be class indices 0..{k - 1}, got {y_all.min().item()}..{y_all.max().item()}")

    if isinstance(stats, str):
        stats = ClassStats.for_model(model) if stats == "auto" else ClassStats.load(stats)
    if stats is not None and isinstance(k, int) and stats.num_classes != k:
        raise WeatError(f"the class statistics have {stats.num_classes} classes, the model {k}")
    if isinstance(init, torch.Tensor):
        x0 = init.detach().to(device, torch.float32).clamp(0, 1)
        if x0.shape[0] != n:
            raise WeatError(f"init has {x0.shape[0]} images for {n} labels")
        settings = replace(settings, init="custom")
    else:
        if settings.init != "uniform" and stats is None:
            if explicit_init or "init" in (getattr(model, "config", {}).get("generation") or {}):
                raise WeatError(f"the {settings.init!r} initialisation needs class statistics, and none are saved "
                                "beside this checkpoint: compute them once with `python -m weat_core init-stats "
                                "--checkpoint NAME` (or use init='uniform')")
            log.info("no class statistics beside this checkpoint: starting from uniform noise "
                     "(run `python -m weat_core init-stats` for the better %s start)", settings.init)
            settings = replace(settings, init="uniform")
        gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        x0 = initial_images(settings.init, y_all, _image_shape(model, stats), stats, gen, device, settings.pca_variance)
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device).manual_seed(seed + 1)  # chain noise: its own stream
    if channels_last is None:
        channels_last = device.type == "cpu"  # oneDNN's faster CPU convolutions (see bench/bench_sampling.py)

    sgld = settings.make_sampler()
    steps_n = settings.steps
    T = steps_n + 1
    energies = torch.full((T, n), float("nan"))
    joint = torch.full((T, n), float("nan"))
    marginal = torch.full((T, n), float("nan"))
    finished = torch.zeros(n, dtype=torch.bool)
    out_images = torch.empty(n, *x0.shape[1:])
    diverged: list[dict] = []
    bs = n if not batch_size else int(batch_size)

    with eval_mode(model):
        for lo in range(0, n, bs):
            hi = min(lo + bs, n)
            y = y_all[lo:hi]

            def energy_fn(x: torch.Tensor, y: torch.Tensor = y):
                logits = model(x)  # (B, K)
                return objective_energy(logits, y, settings.objective), logits

            x = x0[lo:hi]
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            state = sgld.init(x, energy_fn, with_grad=steps_n > 0)

            def record(s: SGLDState, t: int) -> None:
                live = s.alive.cpu()
                e = s.energy.cpu().where(live, torch.tensor(float("nan")))
                energies[t, lo:hi] = e
                if s.logits is not None:
                    lg = s.logits.float()
                    joint[t, lo:hi] = joint_energy(lg, y).cpu().where(live, torch.tensor(float("nan")))
                    marginal[t, lo:hi] = energy(lg).cpu().where(live, torch.tensor(float("nan")))

            record(state, 0)
            if callback is not None:
                callback(0, state)
            for t in range(steps_n):
                state = sgld.step(state, energy_fn, gen, with_grad=t < steps_n - 1)
                record(state, t + 1)
                if callback is not None:
                    callback(t + 1, state)
                if not bool(state.alive.any()):
                    break
            alive = state.alive.cpu()
            out_images[lo:hi] = state.x.float().cpu().contiguous()
            finished[lo:hi] = alive
            for i in (~alive).nonzero().squeeze(1).tolist():
                rec = {"index": lo + i, "label": int(y[i]), "step": int(state.diverged_at[i]),
                       "reason": DIVERGENCE_REASONS.get(int(state.why[i]), "diverged")}
                diverged.append(rec)

    if diverged:
        log.warning("%d of %d chains diverged (NaN/inf) and were stopped, e.g. chain %d (class %d) at step %d: %s",
                    len(diverged), n, diverged[0]["index"], diverged[0]["label"], diverged[0]["step"],
                    diverged[0]["reason"])
    if not bool(finished.any()):
        raise SamplingDiverged(
            f"every chain diverged (NaN/inf), e.g. at step {diverged[0]['step']}: {diverged[0]['reason']}; "
            "lower the step size or set a max_update clamp", diverged)
    idx = finished.nonzero().squeeze(1)
    return GenerationResult(
        images=out_images[idx], labels=y_all.cpu()[idx], chain=idx, requested=y_all.cpu(),
        energies=energies, joint=joint, marginal=marginal, diverged=diverged, settings=settings,
        seed=seed, seconds=time.perf_counter() - t0,
    )
