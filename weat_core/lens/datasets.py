"""Images for the app: the datasets available offline, a synthetic stand-in, and PNG grids."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch


def find_datasets(root: Optional[Union[str, Path]] = None) -> list[str]:
    """Datasets available offline under the data root (`root`, $WEAT_DATA_DIR or the default):
    torchvision names whose files are there, class-folder trees with train/ or test/, and
    .tar.gz/.tgz/.tar archives of that layout."""
    from ..data import ARCHIVE_SUFFIXES, data_root

    base = data_root(root)
    if not base.is_dir():
        return []
    found = []
    for name, marker in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                         ("svhn", "test_32x32.mat")):
        if (base / marker).exists():
            found.append(name)
    if (base / "train").is_dir() or (base / "test").is_dir():
        found.append(str(base))
    for p in sorted(base.iterdir()):
        if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()):
            found.append(str(p))
        elif p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES):
            found.append(str(p))
    return found


def demo_images(n: int = 256, num_classes: int = 10, size: int = 32, seed: int = 0):
    """A built-in synthetic `ImageSet` for when no dataset is available: each class is a
    coloured oriented stripe pattern plus noise. It only keeps the app working offline; a
    model's accuracy and energies on it mean little."""
    from ..data import ImageSet

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    angle = y.float() * torch.pi / num_classes  # (N,)
    wave = torch.sin((xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]) / 2.5)
    hue = torch.stack([torch.cos(angle * 2), torch.cos(angle * 2 + 2.1), torch.cos(angle * 2 + 4.2)], 1)  # (N, 3)
    img = 0.5 + 0.25 * wave[:, None] * (0.6 + 0.4 * hue[:, :, None, None]) + 0.08 * torch.randn(n, 3, size, size, generator=g)
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageSet(x, y, tuple(f"pattern {i}" for i in range(num_classes)), "synthetic")


def image_grid_png(images: torch.Tensor, nrow: int = 8, scale: int = 1, pad: int = 2) -> bytes:
    """PNG bytes of a grid of images (N, C, H, W) in [0, 1], white padding, `scale`× nearest upsampling."""
    from PIL import Image

    x = images.detach().float().cpu().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    n, c, h, w = x.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = x[i]
    im = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
