"""Checkpoints: `model.safetensors` (sharded allowed) + `config.json`, the Hugging Face Hub layout.

`load(source)` accepts, in this order:
1. the name of a checkpoint shipped in the repository's `checkpoints/` folder (or in
   `$WEAT_CHECKPOINTS_DIR`), e.g. "weatnet_s-weat-adv";
2. a local folder holding `config.json` and the weights (or a training run folder, whose
   `LATEST` file names its newest complete checkpoint), or a weights file with `config.json`
   beside it;
3. a Hugging Face Hub repo id "owner/name", fetched with `huggingface_hub.snapshot_download`
   (revision pinning; honours `HF_HUB_OFFLINE`, `HF_HOME`/`HF_HUB_CACHE` and the local cache);
4. `robustbench:NAME[:DATASET[:THREAT]]` when the optional robustbench package is installed.

Loading never unpickles code: safetensors files, or `torch.load(weights_only=True)` for
plain tensor state dicts; anything else is refused with a clear error.
"""

from .store import load, load_state_dict, resolve, save
from .listing import (  # noqa: F401 - the file names and _HUB_ID are public to the rest of weat_core
    _HUB_ID,
    CONFIG_NAME,
    INDEX_NAME,
    PICKLE_SUFFIXES,
    RUNS_DIR,
    WEIGHTS_NAME,
    CheckpointInfo,
    checkpoints_dir,
    list_checkpoints,
    list_runs,
    load_config,
)

__all__ = [
    "CheckpointInfo",
    "checkpoints_dir",
    "list_checkpoints",
    "list_runs",
    "load",
    "load_config",
    "load_state_dict",
    "resolve",
    "save",
]
