"""Robustness evaluation: clean accuracy, PGD-k (L∞/L2), AutoAttack (standard or fast),
and energy statistics of natural and adversarial images, resumable batch by batch. Reading
results (tables, stored metrics, paired comparisons, robust overfitting) is `weat_core.results`."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from . import WeatError
from .attacks import eval_mode, make_attack, seeded_targets
from .attacks.base import POLL_S, Polled, num_classes_of
from .attacks.autoattack import TorchAttack
from .energy import energy, energy_stats, joint_energy

__all__ = ["StoppedAfterBatch", "eval_logits", "evaluate", "parse_eps", "parse_radius", "per_255"]

log = logging.getLogger(__name__)


class StoppedAfterBatch(KeyboardInterrupt):
    """`evaluate` ended by its `should_stop`, with every finished batch saved in its state."""


def parse_eps(s: str | float) -> float:
    """"8/255" → 0.0313…, "0.5" → 0.5."""
    if isinstance(s, (int, float)):
        return float(s)
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            return float(a) / float(b)
        return float(s)
    except (ValueError, ZeroDivisionError):
        raise WeatError(f"{s!r} is not a number: write it as a fraction such as 8/255 or a decimal such as 0.5") from None


def parse_radius(s: str | float, norm: str = "linf") -> float:
    """`parse_eps` for an attack radius. An L∞ radius above 1 covers the whole pixel range [0, 1],
    so "8" almost surely meant 8/255: it is refused with the fraction to write."""
    v = parse_eps(s)
    if norm == "linf" and v > 1:
        raise WeatError(f"an L∞ ε of {v:g} is more than the whole pixel range [0, 1]; radii are fractions of it, "
                        f"so write {v:g}/255 for {v:g} pixel levels")
    return v


def per_255(v: float) -> str:
    """The inverse of `parse_eps` for radii and steps: 0.0313… → "8/255", 0.00196… → "0.5/255"."""
    return f"{round(v * 255, 4):g}/255"


@torch.no_grad()
def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, K) in fp32 with the model in eval mode (its own mode restored afterwards)."""
    with eval_mode(model):
        return model(x).float()


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[str] = ("pgd20",),
    eps: float = 8 / 255,
    norm: str = "linf",
    alpha: Optional[float] = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    callback: Optional[Callable[[str, int, int], None]] = None,
    state: Optional[Union[str, Path]] = None,
    per_image: bool = False,
    amp: bool = False,
    should_stop: Optional[Callable[[], bool]] = None,
) -> dict[str, Any]:
    """Accuracy and energies under each attack. x (N, C, H, W) float in [0, 1] on the model's
    device (or CPU: batches are moved), y (N,). Attack names as in `attacks.make_attack`
    ("pgd20", "pgd20-t", "cw20", "aa", "aa-fast", …). Returns a dict with `n`, `clean_acc`,
    `<attack>_acc`, and `energy[<name>]` / `joint_energy[<name>]` statistics, `delta_e[<attack>]`
    (mean E(x) − mean E(x*)), `share_lower[<attack>]` (the share of images whose x* has lower
    E(x) than the image itself), `unchanged[<attack>]` (the share handed back exactly as they
    were: APGD, FAB, Square and AutoAttack return the natural image where they fail, so their
    energy statistics mix adversarial and natural images) and `time_s[<attack>]`; with
    `per_image`, also `correct[<name>]`: for every image, whether it was classified right (a
    list of N bools), so that two models measured on the same images can be compared pairwise.

    `callback(name, done, n)` follows the batches, and is also called inside the attacks, between
    their forward passes, every `POLL_S` seconds with the images done so far (an AutoAttack batch
    takes minutes on a CPU): in the app, a point where a Stop click takes effect.

    `alpha`: the attacks' step size; by default `make_attack`'s (2/255 for L∞, ε/4 for L2). Marked in
    the result when given.

    `amp`: the attacks run under bf16 autocast (PGD-20 on PreActResNet-18: 2.3 times as fast on our
    bf16 CPU); accuracy and energies still come from an fp32 forward of the images the attack
    returned, so energies keep their precision. Marked in the result as `amp: true`. The stored,
    published metrics are fp32 throughout.

    `state`: a file where the progress is saved after every batch; when it exists (with the
    same settings) the evaluation continues from it, with the same random numbers, so an
    interrupted and resumed run gives exactly the results of an uninterrupted one. It is
    deleted once the evaluation completes. `should_stop()`, asked once a batch is saved there,
    ends the evaluation at that point with `StoppedAfterBatch` (a KeyboardInterrupt): a stop that
    loses no work, where a kill loses the batch under way (minutes of AutoAttack on a CPU)."""
    device = next(model.parameters()).device
    n = int(y.shape[0])
    res: dict[str, Any] = {"n": n, "eps": eps, "norm": norm, "energy": {}, "joint_energy": {}, "delta_e": {},
                           "share_lower": {}, "unchanged": {}, "time_s": {}, **({"correct": {}} if per_image else {})}
    names = ["clean"] + [a for a in attacks if a != "clean"]
    # every attack built first, so that an unknown name fails before any work
    built = {name: make_attack(name, eps=eps, norm=norm, alpha=alpha) for name in names[1:]}
    settings = {"n": n, "eps": eps, "norm": norm, "batch_size": batch_size, "seed": seed, "attacks": names,
                **({"per_image": True} if per_image else {}), **({"amp": True} if amp else {}),
                **({"alpha": alpha} if alpha is not None else {})}
    # (states written before per_image, amp and alpha existed stay valid)
    if state is not None:  # what was measured: a state of another checkpoint or other images is refused
        settings.update(model=_digest(model.state_dict().items()), images=_digest([("x", x), ("y", y)]))
    if amp:
        res["amp"] = True
    if alpha is not None:
        res["alpha"] = alpha
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    saved = _read_state(Path(state), settings) if state is not None else None
    done: list[str] = []
    e_nat = None
    if saved is not None:
        res, done, e_nat = saved["res"], saved["done"], saved["tensors"].get("e_nat")
        log.info("resuming the evaluation from %s: %s done", state, ", ".join(done) or "nothing")
    nb = (n + batch_size - 1) // batch_size
    bar = None
    at = 0  # the images done so far, for the callback inside an attack
    for step, name in enumerate(names, 1):
        if name in done:
            continue
        resumed = saved is not None and saved["current"] == name  # part of this measure done before
        if progress:  # a bar per measure, so that its rate and time left are its own: a clean batch takes
            # a fraction of a second, an AutoAttack batch minutes on a CPU (the batches done before count,
            # but not towards the rate)
            from tqdm.auto import tqdm

            bar = tqdm(total=nb, desc=f"eval {step}/{len(names)} {name}", unit="batch",
                       initial=saved["next_batch"] if resumed else 0)
        torch.manual_seed(seed)
        attack, target = (None, None) if name == "clean" else built[name]
        if attack is not None:  # a random target class per image, the same resumed or not
            target = seeded_targets(attack, target, y, num_classes_of(model, x[:1].to(device)), seed)
        if bar is not None and isinstance(attack, TorchAttack):  # AutoAttack: minutes to hours per batch on a CPU
            attack = dataclasses.replace(
                attack, on_stage=lambda label, k, _bar=bar: _bar.set_postfix_str(f"{label} on {k} images"))
        # the attack's view of the model: the same weights, the callback before each forward pass
        seen = (Polled(model, lambda _name=name: callback(_name, at, n), every=POLL_S)
                if attack is not None and callback else model)
        correct, es, ejs, cs, kept, first, spent = 0, [], [], [], 0, 0, 0.0
        if resumed:  # pick up after the last finished batch
            t = saved["tensors"]
            correct, kept, first, spent = saved["correct"], saved["kept"], saved["next_batch"], saved["spent"]
            es, ejs, cs = [t["es"]], [t["ejs"]], [t["cs"].bool()] if "cs" in t else []
            _set_rng(t, device)
        t0 = time.perf_counter()
        for b in range(first, nb):
            i = at = b * batch_size
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            if attack is not None:
                with torch.enable_grad(), autocast():
                    tb = target[i:i + batch_size].to(device) if isinstance(target, torch.Tensor) else target
                    xa = attack(seen, xb, yb, target=tb) if tb is not None else attack(seen, xb, yb)
                xa = xa.to(xb.dtype)
                kept += int((xa == xb).flatten(1).all(1).sum())
                xb = xa
            lg = eval_logits(model, xb)
            right = lg.argmax(1) == yb
            correct += int(right.sum())
            if per_image:
                cs.append(right.cpu())
            es.append(energy(lg).cpu())
            ejs.append(joint_energy(lg, yb).cpu())
            if state is not None and b + 1 < nb:  # after the last batch, the finished attack is saved below
                _write_state(Path(state), settings, res, done, e_nat, device, current=name, next_batch=b + 1,
                             correct=correct, kept=kept, spent=spent + time.perf_counter() - t0,
                             es=torch.cat(es), ejs=torch.cat(ejs), cs=torch.cat(cs) if cs else None)
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(name, min(i + batch_size, n), n)
            if state is not None and b + 1 < nb and should_stop is not None and should_stop():
                raise StoppedAfterBatch(f"stopped after batch {b + 1} of {nb} of {name}")
        if bar is not None:
            bar.close()
        e = torch.cat(es)
        res["clean_acc" if name == "clean" else f"{name}_acc"] = correct / max(n, 1)
        res["energy"][name] = energy_stats(e)
        res["joint_energy"][name] = energy_stats(torch.cat(ejs))
        res["time_s"][name] = spent + time.perf_counter() - t0
        if per_image:
            res["correct"][name] = torch.cat(cs).tolist() if cs else []
        if name == "clean":
            e_nat = e
        else:
            res["delta_e"][name] = float(e_nat.mean() - e.mean())
            res["share_lower"][name] = float((e < e_nat).float().mean()) if n else float("nan")
            res["unchanged"][name] = kept / max(n, 1)
        done.append(name)
        if state is not None:
            _write_state(Path(state), settings, res, done, e_nat, device)
            if name != names[-1] and should_stop is not None and should_stop():
                raise StoppedAfterBatch(f"stopped after {name}")
    if state is not None:
        Path(state).unlink(missing_ok=True)  # complete: nothing left to resume
    return res


# ---------------------------------------------------------------------------------------------
# resumable evaluation: the state after every batch, in one safetensors file


def _write_state(path: Path, settings: dict, res: dict, done: list[str], e_nat: Optional[torch.Tensor],
                 device: torch.device, current: Optional[str] = None, next_batch: int = 0, correct: int = 0,
                 kept: int = 0, spent: float = 0.0, es: Optional[torch.Tensor] = None,
                 ejs: Optional[torch.Tensor] = None, cs: Optional[torch.Tensor] = None) -> None:
    """Everything an interrupted `evaluate` needs to go on exactly where it stopped: finished
    results, the current attack's counts and energies, and the RNG state after the last batch
    (PGD's random starts draw from it). Written to a temporary file, then renamed over the old
    one, so a kill at any moment leaves a readable state."""
    from safetensors.torch import save_file

    tensors = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng_cuda"] = torch.cuda.get_rng_state(device)
    for k, v in (("e_nat", e_nat), ("es", es), ("ejs", ejs), ("cs", None if cs is None else cs.to(torch.uint8))):
        if v is not None and v.numel():
            tensors[k] = v.contiguous()
    meta = {"settings": settings, "res": res, "done": done, "current": current, "next_batch": next_batch,
            "correct": correct, "kept": kept, "spent": spent}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"weat_eval_state": json.dumps(meta)})
    os.replace(tmp, path)


def _read_state(path: Path, settings: dict) -> Optional[dict]:
    """The saved state of an interrupted evaluation with these settings (None when there is none)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["weat_eval_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise WeatError(f"{path} is not a readable evaluation state ({e}); delete it to start over") from None
    saved, now = meta["settings"], json.loads(json.dumps(settings))
    for key, what in (("model", "another model (other weights)"), ("images", "other test images")):
        if key not in saved:  # written before states named their model and images
            now.pop(key, None)
        elif saved[key] != now.get(key):
            raise WeatError(f"{path} holds an evaluation of {what}: pass the checkpoint and --dataset it "
                            "was started with, another --out, or delete the file to start over")
    if now != saved:
        shown = {k: v for k, v in saved.items() if k not in ("model", "images")}
        raise WeatError(f"{path} holds an evaluation with other settings ({shown}); "
                        "run it with those, or delete the file to start over")
    meta["tensors"] = tensors
    return meta


def _digest(named) -> str:
    """A short fingerprint of named tensors' values (a model's state_dict, the test images)."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _set_rng(tensors: dict, device: torch.device) -> None:
    torch.set_rng_state(tensors["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng_cuda"], device)
