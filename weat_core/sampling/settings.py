"""SGLD settings: `GenerationSettings`, the defaults per threat model (`FAMILY_DEFAULTS`) and
`default_settings(model)`, which a checkpoint's `config["generation"]` overrides, so that a user
who changes nothing gets the settings we know work best for that model."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional, Union

from torch import nn

from .. import WeatError
from .init import INITS
from .sgld import make_sampler

__all__ = ["FAMILY_DEFAULTS", "GenerationSettings", "OBJECTIVES", "default_settings", "threat_model"]

log = logging.getLogger(__name__)

OBJECTIVES = ("joint", "ce", "marginal")
_OBJECTIVE_ALIASES = {"e(x,y)": "joint", "e(x, y)": "joint", "exy": "joint", "ce": "ce", "cross-entropy": "ce",
                      "e(x)": "marginal", "ex": "marginal", "unconditional": "marginal"}


@dataclass(frozen=True)
class GenerationSettings:
    """Every knob of `generate` (pixel units, images in [0, 1]); see weat_core.sampling.sgld.

    pca_variance: share of each class's variance the "pca" initialisation keeps.
    """

    steps: int = 40
    step_size: float = 0.8
    noise_std: float = 0.001
    momentum: float = 0.0
    init: str = "pca"
    objective: str = "joint"
    sampler: str = "sgld"
    max_update: Optional[float] = None
    update_norm: str = "linf"
    pca_variance: float = 0.99

    def __post_init__(self):
        if self.steps < 0:
            raise WeatError(f"steps must be ≥ 0, got {self.steps}")
        if self.init not in INITS + ("custom",):
            raise WeatError(f"unknown initialisation {self.init!r}; choose one of: {', '.join(INITS)}")
        if self.objective not in OBJECTIVES:
            raise WeatError(f"unknown objective {self.objective!r}; choose one of: {', '.join(OBJECTIVES)}")
        if not 0.0 < self.pca_variance <= 1.0:
            raise WeatError(f"pca_variance must be in (0, 1], got {self.pca_variance}")
        self.make_sampler()  # validates step size, noise, momentum, clamp

    def make_sampler(self):
        return make_sampler(self.sampler, step_size=self.step_size, noise_std=self.noise_std,
                            momentum=self.momentum, max_update=self.max_update, update_norm=self.update_norm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **kw: Any) -> "GenerationSettings":
        """A copy with the given fields changed; None values are ignored."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


# Defaults per threat model. Why these numbers (update v ← ζv − (η/2)∇E, x in [0, 1]):
# - L∞ models (the reference setting η = 0.8, 20–50 steps, no momentum): a CIFAR model robust
#   at ε = 8/255 changes its logits by O(1) inside the ε-ball, so ‖∇f‖₁ ≈ 1/(8/255) and the
#   mean |∂E/∂x| per pixel is ~0.01–0.05: η/2 = 0.4 moves pixels ~1–5/255 per step, 40 steps
#   enough to draw an object without saturating. σ = 0.001 keeps the chain a Langevin chain
#   without visible grain (the reference work and Santurkar et al. use little or no noise).
# - L2 / JEM-style models: the reference η = 0.025, ζ = 0.8, σ = 0.001, 500 steps.
# - standard (non-robust) models: gradients are large and meaningless, so the L∞ setting
#   would saturate pixels at 0/1; the velocity is clamped to 2/255 per step (a PGD-like
#   walk). Such models make adversarial noise, not objects, whatever the settings.
FAMILY_DEFAULTS: dict[str, GenerationSettings] = {
    "linf": GenerationSettings(steps=40, step_size=0.8, noise_std=0.001, momentum=0.0),
    "l2": GenerationSettings(steps=500, step_size=0.025, noise_std=0.001, momentum=0.8),
    "standard": GenerationSettings(steps=40, step_size=0.8, noise_std=0.001, momentum=0.0, max_update=2 / 255),
}


def threat_model(config: dict[str, Any]) -> str:
    """"linf", "l2" or "standard" from a checkpoint config: method, training.norm / training.eps,
    or a threat in the method name ("robustbench (L2)"). Unknown robust models count as L∞."""
    train = config.get("training", {}) or {}
    method = str(config.get("method", train.get("method", ""))).lower()
    if method == "standard":
        return "standard"
    eps = train.get("eps", config.get("eps"))
    if eps is not None and float(eps) == 0.0:
        return "standard"
    norm = str(train.get("norm", config.get("norm", config.get("threat", "")))).lower()
    if norm in ("l2", "2") or "(l2)" in method:
        return "l2"
    return "linf"


def default_settings(model_or_config: Union[nn.Module, dict, None]) -> GenerationSettings:
    """The settings a user who changes nothing gets for this model: the family default
    (see FAMILY_DEFAULTS), then the checkpoint's `config["generation"]` on top."""
    cfg = model_or_config if isinstance(model_or_config, dict) else getattr(model_or_config, "config", {}) or {}
    base = FAMILY_DEFAULTS[threat_model(cfg)]
    over = dict(cfg.get("generation", {}) or {})
    known = {f.name for f in fields(GenerationSettings)}
    unknown = sorted(set(over) - known)
    if unknown:
        log.warning("ignoring unknown generation settings in the checkpoint config: %s", ", ".join(unknown))
    return replace(base, **{k: v for k, v in over.items() if k in known})


def _objective_name(name: str) -> str:
    key = name.lower().strip()
    return key if key in OBJECTIVES else _OBJECTIVE_ALIASES.get(key.replace(" ", ""), _OBJECTIVE_ALIASES.get(key, key))
