"""Untrusted input: uploaded images and checkpoints → tensors and models, or a `WeatError`
with a message for the user."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .. import WeatError
from ._common import _logits

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # e.g. 8000 × 5000; checked from the header, before decoding
# A file inside an uploaded .zip may unpack to at most what the app lets a direct upload be
# (.streamlit/config.toml, maxUploadSize = 50 MB): a zip bomb stops there, a PreActResNet-18 in
# fp32 (45 MB) fits.
MAX_UNZIPPED_BYTES = 50 * 1024 * 1024


def decode_image(data: bytes, size: tuple[int, int] = (32, 32), max_bytes: int = MAX_UPLOAD_BYTES,
                 max_pixels: int = MAX_UPLOAD_PIXELS) -> torch.Tensor:
    """An uploaded image file → float tensor (1, 3, H, W) in [0, 1] at `size` (H, W).

    Grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float images are
    converted; EXIF rotation applied; the image is centre-cropped to the target aspect and
    resized. Empty, corrupt, truncated, oversized (bytes or pixels) files raise `WeatError`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    too_big = f"the image is larger than {max_pixels / 1e6:.0f} megapixels; please upload a smaller one"
    if not data:
        raise WeatError("the uploaded file is empty")
    if len(data) > max_bytes:
        raise WeatError(f"the image file is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise WeatError("the uploaded file is not an image we can read (PNG, JPEG, GIF, BMP, WebP, TIFF)") from None
    except Image.DecompressionBombError:
        raise WeatError(too_big) from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad upload
        raise WeatError(f"the uploaded image is corrupt ({type(e).__name__})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise WeatError(f"the image is {w}×{h} pixels, more than the {max_pixels / 1e6:.0f} megapixels allowed; "
                        "please upload a smaller one")
    if w < 1 or h < 1:
        raise WeatError("the image has no pixels")
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        arr = _to_rgb8(im)
    except Exception as e:  # noqa: BLE001 - truncated data, bombs, odd modes
        raise WeatError(f"the uploaded image is corrupt or truncated ({type(e).__name__}: {e})"[:300]) from None
    im = ImageOps.fit(Image.fromarray(arr), (size[1], size[0]), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)


def _to_rgb8(im) -> np.ndarray:
    """Any PIL mode → uint8 RGB (H, W, 3); transparency composited onto white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16/32-bit gray, float
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F":
            top = 1.0 if a.max() <= 1.0 else 255.0
        g = np.clip(a / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol ≥ 2, torch.save's zip container


def checkpoint_zip(model: nn.Module, records: Optional[Sequence[Mapping[str, Any]]] = None,
                   config: Optional[Mapping[str, Any]] = None) -> bytes:
    """A model as one .zip file: `model.safetensors` and `config.json` as `checkpoints.save`
    writes them (with `config` added, e.g. the run's settings under "training"), and
    `log.jsonl` with its per-epoch `records` when given. Unzipped it is a checkpoint folder
    (`load(folder)`, `--checkpoint folder`); the app's sidebar takes the .zip itself back as an
    upload."""
    from ..checkpoints import save

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="weat-zip-") as d:
        save(model, d, config=dict(config or {}))
        if records:
            (Path(d) / "log.jsonl").write_text("".join(json.dumps(dict(r), default=float) + "\n" for r in records))
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(d).iterdir()):
                # weights stored as they are: deflating fp32 weights saves 40 % of a few MB and
                # costs about half a second on our 2-core CPU, while the page waits
                z.write(f, f.name, compress_type=zipfile.ZIP_STORED if f.suffix == ".safetensors" else None)
    return buf.getvalue()


def _unzip_checkpoint(data: bytes, max_bytes: int = MAX_UNZIPPED_BYTES) -> tuple[bytes, Optional[bytes], str]:
    """(weights, config.json or None, weights file name) from an uploaded .zip holding one
    .safetensors file. Members are read by name into memory, never extracted, and each is
    checked against `max_bytes` from the archive's directory before it is read (no zip bombs).
    A torch.save file is a zip too; it holds no .safetensors and is refused."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise WeatError("the uploaded .zip is not a readable zip archive") from None
    members = {Path(i.filename).name: i for i in z.infolist() if not i.is_dir()}
    weights = sorted(n for n in members if n.endswith(".safetensors"))
    if len(weights) != 1:
        raise WeatError(f"the uploaded .zip holds {len(weights)} .safetensors files; it must hold one, with its "
                        "config.json (as the Training page's download does); pickled weights are never loaded")
    for name in (weights[0], "config.json"):
        if name in members and members[name].file_size > max_bytes:
            raise WeatError(f"{name} in the .zip is {members[name].file_size / 2**20:.1f} MB unpacked; the limit is "
                            f"{max_bytes / 2**20:.0f} MB")
    config = z.read(members["config.json"]) if "config.json" in members else None
    return z.read(members[weights[0]]), config, weights[0]


def load_uploaded_checkpoint(weights: bytes, config: Optional[bytes], weights_name: str = "model.safetensors",
                             device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A model from an uploaded `.safetensors` file and its `config.json` (or a `.zip` holding
    both, as `checkpoint_zip` writes it), checked by a forward pass. Pickles
    (.pt/.pth/.bin/.ckpt/.pkl, or pickle bytes under any name) are refused: uploads never reach
    `torch.load`."""
    from ..checkpoints import load

    if not weights:
        raise WeatError("the uploaded weights file is empty")
    if weights_name.endswith(".zip"):
        weights, zipped_config, inner = _unzip_checkpoint(weights)
        config, weights_name = config or zipped_config, f"{weights_name}:{inner}"
        if not weights:
            raise WeatError(f"{inner} in the uploaded .zip is empty")
    if not weights_name.endswith(".safetensors") or weights.startswith(PICKLE_MAGIC):
        raise WeatError(f"{weights_name} looks like a pickled PyTorch file; uploads must be .safetensors "
                        "(pickles can run code, so they are never loaded here)")
    if config is None:
        raise WeatError("upload the model's config.json together with the .safetensors file")
    try:
        cfg = json.loads(config.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeatError(f"config.json is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise WeatError("config.json must hold a JSON object with at least 'arch' and 'num_classes'")
    with tempfile.TemporaryDirectory(prefix="weat-upload-") as d:
        (Path(d) / "model.safetensors").write_bytes(weights)
        (Path(d) / "config.json").write_text(json.dumps(cfg))
        model = load(d, device=device)
    model.config["source"] = f"upload:{weights_name}"
    size = int(cfg.get("image_size", 32))
    try:
        out = _logits(model, torch.rand(1, 3, size, size))
    except Exception as e:  # noqa: BLE001
        raise WeatError(f"the uploaded model fails on a {size}×{size} image: {e}"[:300]) from None
    if out.shape != (1, model.num_classes):
        raise WeatError(f"the uploaded model returns shape {tuple(out.shape)}, expected (1, {model.num_classes})")
    return model
