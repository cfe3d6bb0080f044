"""Adversarial training (SAT, TRADES, MART, WEAT-adv, WEAT-nat, or standard) with live
energy tracking, atomic per-epoch checkpoints, exact resume and optional DDP.

Recipe (MISSION.md): SGD momentum 0.9, weight decay 5e-4, lr 0.1 one-cycle with 25 % warm-up,
batch 128, L∞ ε = 8/255; the TRADES attack (10 steps of 2/255) for TRADES/WEAT; PGD-10 for
SAT/MART; β = 6. Data lives on the training device as uint8 and is augmented there (random
crop with 4-pixel zero padding + horizontal flip), so the inner loop never waits for a loader.

`minutes` sets a wall-clock budget instead of an epoch count: a few throwaway steps and one
per-epoch evaluation (the second of two on a GPU or compiled) are timed (then undone), and the
run trains as many whole epochs as fit, with the learning-rate schedule spanning exactly those.
After the first real epoch the count is checked against that epoch's pace and re-planned where
that changes nothing already done (step and constant schedules); a resumed run keeps its count.
With `max_epochs` as well, the run trains at most that many: the budget only shortens it.

`ema` keeps an exponential moving average of the weights (Gowal et al. 2020, arXiv:2010.03593,
count model weight averaging among what makes adversarial training stronger), with timm's
`ModelEmaV3`: after optimizer step t = 1, 2, … the average moves towards the weights by 1 − d_t,
where d_t = min(ema, 1 − t^(−3/4)) (timm's warm-up: the first step copies the weights, d_t is
0.968 at step 100 and 0.994 at 1,000), BatchNorm statistics included. The averaged weights are then what the run produces: they are
measured every epoch (`ema_test_*` beside the trained weights' `test_*`), checkpointed (the
trained weights stay in the state folder for `--resume`), picked as best, exported and returned.

Modules: `config` (the methods, `TrainConfig`, `lr_at`), `steps` (augmentation, the attack and
one training step, an epoch's summed training terms, the per-epoch subset metrics), `loop` (`train`), `budget` (the wall-clock
budget), `run_folder` (checkpoints, `--init`, `--resume`), `distributed` (the DDP helpers).

Run folder layout (`out`):
    log.jsonl          one JSON record per epoch
    state-NNNN/        newest complete checkpoint: model.safetensors, config.json,
                       optimizer.safetensors, trainer.json (with `ema`: model.safetensors
                       holds the averaged weights and trained.safetensors the trained ones)
    best-NNNN/         the checkpoint with the best test PGD accuracy so far (clean accuracy
                       for standard training; the averaged weights' with `ema`)
    LATEST, BEST       one line each naming those folders; replaced atomically (os.replace),
                       so a kill at any moment leaves the last good checkpoint readable
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "epochs_for_budget": "budget", "replanned_epochs": "budget",
    "COMPILE_MODES": "config", "METHODS": "config", "SCHEDULES": "config", "TrainConfig": "config",
    "lr_at": "config", "momentum_at": "config", "onecycle_cos_at": "config",
    "TrainResult": "loop", "train": "loop",
    "augment": "steps", "make_attack": "steps", "train_step": "steps",
}
# imported on first use: `config` is free of torch, so the command line's parser reads it quickly
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["TrainConfig", "TrainResult", "train", "train_step", "make_attack", "lr_at", "momentum_at", "onecycle_cos_at",
           "augment", "METHODS", "SCHEDULES", "COMPILE_MODES", "epochs_for_budget", "replanned_epochs"]
