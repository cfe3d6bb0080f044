"""Datasets as in-memory uint8 tensors.

`load_split(name, split)` returns an `ImageSet` (x uint8 (N, C, H, W), y int64 (N,), class
names). `name` is one of:
- "cifar10", "cifar100", "svhn": torchvision datasets, downloaded into the data root when
  they are missing and the network is there;
- "tinyimagenet": Tiny-ImageNet-200 (64×64), downloaded and unpacked likewise;
- a folder with `train/` and `test/` (or `val/`) class folders (ImageFolder layout), or a
  `.tar.gz`/`.tgz`/`.tar` archive of that layout (read without unpacking).

The data root is the `root` argument, else `$WEAT_DATA_DIR`, else `~/.cache/weat_lens/data`.
When data is missing and cannot be downloaded, a `WeatError` says in one sentence what to do.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from . import WeatError

__all__ = ["ImageSet", "DATASETS", "CIFAR10_CLASSES", "data_root", "load_split", "balanced_order", "dataset_info"]

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DATASETS = ("cifar10", "cifar100", "svhn", "tinyimagenet")
IMG_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".ppm", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass
class ImageSet:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64
    classes: tuple[str, ...]
    name: str = ""

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def float(self, idx: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Images as float in [0, 1], (N, C, H, W)."""
        x = self.x if idx is None else self.x[torch.as_tensor(idx, dtype=torch.long)]
        return x.float().div_(255.0)

    def digest(self) -> str:
        """A fingerprint of these images, their order and labels (16 hex digits of SHA-256 over the
        uint8 pixels and the labels): two loads of the same images agree wherever the files lie, so
        `eval --out` files can be paired by what they measured rather than by a path."""
        import hashlib

        h = hashlib.sha256(self.x.contiguous().numpy().tobytes())
        h.update(self.y.to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(self, n: Optional[int]) -> "ImageSet":
        """The first n images of the class-balanced order (see `balanced_order`)."""
        if n is None or n >= len(self):
            return self
        idx = balanced_order(self.y)[:n]
        return ImageSet(self.x[idx], self.y[idx], self.classes, self.name)


def balanced_order(y: torch.Tensor) -> torch.Tensor:
    """Indices that visit the classes round-robin (1st of each class, then 2nd of each, …),
    keeping each class's own order, so "the first N images" cover every class evenly even in
    class-sorted folders."""
    y = y.long()
    if y.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    rank = torch.zeros_like(y)
    for c in torch.unique(y):
        m = y == c
        rank[m] = torch.arange(int(m.sum()))
    key = rank * (int(y.max()) + 1) + y
    return torch.argsort(key, stable=True)


def data_root(root: Optional[os.PathLike | str] = None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("WEAT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "weat_lens" / "data"


def _missing(what: str, root: Path, why: str, copy: Optional[Path] = None) -> WeatError:
    if copy is not None:  # e.g. the shared tarball unpacked into $WEAT_DATA_DIR/cifar10, as the app reads it
        hint = (f"a class-folder copy is at {copy}: pass it as the dataset (--dataset {copy}), or set "
                "WEAT_DATA_DIR (or --data-dir) to a folder that holds the torchvision files")
    else:
        hint = ("set WEAT_DATA_DIR (or --data-dir) to a folder that holds it, or pass a folder of train/ and test/ "
                "class folders as the dataset")
    return WeatError(f"{what} is not in {root} and could not be downloaded ({why}); {hint}")


def _folder_copy(root: Path, name: str, split: str) -> Optional[Path]:
    """`root/name` when it is a class-folder copy of the dataset with this split (the app lists such
    folders), so that a missing torchvision copy can point to it."""
    d = root / name
    return d if any((d / s).is_dir() for s in _split_names(split)) else None


def _torchvision_split(name: str, split: str, root: Path, download: bool) -> ImageSet:
    from torchvision import datasets as tvd

    train = split == "train"
    makers = {
        "cifar10": lambda dl: tvd.CIFAR10(str(root), train=train, download=dl),
        "cifar100": lambda dl: tvd.CIFAR100(str(root), train=train, download=dl),
        "svhn": lambda dl: tvd.SVHN(str(root), split="train" if train else "test", download=dl),
    }
    try:
        ds = makers[name](False)
    except (RuntimeError, FileNotFoundError, OSError):
        copy = _folder_copy(root, name, split)
        if not download:
            raise _missing(name.upper(), root, "downloads are off", copy) from None
        try:
            root.mkdir(parents=True, exist_ok=True)
            ds = makers[name](True)
        except Exception as e:  # URLError, HTTPError, timeouts, disk errors
            raise _missing(name.upper(), root, f"{type(e).__name__}: {e}".strip(), copy) from None
    if name == "svhn":
        x = torch.from_numpy(np.ascontiguousarray(ds.data))  # (N, 3, 32, 32)
        y = torch.as_tensor(ds.labels, dtype=torch.long)
        classes = tuple(str(i) for i in range(10))
    else:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        y = torch.as_tensor(ds.targets, dtype=torch.long)
        classes = tuple(ds.classes)
    return ImageSet(x, y, classes, name)


def _decode(data: bytes | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3)


def _stack(arrays: list[np.ndarray], where: str) -> torch.Tensor:
    if not arrays:
        raise WeatError(f"{where} holds no images (expected <class>/<image> files ending in {', '.join(IMG_SUFFIXES)})")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise WeatError(f"images in {where} have different sizes {sorted(shapes)[:3]}; resize them to one size first")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _split_names(split: str) -> tuple[str, ...]:
    return ("train",) if split == "train" else ("test", "val")


def _folder_split(path: Path, split: str, limit: Optional[int]) -> ImageSet:
    for s in _split_names(split):
        d = path / s
        if d.is_dir():
            break
    else:
        raise WeatError(f"{path} has no {' or '.join(_split_names(split))}/ folder of class folders")
    classes = tuple(sorted(c.name for c in d.iterdir() if c.is_dir()))
    if not classes:
        raise WeatError(f"{d} holds no class folders (expected {d}/<class>/<image>)")
    files, labels = [], []
    for i, c in enumerate(classes):
        fs = sorted(f for f in (d / c).rglob("*") if f.suffix.lower() in IMG_SUFFIXES)
        files += fs
        labels += [i] * len(fs)
    y = torch.tensor(labels, dtype=torch.long)
    idx = balanced_order(y)[:limit] if limit else torch.arange(len(files))
    x = _stack([_decode(files[i]) for i in idx.tolist()], str(d))
    return ImageSet(x, y[idx], classes, str(path))


def _archive_split(path: Path, split: str, limit: Optional[int]) -> ImageSet:
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError) as e:
        raise WeatError(f"cannot read the archive {path}: {e}") from None
    with tar:
        members: dict[str, list[tarfile.TarInfo]] = {}
        for m in tar.getmembers():
            parts = m.name.strip("./").split("/")
            if m.isfile() and len(parts) >= 3 and parts[-3] in ("train", "test", "val") \
                    and Path(parts[-1]).suffix.lower() in IMG_SUFFIXES:
                members.setdefault(parts[-3], []).append(m)
        s = next((s for s in _split_names(split) if s in members), None)
        if s is None:
            raise WeatError(f"{path} has no {' or '.join(_split_names(split))}/<class>/<image> entries")
        ms = sorted(members[s], key=lambda m: m.name)
        classes = tuple(sorted({m.name.strip("./").split("/")[-2] for m in ms}))
        cls_idx = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([cls_idx[m.name.strip("./").split("/")[-2]] for m in ms], dtype=torch.long)
        idx = balanced_order(y)[:limit] if limit else torch.arange(len(ms))
        wanted = {ms[i].name: k for k, i in enumerate(idx.tolist())}
        arrays: list[Optional[np.ndarray]] = [None] * len(wanted)
        for m in tar.getmembers():  # archive order: the gzip stream is only read forwards
            k = wanted.get(m.name)
            if k is not None:
                arrays[k] = _decode(tar.extractfile(m).read())
    return ImageSet(_stack(arrays, str(path)), y[idx], classes, str(path))


def _tinyimagenet(split: str, root: Path, download: bool, limit: Optional[int]) -> ImageSet:
    base = root / "tiny-imagenet-200"
    if not base.is_dir():
        if not download:
            raise _missing("Tiny-ImageNet", root, "downloads are off")
        try:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(TINY_URL, str(root))
        except Exception as e:
            raise _missing("Tiny-ImageNet", root, f"{type(e).__name__}: {e}") from None
    if split == "train":
        return _folder_split(base, "train", limit)
    # val/ is flat: val/images/*.JPEG with labels in val/val_annotations.txt
    wnids = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    cls_idx = {w: i for i, w in enumerate(wnids)}
    rows = [line.split("\t")[:2] for line in (base / "val" / "val_annotations.txt").read_text().splitlines() if line]
    rows.sort()
    y = torch.tensor([cls_idx[w] for _, w in rows], dtype=torch.long)
    idx = balanced_order(y)[:limit] if limit else torch.arange(len(rows))
    x = _stack([_decode(base / "val" / "images" / rows[i][0]) for i in idx.tolist()], str(base / "val"))
    return ImageSet(x, y[idx], tuple(wnids), "tinyimagenet")


def load_split(
    name: str | os.PathLike,
    split: str = "train",
    root: Optional[str | os.PathLike] = None,
    limit: Optional[int] = None,
    download: bool = True,
) -> ImageSet:
    """One split ("train" or "test") of a dataset as uint8 tensors; `limit` keeps the first
    `limit` images of the class-balanced order (and only decodes those)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:  # 0 must not quietly mean "all" (folders) or "none" (torchvision)
        raise WeatError(f"limit must be a positive number of images, or None for the whole split; got {limit}")
    key = str(name).lower()
    if key in ("cifar10", "cifar100", "svhn"):
        return _torchvision_split(key, split, data_root(root), download).subset(limit)
    if key in ("tinyimagenet", "tiny-imagenet"):
        return _tinyimagenet(split, data_root(root), download, limit)
    path = Path(name).expanduser()
    if not path.exists() and not path.is_absolute() and (data_root(root) / path).exists():
        path = data_root(root) / path
    if path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES):
        return _archive_split(path, split, limit)
    if path.is_dir():
        return _folder_split(path, split, limit)
    raise WeatError(
        f"unknown dataset {str(name)!r}: use one of {', '.join(DATASETS)}, a folder with train/ and test/ class "
        "folders, or a .tar.gz of that layout"
    )


def dataset_info(name: str | os.PathLike) -> dict:
    """Channel statistics and image size for normalising a new model on `name`."""
    key = str(name).lower()
    if key == "cifar100":
        return {"mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)}
    if key == "svhn":
        return {"mean": (0.4377, 0.4438, 0.4728), "std": (0.1980, 0.2010, 0.1970)}
    if key in ("tinyimagenet", "tiny-imagenet"):
        return {"mean": (0.4802, 0.4481, 0.3975), "std": (0.2770, 0.2691, 0.2821)}
    return {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2471, 0.2435, 0.2616)}
