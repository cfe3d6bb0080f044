"""Where the SGLD chains start: uniform noise, a class-conditional Gaussian, or class-wise PCA.

- "uniform":  x ∼ U[0, 1]^D.
- "gaussian": x ∼ N(μ_y, Σ_y + 1e-4·I), fitted on the training images of class y
  (Santurkar et al. 2019, "Image synthesis with a single (robust) classifier").
- "pca":      x = μ_y + Σ_{k ≤ K_y} √λ_k · z_k · u_k, z ∼ N(0, I), along the principal
  components of class y that keep a chosen share (95–99 %) of its variance.
All three are clipped to [0, 1].

`ClassStats` (`class_stats`) holds what the Gaussian and PCA starts need; it is computed once
from the training set (`python -m weat_core init-stats`) and saved beside the checkpoint.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .. import WeatError
from .class_stats import DEFAULT_MAX_BYTES, STATS_NAME, ClassStats, stats_path

__all__ = ["ClassStats", "INITS", "STATS_NAME", "DEFAULT_MAX_BYTES", "initial_images", "stats_path"]

INITS = ("uniform", "gaussian", "pca")


def initial_images(
    kind: str,
    labels: torch.Tensor,
    shape: Sequence[int],
    stats: Optional[ClassStats] = None,
    generator: Optional[torch.Generator] = None,
    device: Union[str, torch.device, None] = None,
    pca_variance: float = 0.99,
) -> torch.Tensor:
    """Starting images (N, C, H, W) in [0, 1]: `kind` is "uniform", "gaussian" or "pca"
    (the last two need `stats`)."""
    if kind not in INITS:
        raise WeatError(f"unknown initialisation {kind!r}; choose one of: {', '.join(INITS)}")
    labels = torch.as_tensor(labels).long()
    if kind == "uniform":
        dev = torch.device(device) if device is not None else (generator.device if generator is not None
                                                              else torch.device("cpu"))
        return torch.rand(labels.shape[0], *shape, generator=generator, device=dev)
    if stats is None:
        raise WeatError(f"the {kind!r} initialisation needs class statistics: compute them once with "
                        "`python -m weat_core init-stats --checkpoint NAME` (or use --init uniform)")
    if tuple(shape) != tuple(stats.shape):
        raise WeatError(f"the class statistics are for images {stats.shape}, not {tuple(shape)}")
    return stats.sample(labels, kind, generator, device, pca_variance)
