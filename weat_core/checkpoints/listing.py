"""Where checkpoints live and what they are: the shipped `checkpoints/` folder (and
`$WEAT_CHECKPOINTS_DIR`), each checkpoint's `config.json`, and the listings of shipped
checkpoints and of recorded training runs. Reads JSON only: no torch."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .. import WeatError

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
RUNS_DIR = "_runs"  # recorded training runs shipped without weights: checkpoints/_runs/NAME/
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

PathLike = Union[str, os.PathLike]


def checkpoints_dir() -> Path:
    """The repository's `checkpoints/` folder (where shipped models live)."""
    return Path(__file__).resolve().parents[2] / "checkpoints"


def _search_dirs() -> list[Path]:
    dirs = [checkpoints_dir()]
    extra = os.environ.get("WEAT_CHECKPOINTS_DIR")
    if extra:
        dirs.insert(0, Path(extra))
    return dirs


@dataclass
class CheckpointInfo:
    name: str
    path: Path
    arch: str
    dataset: str
    method: str
    num_classes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "arch": self.arch, "dataset": self.dataset,
                "method": self.method, "num_classes": self.num_classes, **{k: v for k, v in self.metrics.items()}}


def load_config(directory: PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WeatError(f"{directory} has no {CONFIG_NAME}; a checkpoint needs its config beside the weights") from None
    except json.JSONDecodeError as e:
        raise WeatError(f"{path} is not valid JSON ({e})") from None


def _scan(pattern: str) -> list[CheckpointInfo]:
    """The folders holding a file matching `pattern` (relative to each search dir) with a
    readable config.json, first search dir first on equal names, sorted by name."""
    found: dict[str, CheckpointInfo] = {}
    for root in _search_dirs():
        for hit in sorted(root.glob(pattern)) if root.is_dir() else []:
            d = hit.parent
            if d.name in found:
                continue
            try:
                cfg = load_config(d)
            except WeatError as e:
                log.warning("skipping %s: %s", d, e)
                continue
            found[d.name] = CheckpointInfo(
                name=d.name, path=d, arch=cfg.get("arch", "?"), dataset=cfg.get("dataset", "?"),
                method=cfg.get("method", "?"), num_classes=int(cfg.get("num_classes", 0)),
                metrics=dict(cfg.get("metrics", {})), config=cfg,
            )
    return [found[k] for k in sorted(found)]


def list_checkpoints() -> list[CheckpointInfo]:
    """Every checkpoint shipped in `checkpoints/` (and `$WEAT_CHECKPOINTS_DIR`), sorted by name."""
    return _scan(f"*/{CONFIG_NAME}")


def list_runs() -> list[CheckpointInfo]:
    """Recorded training runs shipped without weights (their per-epoch `log.jsonl`, the
    settings in `config.json` and a card), in `checkpoints/_runs/` (and
    `$WEAT_CHECKPOINTS_DIR/_runs/`), sorted by name. They are there for their training
    dynamics (the training page); `load` cannot load them, and `list_checkpoints` leaves them out."""
    return _scan(f"{RUNS_DIR}/*/log.jsonl")
