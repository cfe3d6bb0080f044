"""Turn a training run into a shipped checkpoint: weights + config.json with measured test
metrics + the per-epoch energy log + a model card (README.md).

    python -m weat_core export --run runs/weat-adv-weatnet_s --name weatnet_s-weat-adv \
        --dataset cifar10 --attacks pgd20,pgd20-t --aa-n 1000

Modules: `ship` (export_run, export_log, choose_epoch, store_metrics, store_sweep, store_attacks, store_plane),
`card` (the model card, the re-train command, the `--init` lineage), `observation` (the card's
Observation 1 tables and its Observation 3 line), `heldout` (the held-out best/last check),
`hub` (push_checkpoint: publish a checkpoint folder on the Hugging Face Hub; push_model: a model held in
memory, as the app's training page does; imported on use).
"""

from .card import lineage, model_card, train_command
from .heldout import heldout_summary, heldout_text
from .ship import choose_epoch, export_log, export_run, store_attacks, store_metrics, store_plane, store_sweep

__all__ = ["choose_epoch", "export_log", "export_run", "heldout_summary", "heldout_text", "lineage", "model_card", "train_command",
           "store_attacks", "store_metrics", "store_plane", "store_sweep"]
