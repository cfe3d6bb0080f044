"""Quality of generated images.

- Inception Score (Salimans et al. 2016) and FID (Heusel et al. 2017) through torchmetrics
  (torch-fidelity's Inception-v3; its weights, 91 MB, download once from GitHub on first use
  into the torch hub cache). FID is computed against real training images (MISSION.md);
  with fewer than ~2,000 generated images it is biased upwards, so compare FIDs only at
  equal sample sizes.
- Offline metrics that need no download:
  * classifier agreement: the share of generated images that an independently trained
    (standard) classifier assigns to the intended class, plus its mean p(y|x);
  * diversity: the mean pairwise L2 distance between generated images of the same class, next
    to the same number for real test images of that class (ratio 1 = as varied as the data;
    near 0 = every chain drew the same picture).

Images are float (N, C, H, W) in [0, 1] (uint8 is accepted and divided by 255).
"""

from __future__ import annotations

import logging
import socket
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Union

import torch
from torch import nn

from .. import WeatError
from ..attacks.base import eval_mode

__all__ = [
    "INCEPTION_WEIGHTS",
    "classifier_agreement",
    "diversity",
    "evaluate_samples",
    "fid",
    "inception_score",
    "penultimate_features",
]

log = logging.getLogger(__name__)

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
_DOWNLOAD_TIMEOUT_S = 30


def _float01(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255.0) if x.dtype == torch.uint8 else x.float()


def _inception_error(e: BaseException) -> WeatError:
    if isinstance(e, (ImportError, ModuleNotFoundError)) or "fidelity" in str(e).lower():
        return WeatError("Inception Score and FID need the torch-fidelity package: pip install torch-fidelity "
                         "(the offline metrics, classifier agreement and diversity, work without it)")
    from torch.hub import get_dir

    return WeatError(
        f"the Inception-v3 weights for IS/FID could not be downloaded ({type(e).__name__}: {e}). They are fetched "
        f"once from GitHub into {get_dir()}/checkpoints/{INCEPTION_WEIGHTS}: connect to the internet once, or copy "
        "that file there. The offline metrics (classifier agreement, diversity) need no download.")


@contextmanager
def _inception_metric(factory) -> Iterator[Any]:
    """Build a torchmetrics Inception metric; a download that cannot happen fails fast, as a WeatError."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # a blackholed network must not hang the CLI
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            metric = factory()
    except (ImportError, OSError, RuntimeError, ValueError) as e:  # URLError/HTTPError are OSErrors
        raise _inception_error(e) from None
    finally:
        socket.setdefaulttimeout(old)
    yield metric


def _device(device: Union[str, torch.device, None]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def inception_score(
    images: torch.Tensor, splits: int = 10, batch_size: int = 64, device: Union[str, torch.device, None] = None
) -> tuple[float, float]:
    """Inception Score (mean, std over `splits`) of images (N, 3, H, W) in [0, 1]."""
    from torchmetrics.image.inception import InceptionScore

    dev = _device(device)
    with _inception_metric(lambda: InceptionScore(normalize=True, splits=splits)) as m:
        m = m.to(dev)
        for i in range(0, images.shape[0], batch_size):
            m.update(_float01(images[i:i + batch_size]).to(dev))
        mean, std = m.compute()
    return float(mean), float(std)


def fid(
    images: torch.Tensor,
    real: torch.Tensor,
    batch_size: int = 64,
    device: Union[str, torch.device, None] = None,
    feature: Union[int, nn.Module] = 2048,
) -> float:
    """Fréchet Inception Distance between images (N, 3, H, W) and real images (M, 3, H, W).

    `feature` may be a module mapping images in [0, 1] to (B, F) features instead of
    Inception's 2048-d pool features (e.g. an independent classifier's penultimate layer, an
    offline stand-in; such numbers are not comparable with published FIDs)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    dev = _device(device)
    with _inception_metric(lambda: FrechetInceptionDistance(feature=feature, normalize=True,
                                                            input_img_size=tuple(images.shape[1:]))) as m:
        m = m.to(dev)
        for x, is_real in ((real, True), (images, False)):
            for i in range(0, x.shape[0], batch_size):
                m.update(_float01(x[i:i + batch_size]).to(dev), real=is_real)
        return float(m.compute())


@torch.no_grad()
def classifier_agreement(
    classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> dict[str, Any]:
    """How often an independent classifier sees the intended class in the generated images.

    Returns {"agreement": share of argmax == label, "confidence": mean p(label | x),
    "per_class": {label: share}, "n": N}. images (N, C, H, W) in [0, 1], labels (N,).
    """
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    labels = torch.as_tensor(labels).long().view(-1)
    hits, conf = [], []
    with eval_mode(classifier):
        for i in range(0, images.shape[0], batch_size):
            x = _float01(images[i:i + batch_size]).to(dev)
            p = classifier(x).float().softmax(-1).cpu()  # (B, K)
            y = labels[i:i + batch_size]
            hits.append(p.argmax(-1) == y)
            conf.append(p.gather(1, y.view(-1, 1)).squeeze(1))
    hit = torch.cat(hits).float()
    per_class = {int(c): float(hit[labels == c].mean()) for c in torch.unique(labels)}
    return {"agreement": float(hit.mean()), "confidence": float(torch.cat(conf).mean()), "per_class": per_class,
            "n": int(labels.numel())}


def _mean_pairwise(x: torch.Tensor) -> float:
    n = x.shape[0]
    if n < 2:
        return float("nan")
    d = torch.cdist(x.double(), x.double())  # (n, n)
    return float(d.sum() / (n * (n - 1)))


def _within_class(x: torch.Tensor, labels: torch.Tensor, real: Optional[torch.Tensor] = None,
                  real_labels: Optional[torch.Tensor] = None, max_real_per_class: int = 500) -> dict[str, Any]:
    """Mean pairwise L2 distance between the rows of `x` (N, D) of the same class, and between
    the rows of `real` (M, D) of that class (its first `max_real_per_class`) for reference."""
    per: dict[int, dict[str, float]] = {}
    for c in torch.unique(labels).tolist():
        rec = {"generated": _mean_pairwise(x[labels == c])}
        if real is not None and real_labels is not None:
            r = real[torch.as_tensor(real_labels).long().view(-1) == c][:max_real_per_class]
            if r.shape[0] >= 2:
                rec["real"] = _mean_pairwise(r)
                rec["ratio"] = rec["generated"] / rec["real"]
        per[int(c)] = rec

    def avg(key: str) -> Optional[float]:
        vals = [v[key] for v in per.values() if key in v and v[key] == v[key]]
        return sum(vals) / len(vals) if vals else None

    out: dict[str, Any] = {"generated": avg("generated"), "per_class": per}
    if real is not None:
        out["real"] = avg("real")
        # a collapsed set (distance 0) has ratio 0, not "unknown"
        out["ratio"] = (out["generated"] / out["real"]) if out["generated"] is not None and out["real"] else None
    return out


def diversity(
    images: torch.Tensor,
    labels: torch.Tensor,
    real: Optional[torch.Tensor] = None,
    real_labels: Optional[torch.Tensor] = None,
    max_real_per_class: int = 500,
    classifier: Optional[nn.Module] = None,
) -> dict[str, Any]:
    """Within-class diversity: mean pairwise L2 distance between generated images of the same
    class, and between real images of that class (its first `max_real_per_class`) for reference.
    In pixel units (images in [0, 1]), or, with `classifier`, between its penultimate features:
    pixel distances count any high-contrast texture as variety, while in a robust classifier's
    features chains that all draw the same pattern sit close together.

    Returns {"generated": mean over classes, "real": …, "ratio": generated / real,
    "per_class": {label: {"generated", "real", "ratio"}}}; real entries only when `real` is given.
    """
    def embed(x: torch.Tensor) -> torch.Tensor:
        return _float01(x).flatten(1) if classifier is None else penultimate_features(classifier, x)

    labels = torch.as_tensor(labels).long().view(-1)
    if real is None:
        return _within_class(embed(images), labels)
    if real_labels is None:
        raise WeatError("real images need their labels (real_labels) to compare within classes")
    real_labels = torch.as_tensor(real_labels).long().view(-1)
    keep = torch.cat([torch.nonzero(real_labels == c).view(-1)[:max_real_per_class] for c in torch.unique(labels)])
    return _within_class(embed(images), labels, embed(real[keep]), real_labels[keep], max_real_per_class)


def penultimate_features(classifier: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """What the classifier's last `nn.Linear` layer receives (its penultimate features), (N, D),
    for images (N, C, H, W) in [0, 1], read by a forward pre-hook."""
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise WeatError("this classifier has no final linear layer to take features from")
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    feats: list[torch.Tensor] = []
    hook = linears[-1].register_forward_pre_hook(lambda _m, inp: feats.append(inp[0].detach().float().flatten(1).cpu()))
    try:
        with eval_mode(classifier), torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                classifier(_float01(images[i:i + batch_size]).to(dev))
    finally:
        hook.remove()
    return torch.cat(feats)


def evaluate_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    classifier: Optional[nn.Module] = None,
    real_test: Optional[Any] = None,
    real_train: Optional[torch.Tensor] = None,
    inception: bool = True,
    device: Union[str, torch.device, None] = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Every metric we can compute: agreement and feature diversity (need `classifier`),
    diversity (vs `real_test`, an ImageSet), and IS / FID (vs `real_train` (M, C, H, W)) when
    `inception`. A metric that cannot run is reported under "skipped" with the reason, never
    silently left out."""
    out: dict[str, Any] = {"n": int(images.shape[0]), "skipped": {}}
    if classifier is not None:
        out["classifier"] = classifier_agreement(classifier, images, labels)
        try:
            out["feature_diversity"] = (diversity(images, labels, real_test.x, real_test.y, classifier=classifier)
                                        if real_test is not None else diversity(images, labels, classifier=classifier))
        except WeatError as e:
            out["skipped"]["feature_diversity"] = str(e)
    else:
        out["skipped"]["classifier"] = "no independent classifier given (--classifier)"
    if real_test is not None:
        out["diversity"] = diversity(images, labels, real_test.x, real_test.y)
    else:
        out["diversity"] = diversity(images, labels)
    if inception:
        try:
            out["inception_score"] = inception_score(images, device=device, batch_size=batch_size)
            if real_train is not None:
                out["fid"] = fid(images, real_train, device=device, batch_size=batch_size)
                out["fid_real_n"] = int(real_train.shape[0])
            else:
                out["skipped"]["fid"] = "no real training images given"
        except WeatError as e:
            out["skipped"]["inception"] = str(e)
    else:
        out["skipped"]["inception"] = "turned off"
    return out
