"""The analyses behind the WEAT Lens app, as plain functions over a model and image tensors.

Everything here is torch + pandas (no streamlit), so the app's pages stay thin and the same
numbers can be computed from a notebook:

- `energy_landscape`     E(x), E(x, y) and predictions of natural images and of each attack
- `attack_trajectory`    one image attacked step by step: energies, top-5, frames
- `trades_decomposition` KL(p(·|x) ‖ p(·|x*)) = E_{k∼p(·|x)}[E(x*,k) − E(x,k)] + E(x) − E(x*)
- `weight_curve`, `weights_of`  the WEAT weight w(x) = 1/softplus(|E(x)|)
- `decode_image`, `load_uploaded_checkpoint`  untrusted user input → tensors / models
- `zoo_table`, `describe_model`, `load_training_log`, `training_phases`, `TrainingJob`

A model handed to these functions is never changed (attacks only take input gradients, and
training works on its own copy), so one cached model can serve many app sessions at once.
Images are float tensors in [0, 1], shape (B, C, H, W).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import WeatError
from .attacks import TorchAttack, TradesAttack, eval_mode, make_attack
from .energy import energy, joint_energy, weat_weights

__all__ = [
    "ATTACKS", "AttackSpec", "Landscape", "Trajectory", "TrainingJob", "attack_from", "attack_trajectory", "bf16_ok",
    "decode_image", "demo_images", "describe_model", "energy_landscape", "find_datasets", "image_grid_png",
    "load_training_log", "load_uploaded_checkpoint", "prepare", "trades_decomposition", "training_phases",
    "weight_curve", "weights_of", "zoo_table",
]

log = logging.getLogger(__name__)

# An attack plus its `target=` argument, e.g. make_attack("pgd10-t") → (PGD(..., targeted=True), None).
AttackSpec = Union[str, tuple, Callable]

# Labels the app offers → (make_attack pattern or torchattacks name, what it does to E(x) per MISSION.md)
ATTACKS: dict[str, str] = {
    "PGD": "pgd{steps}",            # untargeted: lowers E(x)
    "PGD-T": "pgd{steps}-t",        # targeted at a random other class: raises E(x)
    "CW": "cw{steps}",              # PGD on the CW margin: raises E(x)
    "APGD-CE": "apgd-ce",
    "APGD-T": "apgd-t",
    "TRADES-KL": "trades{steps}",
    "E(x)↓": "energy-lower{steps}",
    "E(x)↑": "energy-raise{steps}",
}


def prepare(model: nn.Module, channels_last: Optional[bool] = None) -> nn.Module:
    """A private, inference-ready copy of `model`: eval mode, parameters frozen (attacks only
    need input gradients) and, on CPU, channels_last memory (about 2× faster convolutions)."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    dev = _device(m)
    if channels_last if channels_last is not None else dev.type == "cpu":
        m = m.to(memory_format=torch.channels_last)
    return m


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _to_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x on the model's device, in the model's memory format."""
    x = x.to(_device(model), torch.float32)
    w = next((m.weight for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if w is not None and x.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(_to_model(model, x[i:i + batch_size])).float().cpu()
                          for i in range(0, x.shape[0], batch_size)])  # (N, K)


def attack_from(kind: str, eps: float = 8 / 255, steps: int = 10, norm: str = "linf") -> tuple:
    """(attack, target) for an app label in `ATTACKS` (or any `make_attack` name)."""
    pattern = ATTACKS.get(kind, kind)
    if pattern in ("apgd-ce", "apgd-t"):
        return TorchAttack(pattern, eps=eps, norm=norm, steps=steps), None
    try:
        attack, target = make_attack(pattern.format(steps=steps), eps=eps, norm=norm)
    except ValueError as e:
        raise WeatError(str(e)) from None
    return attack, target


def bf16_ok(device: torch.device) -> bool:
    """Whether crafting attacks under bf16 autocast pays off here: CUDA, or a CPU with native
    bf16 (AVX512-BF16 / AMX), where oneDNN runs the convolutions ~1.4× faster."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads. Work on a single image gains nothing from a second thread,
    and on a busy 2-core machine (a shared Space) the OpenMP hand-offs make it several times
    slower. (The setting is process-wide; it is restored right after.)"""
    old = torch.get_num_threads()
    if n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _spec(spec: AttackSpec) -> tuple:
    if isinstance(spec, str):
        return attack_from(spec)
    if isinstance(spec, tuple):
        return spec
    return spec, None


def _run_attack(attack, target, model, x, y, callback=None, amp: bool = False) -> torch.Tensor:
    """x_adv, crafted under bf16 autocast when `amp` (PGD-style attacks only: sign-gradient steps
    do not need fp32 gradients; torchattacks' APGD compares losses, so it stays in fp32).
    Energies are always evaluated afterwards in fp32."""
    kw = {"callback": callback} if callback is not None else {}
    if target is not None:
        kw["target"] = target
    amp = amp and not isinstance(attack, TorchAttack)
    with torch.enable_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        return attack(model, x, y, **kw).float()


# ---------------------------------------------------------------------------------------------
# energy landscape


@dataclass
class Landscape:
    per_image: pd.DataFrame  # one row per (attack, image): attack, index, label, pred, correct, E(x), E(x,y)
    summary: pd.DataFrame  # one row per attack: accuracy, mean/std E(x), shift vs natural, …
    stopped: bool = False


def energy_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, AttackSpec],
    batch_size: int = 128,
    seed: int = 0,
    callback: Optional[Callable[[int, int, str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    amp: Optional[bool] = None,
) -> Landscape:
    """E(x) and E(x, y) of the natural images and of each attack's x*.

    x (N, C, H, W) in [0, 1], y (N,); `attacks` maps a display name to an `ATTACKS` label, a
    `make_attack` name, or an (attack, target) pair. `callback(done, total, name)` follows the
    batches; `should_stop()` ends the run early (`stopped`). `amp` crafts the attacks under
    bf16 autocast (default: where `bf16_ok`); every energy is computed in fp32.
    MISSION.md, observation 1: untargeted attacks lower E(x), targeted ones raise it.
    """
    if amp is None:
        amp = bf16_ok(_device(model))
    y = y.long().cpu()
    n = int(y.shape[0])
    specs = {"natural": (None, None), **{k: _spec(v) for k, v in attacks.items()}}
    nb = (n + batch_size - 1) // batch_size
    total, done = len(specs) * nb, 0
    frames, rows, stopped = [], [], False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, (attack, target) in specs.items():
            t0, logits = time.perf_counter(), []
            for i in range(0, n, batch_size):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                xb, yb = _to_model(model, x[i:i + batch_size]), y[i:i + batch_size].to(_device(model))
                if attack is not None:
                    xb = _run_attack(attack, target, model, xb, yb, amp=amp)
                logits.append(_logits(model, xb, batch_size))
                done += 1
                if callback is not None:
                    callback(done, total, name)
            if stopped or not logits:
                break
            lg = torch.cat(logits)  # (N, K)
            pred = lg.argmax(1)
            frames.append(pd.DataFrame({
                "attack": name, "index": np.arange(n), "label": y.numpy(), "pred": pred.numpy(),
                "correct": (pred == y).numpy(), "E(x)": energy(lg).numpy(), "E(x,y)": joint_energy(lg, y).numpy()}))
            rows.append({"attack": name, "time_s": time.perf_counter() - t0})
    per_image = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["attack", "index", "label", "pred", "correct", "E(x)", "E(x,y)"])
    return Landscape(per_image, _summary(per_image, rows), stopped)


def _summary(per_image: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    if per_image.empty:
        return pd.DataFrame()
    g = per_image.groupby("attack", sort=False)
    s = pd.DataFrame({"n": g.size(), "accuracy": g["correct"].mean(), "mean E(x)": g["E(x)"].mean(),
                      "std E(x)": g["E(x)"].std(ddof=0), "mean E(x,y)": g["E(x,y)"].mean()})
    nat = s.loc["natural"] if "natural" in s.index else None
    if nat is not None:
        s["shift E(x)"] = s["mean E(x)"] - nat["mean E(x)"]  # negative: x* sits lower than x
        s["shift E(x,y)"] = s["mean E(x,y)"] - nat["mean E(x,y)"]
    s["time_s"] = pd.Series({r["attack"]: r["time_s"] for r in rows})
    return s.reset_index()


# ---------------------------------------------------------------------------------------------
# one image, step by step


@dataclass
class Trajectory:
    steps: pd.DataFrame  # step, E(x), E(x,y), E(x,t), p(y), p(t), pred, Linf, L2 (step 0 = natural image)
    frames: torch.Tensor  # (S+1, C, H, W): the natural image, then x_adv at every step
    x: torch.Tensor  # (1, C, H, W)
    x_adv: torch.Tensor  # (1, C, H, W)
    top_before: pd.DataFrame  # class, prob (top-k of p(·|x))
    top_after: pd.DataFrame  # class, prob (top-k of p(·|x*))
    label: int = 0
    target: Optional[int] = None

    @property
    def perturbation(self) -> torch.Tensor:
        """x* − x, (1, C, H, W)."""
        return self.x_adv - self.x


def _topk(logits: torch.Tensor, k: int, classes: Sequence[str]) -> pd.DataFrame:
    p = F.softmax(logits.float(), dim=-1).view(-1)
    v, i = p.topk(min(k, p.numel()))
    return pd.DataFrame({"class": [_name(classes, j) for j in i.tolist()], "index": i.tolist(), "prob": v.tolist()})


def _name(classes: Sequence[str], i: int) -> str:
    return str(classes[i]) if classes and i < len(classes) else str(i)


def attack_trajectory(
    model: nn.Module,
    x: torch.Tensor,
    y: int,
    attack: AttackSpec,
    target: Union[None, int, str] = None,
    topk: int = 5,
    classes: Sequence[str] = (),
    seed: int = 0,
) -> Trajectory:
    """Attack one image x (C, H, W) or (1, C, H, W) with true class y, recording E(x), E(x, y)
    (and E(x, t) for a target t), p(y|x) and the prediction at every step, plus every frame.
    `target` is a class index, "random", "least-likely" or None (the attack's own default)."""
    x = x.reshape(1, *x.shape[-3:]).float()
    attack, default_target = _spec(attack)
    yt = torch.tensor([int(y)], device=_device(model))
    tgt = default_target if target is None else target
    if isinstance(tgt, int):
        tgt = torch.tensor([tgt], device=_device(model))
    if getattr(attack, "targeted", False) and not isinstance(tgt, torch.Tensor):
        from .attacks import pick_target

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tgt = pick_target(model, _to_model(model, x), yt, tgt, int(_logits(model, x).shape[1]))
    t = int(tgt.view(-1)[0]) if isinstance(tgt, torch.Tensor) else None
    with _threads(1):
        return _trajectory(model, x, int(y), yt, attack, tgt, t, topk, classes, seed)


def _trajectory(model, x, y, yt, attack, tgt, t, topk, classes, seed) -> Trajectory:
    frames, logits = [x.cpu()], [_logits(model, x)]

    def record(step: int, x_adv: torch.Tensor, lg: torch.Tensor) -> None:
        frames.append(x_adv.detach().float().cpu())
        logits.append(lg.detach().float().cpu())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x_adv = _run_attack(attack, tgt if getattr(attack, "targeted", False) else None, model,
                            _to_model(model, x), yt, callback=record).float().cpu()
    if not torch.equal(frames[-1], x_adv):  # torchattacks reports only the end point; keep it exact
        frames.append(x_adv)
        logits.append(_logits(model, x_adv))
    lg = torch.cat(logits)  # (S+1, K)
    fr = torch.cat(frames)  # (S+1, C, H, W)
    lab = torch.full((lg.shape[0],), int(y))
    p = F.softmax(lg, dim=1)
    d = (fr - x).flatten(1)
    steps = pd.DataFrame({"step": np.arange(lg.shape[0]), "E(x)": energy(lg).numpy(),
                          "E(x,y)": joint_energy(lg, lab).numpy(), "p(y)": p[:, int(y)].numpy(),
                          "pred": lg.argmax(1).numpy(), "Linf": d.abs().amax(1).numpy(), "L2": d.norm(dim=1).numpy()})
    if t is not None:
        steps["E(x,t)"] = joint_energy(lg, torch.full_like(lab, t)).numpy()
        steps["p(t)"] = p[:, t].numpy()
    steps["pred_name"] = [_name(classes, i) for i in steps["pred"]]
    return Trajectory(steps, fr, x.cpu(), x_adv, _topk(lg[0], topk, classes), _topk(lg[-1], topk, classes),
                      int(y), t)


# ---------------------------------------------------------------------------------------------
# TRADES as energies, WEAT weights


def trades_decomposition(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Optional[Callable] = None,
    batch_size: int = 128, seed: int = 0,
) -> pd.DataFrame:
    """Per image, the TRADES KL term split into energies (MISSION.md, "TRADES as energies"):

        KL(p(·|x) ‖ p(·|x*)) = E_{k∼p(·|x)}[E(x*,k) − E(x,k)]  +  E(x) − E(x*)
                               └──────── cross term ────────┘    └ marginal term ┘

    x* comes from `attack` (default: the TRADES attack, 10 steps, ε = 8/255). Columns: label,
    KL, cross term, marginal term, sum of terms, |error| (the identity's numerical residual),
    E(x), E(x*), w(x)."""
    attack = attack or TradesAttack()
    y = y.long().cpu()
    nat, adv = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            xb = _to_model(model, x[i:i + batch_size])
            adv.append(_logits(model, _run_attack(attack, None, model, xb, y[i:i + batch_size].to(xb.device))))
            nat.append(_logits(model, xb))
    ln, la = torch.cat(nat).double(), torch.cat(adv).double()  # (N, K); float64 so the check is tight
    p = F.softmax(ln, dim=1)
    cross = (p * (-la - -ln)).sum(1)  # E_{k∼p(·|x)}[E(x*,k) − E(x,k)], with E(x,k) = −f_k(x)
    e_nat, e_adv = -torch.logsumexp(ln, 1), -torch.logsumexp(la, 1)
    marginal = e_nat - e_adv
    kl = (p * (F.log_softmax(ln, 1) - F.log_softmax(la, 1))).sum(1)  # as attacks.kl_div, in float64
    return pd.DataFrame({
        "label": y.numpy(), "KL": kl.numpy(), "cross term": cross.numpy(), "marginal term": marginal.numpy(),
        "sum of terms": (cross + marginal).numpy(), "|error|": (kl - cross - marginal).abs().numpy(),
        "E(x)": e_nat.numpy(), "E(x*)": e_adv.numpy(), "w(x)": weat_weights(e_nat).numpy()})


def weight_curve(e_min: float = -30.0, e_max: float = 30.0, n: int = 601) -> pd.DataFrame:
    """The WEAT weight w(E) = 1/softplus(|E|) on a grid of energies (columns E, w)."""
    e = torch.linspace(e_min, e_max, n)
    return pd.DataFrame({"E": e.numpy(), "w": weat_weights(e).numpy()})


def weights_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> pd.DataFrame:
    """Natural energies, CE and WEAT weights of a batch, sorted by weight (largest first).
    Columns: index, label, pred, E(x), E(x,y), CE, w."""
    lg = _logits(model, x, batch_size)
    y = y.long().cpu()
    e = energy(lg)
    df = pd.DataFrame({"index": np.arange(len(y)), "label": y.numpy(), "pred": lg.argmax(1).numpy(),
                       "E(x)": e.numpy(), "E(x,y)": joint_energy(lg, y).numpy(),
                       "CE": F.cross_entropy(lg, y, reduction="none").numpy(), "w": weat_weights(e).numpy()})
    return df.sort_values("w", ascending=False, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# untrusted input: uploaded images and checkpoints

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000  # e.g. 8000 × 5000; checked from the header, before decoding


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


def load_uploaded_checkpoint(weights: bytes, config: Optional[bytes], weights_name: str = "model.safetensors",
                             device: Union[str, torch.device] = "cpu") -> nn.Module:
    """A model from an uploaded `.safetensors` file and its `config.json`, checked by a forward
    pass. Pickles (.pt/.pth/.bin/.ckpt/.pkl, or pickle bytes under any name) are refused:
    uploads never reach `torch.load`."""
    from .checkpoints import load

    if not weights:
        raise WeatError("the uploaded weights file is empty")
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


# ---------------------------------------------------------------------------------------------
# datasets for the app


def find_datasets(root: Optional[Union[str, Path]] = None) -> list[str]:
    """Datasets available offline under the data root (`root`, $WEAT_DATA_DIR or the default):
    torchvision names whose files are there, class-folder trees with train/ or test/, and
    .tar.gz/.tgz/.tar archives of that layout."""
    from .data import ARCHIVE_SUFFIXES, data_root

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
    from .data import ImageSet

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


# ---------------------------------------------------------------------------------------------
# model zoo


def describe_model(model: nn.Module) -> dict[str, Any]:
    """arch, classes, parameter count and provenance of a model (from `model.config`)."""
    cfg = dict(getattr(model, "config", {}))
    return {"arch": cfg.get("arch", type(model).__name__), "num_classes": cfg.get("num_classes"),
            "params": sum(p.numel() for p in model.parameters()), "method": cfg.get("method", "?"),
            "dataset": cfg.get("dataset", "?"), "epoch": cfg.get("epoch"), "source": cfg.get("source", "")}


def zoo_table(
    models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, attacks: Sequence[str] = ("pgd20",),
    eps: float = 8 / 255, batch_size: int = 128, callback: Optional[Callable[[str, str, int, int], None]] = None,
) -> pd.DataFrame:
    """One row per model: clean and robust accuracy under each attack ("pgd20", "aa-fast",
    "aa", …), mean natural/adversarial E(x) and the gap ΔE = mean E(x) − mean E(x*) under
    the first attack (MISSION.md observation 3: robust models have smaller gaps)."""
    from .evaluate import evaluate

    rows = []
    for name, model in models.items():
        cb = (lambda a, d, t, name=name: callback(name, a, d, t)) if callback is not None else None
        r = evaluate(model, x, y, attacks=list(attacks), eps=eps, batch_size=batch_size, callback=cb)
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


# ---------------------------------------------------------------------------------------------
# training logs and live runs

PHASE_NAMES = ("1 · warm-up", "2 · robust learning", "3 · robust overfitting", "3 · plateau")
MIN_EPOCHS_FOR_PHASES = 4


def load_training_log(path: Union[str, Path]) -> pd.DataFrame:
    """The per-epoch records of a run (`log.jsonl`, or a folder holding one) as a DataFrame
    sorted by epoch; unreadable lines are skipped."""
    p = Path(path)
    p = p / "log.jsonl" if p.is_dir() else p
    if not p.is_file():
        raise WeatError(f"no training log at {p}")
    recs = []
    for line in p.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and "epoch" in r:
            recs.append(r)
    if not recs:
        raise WeatError(f"{p} holds no epoch records")
    return history_frame(recs)


def history_frame(history: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Training records → DataFrame by epoch, with ΔE filled in from the energies if absent."""
    df = pd.DataFrame(list(history))
    if df.empty:
        return df
    df = df.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    if "delta_e" not in df and {"energy_nat_mean", "energy_adv_mean"} <= set(df):
        df["delta_e"] = df["energy_nat_mean"] - df["energy_adv_mean"]
    return df


def training_phases(df: pd.DataFrame) -> dict[str, Any]:
    """Where the three phases of adversarial training lie in a run (a heuristic for display).

    Phase 1 runs to the learning-rate peak (the end of warm-up; the first tenth of training
    for flat schedules); phase 2 up to the epoch of best robust test accuracy; phase 3 after
    it. Robust overfitting is flagged when the robust test accuracy ends more than one point
    below its best (of at least 5 %) while training goes on (Rice et al. 2020); by then ΔE
    typically drifts away from 0 for SAT and stays near 0 for TRADES/WEAT; without it phase 3
    is a plateau. Standard (non-adversarial) runs and runs under 4 epochs get no phases."""
    if df.empty or "test_pgd_acc" not in df or ("method" in df and (df["method"] == "standard").any()):
        # a standard (non-adversarial) run has no robust phases to speak of
        return {"phases": [], "best_epoch": None, "overfitting": False}
    ep = df["epoch"].to_numpy()
    rob = df["test_pgd_acc"].to_numpy(dtype=float)
    best_i = int(np.nanargmax(rob))
    if "lr" in df and df["lr"].nunique() > 1:
        warm_i = int(np.argmax(df["lr"].to_numpy()))
    else:
        warm_i = max(0, len(ep) // 10 - 1)
    warm_i = min(warm_i, best_i)
    scale = 100.0 if np.nanmax(rob) > 1.5 else 1.0
    drop = float(rob[best_i] - rob[-1])
    # a drop of more than one point from a best that is itself meaningful (≥ 5 %)
    overfit = best_i < len(ep) - 1 and drop > 0.01 * scale and rob[best_i] >= 0.05 * scale
    bounds = [(ep[0], ep[warm_i]), (ep[warm_i], ep[best_i]), (ep[best_i], ep[-1])]
    names = PHASE_NAMES[:2] + (PHASE_NAMES[2] if overfit else PHASE_NAMES[3],)
    phases = [{"name": n, "start": float(a), "end": float(b)} for n, (a, b) in zip(names, bounds) if b > a]
    if len(ep) < MIN_EPOCHS_FOR_PHASES:
        phases = []  # too short a run to tell phases apart
    return {"phases": phases, "best_epoch": int(ep[best_i]), "best_robust": float(rob[best_i]),
            "overfitting": bool(overfit), "robust_drop": drop}


@dataclass
class TrainingJob:
    """A `weat_core.train.train` run in a background thread, so a UI can poll its history,
    ask it to stop (it ends cleanly after the current batch) and pick up the model."""

    config: Any
    data: Optional[tuple] = None
    history: list = field(default_factory=list)
    result: Any = None
    error: Optional[str] = None
    started: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: Optional[threading.Thread] = field(default=None, repr=False)

    def start(self) -> "TrainingJob":
        try:
            from .train import train
        except ImportError as e:
            raise WeatError(f"training is not available in this installation ({e})") from None

        def run():
            try:
                self.result = train(self.config, data=self.data, callback=lambda e, r: self.history.append(dict(r)),
                                     should_stop=self._stop.is_set, progress=False)
            except WeatError as e:
                self.error = str(e)
            except Exception as e:  # noqa: BLE001 - surfaced to the UI instead of killing the thread silently
                log.exception("training failed")
                self.error = f"training failed: {type(e).__name__}: {e}"

        self._thread = threading.Thread(target=run, name="weat-train", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def model(self) -> Optional[nn.Module]:
        return None if self.result is None else self.result.model
