"""Stochastic Gradient Langevin Dynamics with momentum, as a small sampler object.

The update (Welling & Teh 2011, with heavy-ball momentum as in Mirza et al. 2024,
"Shedding more light on robust classifiers under the lens of energy-based models"):

    v ← ζ·v − (η/2)·∇ₓE(x)            (optionally clamped to an L∞ box / L2 ball)
    x ← clip_[0,1](x + v + σ·ε),       ε ∼ N(0, I)

η = `step_size`, ζ = `momentum`, σ = `noise_std`, all in pixel units of images in [0, 1].
`Heun` is the second-order (stochastic Heun / improved Euler) variant: it takes the drift
as the mean of the gradients at x and at the Euler-predicted point (same noise in both),
at the cost of two gradient evaluations per step.

The caller writes the loop (diffusers style), so a UI can watch every step:

    sampler = SGLD(step_size=0.8)
    state = sampler.init(x0, energy_fn)                 # E and ∇E at x0
    for _ in range(40):
        state = sampler.step(state, energy_fn, generator=g)

`energy_fn(x) -> E (B,)` (or `(E (B,), logits (B, K))`) is any differentiable energy of a
batch x (B, C, H, W); each sample's energy must depend on that sample only (models in eval
mode). A chain whose energy, gradient or update stops being finite is marked diverged:
it keeps its last finite image, is frozen from then on, and `state.alive` is False for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from .. import WeatError

__all__ = [
    "DIVERGENCE_REASONS",
    "EnergyFn",
    "Heun",
    "SGLD",
    "SGLDState",
    "SamplingDiverged",
    "make_sampler",
]

EnergyOut = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
EnergyFn = Callable[[torch.Tensor], EnergyOut]

# state.why codes: why a chain stopped (0 = it did not)
DIVERGENCE_REASONS = {1: "non-finite energy", 2: "non-finite gradient", 3: "non-finite update"}


class SamplingDiverged(WeatError):
    """SGLD chains diverged (NaN/inf); `.report` lists (chain index, step, reason)."""

    def __init__(self, message: str, report: Optional[list[dict]] = None):
        super().__init__(message)
        self.report = report or []


@dataclass(frozen=True)
class SGLDState:
    """One point of a batch of chains. Everything is detached.

    x (B, C, H, W) images in [0, 1]; v (B, C, H, W) velocity; energy (B,) E(x) at x;
    grad (B, C, H, W) ∇ₓE at x (None after a final, gradient-free evaluation);
    logits (B, K) at x when the energy function gives them; alive (B,) bool;
    diverged_at (B,) the step at which each chain diverged, −1 if it did not;
    why (B,) the reason code (see DIVERGENCE_REASONS), 0 if it did not.
    """

    x: torch.Tensor
    v: torch.Tensor
    energy: torch.Tensor
    grad: Optional[torch.Tensor]
    logits: Optional[torch.Tensor]
    alive: torch.Tensor
    diverged_at: torch.Tensor
    why: torch.Tensor
    step: int = 0


def _evaluate(energy_fn: EnergyFn, x: torch.Tensor, with_grad: bool):
    """(E (B,), ∇ₓE or None, logits or None) at x; gradients w.r.t. x only."""
    x = x.detach()
    if with_grad:
        x.requires_grad_(True)
    with torch.set_grad_enabled(with_grad):
        out = energy_fn(x)
        e, logits = out if isinstance(out, tuple) else (out, None)
        if e.shape != x.shape[:1]:
            raise ValueError(f"energy_fn must return one energy per image, shape ({x.shape[0]},), got {tuple(e.shape)}")
        grad = None
        if with_grad:
            # sum over the batch: each chain's gradient is its own (samples are independent)
            (grad,) = torch.autograd.grad(e.float().sum(), x)
    return e.detach().float(), grad, None if logits is None else logits.detach()


def _finite_rows(t: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(t).flatten(1).all(dim=1) if t.dim() > 1 else torch.isfinite(t)


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


@dataclass(frozen=True)
class SGLD:
    """SGLD with momentum (first order). See the module docstring for the update.

    step_size η ≥ 0, noise_std σ ≥ 0, momentum ζ ∈ [0, 1) (pixel units, images in [0, 1]);
    max_update: if set, clamp the velocity of each image to an L∞ box (`update_norm="linf"`)
    or L2 ball (`"l2"`) of that radius, a guard against exploding gradients.
    """

    step_size: float = 0.8
    noise_std: float = 0.001
    momentum: float = 0.0
    max_update: Optional[float] = None
    update_norm: str = "linf"

    def __post_init__(self):
        for name in ("step_size", "noise_std"):
            v = getattr(self, name)
            if not v >= 0:  # also rejects NaN
                raise WeatError(f"{name} must be ≥ 0, got {v}")
        if not 0.0 <= self.momentum < 1.0:
            raise WeatError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.max_update is not None and not self.max_update > 0:
            raise WeatError(f"max_update must be > 0 (or None for no clamp), got {self.max_update}")
        if self.update_norm not in ("linf", "l2"):
            raise WeatError(f"update_norm must be 'linf' or 'l2', got {self.update_norm!r}")

    @property
    def grads_per_step(self) -> int:
        return 1

    # -------------------------------------------------------------------------------- pieces

    def init(self, x: torch.Tensor, energy_fn: EnergyFn, with_grad: bool = True) -> SGLDState:
        """The chains' starting state at x (B, C, H, W) in [0, 1], velocity zero."""
        x = x.detach().clamp(0.0, 1.0)
        e, g, logits = _evaluate(energy_fn, x, with_grad)
        why = torch.zeros(x.shape[0], dtype=torch.int8, device=x.device)
        if g is not None:
            why[~_finite_rows(g)] = 2
        why[~_finite_rows(e)] = 1
        alive = why == 0
        if g is not None:  # a chain dead from the start must not feed NaN into its (unused) updates
            g = torch.where(_bcast(alive, g), g, torch.zeros_like(g))
        diverged_at = torch.where(alive, -1, 0).to(torch.long)
        return SGLDState(x, torch.zeros_like(x), e, g, logits, alive, diverged_at, why, 0)

    def _clamp(self, v: torch.Tensor) -> torch.Tensor:
        if self.max_update is None:
            return v
        if self.update_norm == "linf":
            return v.clamp(-self.max_update, self.max_update)
        n = v.flatten(1).norm(dim=1).clamp_min(1e-12)
        return v * _bcast((self.max_update / n).clamp(max=1.0), v)

    def _velocity(self, v: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return self._clamp(self.momentum * v - (self.step_size / 2) * grad)

    def _noise(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        if self.noise_std == 0:
            return torch.zeros_like(x)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.noise_std * eps.contiguous(memory_format=_fmt(x))

    def _drift(self, state: SGLDState, energy_fn: EnergyFn, noise: torch.Tensor):
        """New velocity (B, C, H, W) and whether each chain's drift was finite (B,)."""
        v = self._velocity(state.v, state.grad)
        return v, torch.ones_like(state.alive)

    # ---------------------------------------------------------------------------------- step

    def step(
        self,
        state: SGLDState,
        energy_fn: EnergyFn,
        generator: Optional[torch.Generator] = None,
        with_grad: bool = True,
    ) -> SGLDState:
        """Move every live chain one step and evaluate E (and ∇E unless `with_grad=False`,
        e.g. for the last step) at the new point. Diverged chains stay where they were."""
        if state.grad is None:
            raise ValueError("this state has no gradient (it came from with_grad=False); it ends the chain")
        # noise is drawn for every chain, so a live chain's randomness never depends on the others
        noise = self._noise(state.x, generator)
        v, drift_ok = self._drift(state, energy_fn, noise)
        x_new = (state.x + v + noise).clamp(0.0, 1.0)
        e, g, logits = _evaluate(energy_fn, x_new, with_grad)

        n = state.step + 1
        checks = [(_finite_rows(v) & drift_ok & _finite_rows(x_new), 3), (_finite_rows(e), 1)]
        if g is not None:
            checks.append((_finite_rows(g), 2))
        why = state.why.clone()
        alive = state.alive.clone()
        for ok, code in checks:
            newly = alive & ~ok
            why[newly] = code
            alive &= ok
        diverged_at = torch.where(state.alive & ~alive, n, state.diverged_at)

        keep = _bcast(alive, state.x)
        x = torch.where(keep, x_new, state.x)
        v = torch.where(keep, v, state.v)
        e = torch.where(alive, e, state.energy)
        if g is not None:
            g = torch.where(keep, g, torch.zeros_like(g))
        if logits is not None and state.logits is not None:
            logits = torch.where(alive.view(-1, 1), logits, state.logits)
        return SGLDState(x, v, e, g, logits, alive, diverged_at, why, n)


@dataclass(frozen=True)
class Heun(SGLD):
    """Second-order SGLD (stochastic Heun): predict x̃ = clip(x + v₁ + σε) with the Euler
    velocity v₁ = ζv − (η/2)∇E(x), then use v = ζv − (η/2)·½(∇E(x) + ∇E(x̃)) with the same
    ε. Two gradient evaluations per step; more accurate for large η."""

    @property
    def grads_per_step(self) -> int:
        return 2

    def _drift(self, state: SGLDState, energy_fn: EnergyFn, noise: torch.Tensor):
        v1 = self._velocity(state.v, state.grad)
        x_pred = torch.where(_bcast(state.alive, state.x), (state.x + v1 + noise).clamp(0.0, 1.0), state.x)
        _, g2, _ = _evaluate(energy_fn, x_pred, True)
        ok = _finite_rows(g2) & _finite_rows(v1)
        g2 = torch.where(_bcast(ok, g2), g2, torch.zeros_like(g2))
        v = self._clamp(self.momentum * state.v - (self.step_size / 2) * 0.5 * (state.grad + g2))
        return v, ok


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def make_sampler(name: str, **kwargs) -> SGLD:
    """"sgld" → SGLD, "heun" → Heun, with the given settings."""
    kinds = {"sgld": SGLD, "heun": Heun}
    if name not in kinds:
        raise WeatError(f"unknown sampler {name!r}; choose 'sgld' or 'heun'")
    return kinds[name](**kwargs)
