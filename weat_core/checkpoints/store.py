"""Reading and writing checkpoints: `resolve` a source to a local folder (shipped name, path or
Hugging Face Hub id), `load` a model from it, `load_state_dict` without ever unpickling code, and
`save` a model as safetensors (sharded above a size) + `config.json`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from .. import WeatError
from .listing import (
    _HUB_ID,
    CONFIG_NAME,
    INDEX_NAME,
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    PathLike,
    _search_dirs,
    list_checkpoints,
    load_config,
)

if TYPE_CHECKING:  # torch and the models are imported where weights are read or written: listing stays light
    import torch
    from torch import nn

    from ..models import Classifier

log = logging.getLogger(__name__)


def _hub_snapshot(repo_id: str, revision: Optional[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover
        raise WeatError("loading from the Hugging Face Hub needs huggingface_hub: pip install huggingface_hub") from None
    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.md", "*.jsonl"]
        )
    except RevisionNotFoundError:
        raise WeatError(f"Hugging Face Hub repo {repo_id!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise WeatError(f"no Hugging Face Hub model repo {repo_id!r} (check the id, or log in for a private repo)") from None
    except LocalEntryNotFoundError:
        what = f"{repo_id!r} at revision {revision!r}" if revision else repr(repo_id)
        raise WeatError(
            f"{what} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1): connect to the internet once, or copy the model folder here and "
            "pass its path"
        ) from None
    except Exception as e:  # network errors of every kind
        raise WeatError(f"could not download {repo_id!r} from the Hugging Face Hub: {e}") from None
    return Path(path)


def resolve(source: PathLike, revision: Optional[str] = None) -> Path:
    """The local folder (or weights file) that `source` names; see the module docstring."""
    s = str(source)
    for root in _search_dirs():
        if (root / s / CONFIG_NAME).is_file():
            return root / s
    p = Path(s).expanduser()
    if p.is_dir():
        latest = p / "LATEST"
        if latest.is_file() and not (p / CONFIG_NAME).is_file():
            return p / latest.read_text().strip()
        return p
    if p.is_file():
        return p
    if _HUB_ID.match(s) and not s.startswith((".", "/")):
        return _hub_snapshot(s, revision)
    names = ", ".join(c.name for c in list_checkpoints()) or "none shipped"
    raise WeatError(f"no checkpoint {s!r}: not a shipped name ({names}), a local path, or a Hub id 'owner/name'")


def _refuse(path: Path, why: str) -> WeatError:
    return WeatError(
        f"refused to load {path.name}: {why}. Checkpoints must be safetensors (or a plain tensor state dict "
        "loadable with torch.load(weights_only=True)); pickled code is never executed"
    )


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, a sharded safetensors index, a folder, or a plain
    `torch.save(state_dict)` file (read with weights_only=True)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        if (path / INDEX_NAME).is_file():
            index = json.loads((path / INDEX_NAME).read_text())
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                sd.update(load_state_dict(path / shard))
            return sd
        if (path / WEIGHTS_NAME).is_file():
            return load_state_dict(path / WEIGHTS_NAME)
        for suffix in PICKLE_SUFFIXES:
            cands = sorted(path.glob(f"*{suffix}"))
            if cands:
                return load_state_dict(cands[0])
        raise WeatError(f"{path} holds no {WEIGHTS_NAME} (or sharded safetensors) weights")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeatError(f"{path.name} is not a readable safetensors file ({e})") from None
    if path.suffix in PICKLE_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for code, others for garbage
            raise _refuse(path, f"it is not a plain tensor state dict ({type(e).__name__})") from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise _refuse(path, "it does not hold a flat dict of tensors")
        return obj
    raise WeatError(f"unsupported weights file {path.name}: use .safetensors")


def _build(cfg: dict[str, Any]) -> Classifier:
    from ..models import create_model

    try:
        return create_model(cfg["arch"], num_classes=int(cfg["num_classes"]), mean=cfg.get("mean", (0.0, 0.0, 0.0)),
                            std=cfg.get("std", (1.0, 1.0, 1.0)), **cfg.get("arch_kwargs", {}))
    except KeyError as e:
        raise WeatError(f"config.json lacks the field {e.args[0]!r}") from None
    except (ValueError, TypeError, WeatError) as e:
        raise WeatError(f"config.json describes a model we cannot build: {e}") from None


def _load_robustbench(spec: str, device) -> nn.Module:
    """`robustbench:NAME[:DATASET[:THREAT]]`, e.g. robustbench:Wong2020Fast:cifar10:Linf, when the
    optional robustbench package is installed (its models take [0, 1] inputs, like ours)."""
    name, dataset, threat = (spec.split(":")[1:] + ["", "", ""])[:3]
    dataset, threat = dataset or "cifar10", threat or "Linf"
    try:
        from robustbench.utils import load_model
    except ImportError:
        raise WeatError("RobustBench models need the optional robustbench package (pip install robustbench)") from None
    try:
        model = load_model(model_name=name, dataset=dataset, threat_model=threat)
    except Exception as e:
        raise WeatError(f"RobustBench could not load {name!r} ({dataset}, {threat}): {e}") from None
    n_cls = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(dataset, 10)
    model.config = {"arch": f"robustbench:{name}", "num_classes": n_cls, "dataset": dataset,
                    "method": f"robustbench ({threat})", "source": spec}
    model.num_classes = n_cls
    return model.to(device).eval()


def load(source: PathLike, device: Union[str, torch.device] = "cpu", revision: Optional[str] = None) -> Classifier:
    """A model in eval mode on `device`, with `model.config` set from config.json."""
    if str(source).startswith("robustbench:"):
        return _load_robustbench(str(source), device)
    path = resolve(source, revision)
    directory = path if path.is_dir() else path.parent
    cfg = load_config(directory)
    model = _build(cfg)
    sd = load_state_dict(path)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}  # DDP prefix
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.startswith("normalize.")]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        detail = (f"shape of {bad[0]} is {tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}" if bad else
                  f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}")
        raise WeatError(f"the weights in {path.name} do not fit a {cfg['arch']} with {cfg['num_classes']} classes: {detail}")
    model.load_state_dict(sd, strict=False)
    model.config.update({k: v for k, v in cfg.items() if k not in ("arch", "num_classes", "arch_kwargs", "mean", "std")})
    model.config["source"] = str(directory)
    return model.to(device).eval()


def save(
    model: nn.Module,
    directory: PathLike,
    config: Optional[dict[str, Any]] = None,
    dtype: Optional[torch.dtype] = None,
    max_shard_size: Union[int, str] = "100MB",
) -> Path:
    """Write `model.safetensors` (sharded above `max_shard_size`) and `config.json` into
    `directory`. `dtype=torch.float16` stores half-precision weights (loading upcasts)."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = getattr(model, "module", model)  # DDP
    cfg = dict(getattr(base, "config", {}))
    cfg.update(config or {})
    if "arch" not in cfg or "num_classes" not in cfg:
        raise ValueError("save() needs config with 'arch' and 'num_classes' (models from create_model carry it)")
    sd = {k: v.detach().to("cpu") for k, v in base.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() and not k.startswith("normalize.") else v for k, v in sd.items()}
    cfg["weights_dtype"] = str(dtype or next(iter(sd.values())).dtype).replace("torch.", "")
    split = split_torch_state_dict_into_shards(sd, max_shard_size=max_shard_size)
    for stale in list(directory.glob("model*.safetensors")) + [directory / INDEX_NAME]:
        if stale.name not in split.filename_to_tensors:
            stale.unlink(missing_ok=True)
    for filename, names in split.filename_to_tensors.items():
        save_file({n: sd[n].contiguous() for n in names}, str(directory / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (directory / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True))
    tmp = directory / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
    os.replace(tmp, directory / CONFIG_NAME)
    return directory
