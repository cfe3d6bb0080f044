"""Class statistics for the Gaussian and PCA starts of SGLD (`init`), fitted once on a training set.

`ClassStats` holds what these need, per class y: the mean μ_y, the top-r eigenvectors u_k and
eigenvalues λ_k of Σ_y, and its trace. A full 3072×3072 covariance per CIFAR class would take
38 MB in fp32, so only the top r components are kept (r chosen to fit a byte budget, 8 MiB by
default), and the Gaussian uses the probabilistic-PCA form of Σ_y (Tipping & Bishop 1999): the
kept components exactly, the rest as isotropic variance s² = (tr Σ_y − Σ_{k≤r} λ_k) / (D − r),
the maximum-likelihood fill-in for the discarded directions.

On disk each eigenvector is int8 with one fp32 scale (max |u_k| / 127), half the bytes of
fp16, so the default budget holds 270 components per CIFAR-10 class, 95.6–97.6 % of its
variance (fp16 held 50, 81–88 %). Loading dequantizes and re-orthonormalizes each class's rows (QR, in order, so u_1 keeps
its direction and later rows lose only their quantization error).

The statistics are computed once from the training set (`python -m weat_core init-stats`) and
saved as `init_stats.safetensors` beside the checkpoint's `config.json`, or once per dataset in
a file that several checkpoints' configs name (`init-stats --share FILE`); generation then
needs no dataset.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch

from .. import WeatError
from .pca import int8_rows, orthonormal_rows, top_components

__all__ = ["ClassStats", "STATS_NAME", "DEFAULT_MAX_BYTES", "stats_path"]

log = logging.getLogger(__name__)

STATS_NAME = "init_stats.safetensors"
DEFAULT_MAX_BYTES = 8 * 2**20  # beside a weatnet_s checkpoint of 1.3 MB; files stay under 10 MB
GAUSSIAN_JITTER = 1e-4  # the 1e-4·I added to Σ_y
_FORMAT = "weat-init-stats"


def stats_path(checkpoint_dir: Union[str, os.PathLike, None]) -> Optional[Path]:
    """Where a checkpoint folder's class statistics are: `init_stats.safetensors` beside its
    `config.json`, else the file its config names under "init_stats" (a path relative to the
    folder, so checkpoints trained on one dataset can share one copy). None when neither exists."""
    if not checkpoint_dir:
        return None
    d = Path(checkpoint_dir)
    if (d / STATS_NAME).is_file():
        return d / STATS_NAME
    try:
        link = json.loads((d / "config.json").read_text()).get("init_stats")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(link, str) or not link.endswith(".safetensors"):
        return None
    p = (d / link).resolve()
    return p if p.is_file() else None


@dataclass(frozen=True, eq=False)
class ClassStats:
    """Per-class image statistics for the Gaussian and PCA initialisations (D = C·H·W).

    mean (K, D) float32 in [0, 1]; basis (K, r, D) float16, row k the k-th eigenvector of Σ_y;
    eigvals (K, r) float32, descending; total_var (K,) float32, tr Σ_y; counts (K,) images
    per class; shape (C, H, W); classes, the class names.
    """

    mean: torch.Tensor
    basis: torch.Tensor
    eigvals: torch.Tensor
    total_var: torch.Tensor
    counts: torch.Tensor
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    source: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        """Principal components stored per class."""
        return int(self.basis.shape[1])

    @property
    def dim(self) -> int:
        return int(self.mean.shape[1])

    def retained(self) -> torch.Tensor:
        """Share of each class's variance the stored components cover, (K,)."""
        return self.eigvals.sum(1) / self.total_var.clamp_min(1e-12)

    def rank_for(self, variance: float) -> torch.Tensor:
        """Per class, the fewest components that keep `variance` (0–1] of the variance,
        capped at the stored rank, (K,) int64."""
        frac = self.eigvals.cumsum(1) / self.total_var.clamp_min(1e-12).unsqueeze(1)  # (K, r)
        k = (frac < variance).sum(1) + 1
        return k.clamp(max=self.rank)

    # ----------------------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        images: Any,
        max_variance: float = 0.99,
        max_bytes: int = DEFAULT_MAX_BYTES,
        callback: Optional[Callable[[int, int], None]] = None,
    ) -> "ClassStats":
        """Fit on an `ImageSet` (uint8 x (N, C, H, W), y (N,), classes).

        Keeps per class the top r components, r the fewest that reach `max_variance` for
        every class, lowered if the file would pass `max_bytes`. `callback(k, K)` after each
        class. Components come from an exact SVD of the centred images when n or D is small,
        else from a randomized SVD of the centred images (Halko et al. 2011; relative eigenvalue error
        ~1e-4 on CIFAR-10), seconds instead of minutes at D = 3072.
        """
        x, y = images.x, images.y.long()
        if x.dim() != 4:
            raise WeatError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        c, h, w = (int(s) for s in x.shape[1:])
        d = c * h * w
        classes = tuple(getattr(images, "classes", ())) or tuple(str(i) for i in range(int(y.max()) + 1))
        k_cls = len(classes)
        per_component = k_cls * (d + 8)  # bytes of one more component for every class (int8 + scale + eigenvalue)
        fixed = k_cls * (d * 2 + 12) + 1024 + len(json.dumps(list(classes)))  # means, totals, counts, header
        r_cap = max(1, min(d, (max_bytes - fixed) // per_component))
        means, spectra, vectors, totals, counts = [], [], [], [], []
        for k in range(k_cls):
            xs = x[y == k].flatten(1)
            n = xs.shape[0]
            if n < 2:
                raise WeatError(f"class {classes[k]!r} has {n} training image(s); at least 2 are needed for statistics")
            xs = xs.double() / (255.0 if x.dtype == torch.uint8 else 1.0)  # (n, D)
            mu = xs.mean(0)
            xc = xs - mu
            lam, vec = top_components(xc, r_cap)  # (q,), (q, D)
            means.append(mu.float())
            spectra.append(lam)
            vectors.append(vec[:r_cap])
            totals.append(float(xc.pow(2).sum() / (n - 1)))  # tr Σ_y, exact
            counts.append(n)
            del xs, xc
            if callback is not None:
                callback(k + 1, k_cls)
        q = min(s.numel() for s in spectra)
        spectrum = torch.stack([s[:q] for s in spectra])  # (K, q) descending
        total = torch.tensor(totals, dtype=torch.float32)
        frac = spectrum.cumsum(1) / total.unsqueeze(1)
        r_var = int(((frac < max_variance).sum(1) + 1).max())  # q + 1 when not reached within q
        r = min(r_var, r_cap, q)
        kept = frac[:, r - 1]
        if r < r_var:
            log.info("the byte budget (%.1f MiB) keeps %d components per class, less than %.0f %% of the variance "
                     "needs: they cover %.1f–%.1f %%", max_bytes / 2**20, r, 100 * max_variance,
                     100 * kept.min(), 100 * kept.max())
        return cls(
            mean=torch.stack(means),
            basis=torch.stack([v[:r] for v in vectors]).half(),
            eigvals=spectrum[:, :r].contiguous(),
            total_var=total,
            counts=torch.tensor(counts, dtype=torch.long),
            shape=(c, h, w),
            classes=classes,
            source=str(getattr(images, "name", "")),
        )

    # --------------------------------------------------------------------------- save/load

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write safetensors to `path` (a checkpoint folder gets `init_stats.safetensors`)."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / STATS_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        basis_q, scale = int8_rows(self.basis)
        tensors = {
            "mean": self.mean.half().contiguous(),
            "basis_q": basis_q,
            "basis_scale": scale,
            "eigvals": self.eigvals.float().contiguous(),
            "total_var": self.total_var.float().contiguous(),
            "counts": self.counts.long().contiguous(),
        }
        meta = {"format": _FORMAT, "version": "2", "shape": json.dumps(list(self.shape)),
                "classes": json.dumps(list(self.classes)), "source": self.source}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ClassStats":
        """Read statistics written by `save` (a file, or a folder holding `init_stats.safetensors`)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if path.is_dir():
            path = path / STATS_NAME
        if not path.is_file():
            raise WeatError(f"no initialisation statistics at {path}; compute them with "
                            "`python -m weat_core init-stats --checkpoint NAME`")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise WeatError(f"{path.name} is not a readable safetensors file ({e})") from None
        if "basis_q" in t and "basis_scale" in t:  # version 2: int8 rows, one scale each
            t["basis"] = orthonormal_rows(t.pop("basis_q").float() * t.pop("basis_scale").float().unsqueeze(-1))
        if meta.get("format") != _FORMAT or not {"mean", "basis", "eigvals", "total_var", "counts"} <= set(t):
            raise WeatError(f"{path} does not hold WEAT Lens initialisation statistics")
        shape = tuple(int(s) for s in json.loads(meta["shape"]))
        stats = cls(t["mean"].float(), t["basis"].half(), t["eigvals"].float(), t["total_var"].float(),
                    t["counts"].long(), shape, tuple(json.loads(meta.get("classes", "[]"))), meta.get("source", ""))
        k, r, d = stats.basis.shape
        if stats.mean.shape != (k, d) or stats.eigvals.shape != (k, r) or d != shape[0] * shape[1] * shape[2]:
            raise WeatError(f"{path} is inconsistent (mean {tuple(stats.mean.shape)}, basis {(k, r, d)}, "
                            f"shape {shape})")
        return stats

    @classmethod
    def for_model(cls, model: Any) -> Optional["ClassStats"]:
        """The statistics of the checkpoint `model` was loaded from (`stats_path`), or None."""
        p = stats_path(getattr(model, "config", {}).get("source"))
        if p is None:
            return None
        st = p.stat()  # loaded once per file version: a generation call should not redo the QR
        return _load_cached(cls, str(p.resolve()), st.st_mtime_ns, st.st_size)

    # ---------------------------------------------------------------------------- sampling

    def sample(
        self,
        labels: torch.Tensor,
        kind: str = "pca",
        generator: Optional[torch.Generator] = None,
        device: Union[str, torch.device, None] = None,
        pca_variance: float = 0.99,
    ) -> torch.Tensor:
        """Initial images (N, C, H, W) in [0, 1] for `labels` (N,), "gaussian" or "pca"."""
        if kind not in ("gaussian", "pca"):
            raise WeatError(f"ClassStats samples 'gaussian' or 'pca' initialisations, not {kind!r}")
        labels = torch.as_tensor(labels).long().cpu()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise WeatError(f"labels must be in 0..{self.num_classes - 1} for these statistics, "
                            f"got {labels.min().item()}..{labels.max().item()}")
        device = torch.device(device) if device is not None else (generator.device if generator is not None
                                                                 else torch.device("cpu"))
        out = torch.empty(labels.shape[0], self.dim, device=device)
        ks = self.rank_for(pca_variance) if kind == "pca" else None
        if kind == "pca" and bool((self.retained() < pca_variance - 1e-6).any()):
            log.debug("the stored components keep %.1f–%.1f %% of the variance (asked for %.1f %%); using all %d",
                     100 * self.retained().min(), 100 * self.retained().max(), 100 * pca_variance, self.rank)
        for c in torch.unique(labels).tolist():  # sorted: a fixed order of random draws
            idx = (labels == c).nonzero().squeeze(1)
            n = idx.numel()
            mu = self.mean[c].to(device)
            if kind == "pca":
                k = int(ks[c])
                u = self.basis[c, :k].to(device, torch.float32)  # (k, D)
                z = torch.randn(n, k, generator=generator, device=device)
                x = mu + (z * self.eigvals[c, :k].to(device).sqrt()) @ u
            else:
                r = self.rank
                u = self.basis[c].to(device, torch.float32)  # (r, D)
                lam = self.eigvals[c].to(device)
                s2 = ((self.total_var[c] - self.eigvals[c].sum()) / max(self.dim - r, 1)).clamp_min(0).item()
                z1 = torch.randn(n, r, generator=generator, device=device)
                z2 = torch.randn(n, self.dim, generator=generator, device=device)
                resid = z2 - (z2 @ u.T) @ u  # the part of z2 outside the kept components
                x = mu + (z1 * (lam + GAUSSIAN_JITTER).sqrt()) @ u + (s2 + GAUSSIAN_JITTER) ** 0.5 * resid
            out[idx.to(device)] = x
        return out.view(-1, *self.shape).clamp_(0.0, 1.0)


@functools.lru_cache(maxsize=4)
def _load_cached(cls: type, path: str, mtime_ns: int, size: int) -> "ClassStats":
    return cls.load(path)
