"""The analyses behind the WEAT Lens app, as plain functions over a model and image tensors.

Everything here is torch + pandas (no streamlit), so the app's pages stay thin and the same
numbers can be computed from a notebook:

- `energy_landscape`     E(x), E(x, y) and predictions of natural images and of each attack
- `observation1`         whether each attack moved E(x) the way MISSION.md's observation 1 expects
- `strength_sweep`, `steps_sweep`, `sweep_summary`, `lowers_from`  observation 1 for PGD and targeted PGD
  across ε, or across the number of steps
- `shift_by_outcome`, `outcome_summary`  each attack's shift of E(x), split by what it did to the prediction
- `attack_trajectory`    one image attacked step by step: energies, top-5, frames
- `energy_plane`         E(x) on the plane through an image and two perturbations (e.g. PGD and PGD-T)
- `trades_decomposition` KL(p(·|x) ‖ p(·|x*)) = E_{k∼p(·|x)}[E(x*,k) − E(x,k)] + E(x) − E(x*)
- `weight_curve`, `weights_of`  the WEAT weight w(x) = 1/softplus(|E(x)|)
- `decode_image`, `load_uploaded_checkpoint`  untrusted user input → tensors / models; `checkpoint_zip` the way back
- `zoo_table`, `paired_table` (models compared image by image), `gap_trend` (and `gap_trend_within` groups of
  models trained alike, `training_recipe`), `describe_model`,
  `load_training_log`, `training_phases`, `TrainingJob`

A model handed to these functions is never changed (attacks only take input gradients, and
training works on its own copy), so one cached model can serve many app sessions at once.
Images are float tensors in [0, 1], shape (B, C, H, W).

Modules (everything public is re-exported here, so `from weat_core import lens` is enough):

- `_common`        `prepare`, and the private device / memory-format / batched-logits helpers
- `attack_specs`   `ATTACKS`, `EXPECTED_SHIFT`, `AttackSpec`, `attack_from`, `batch_size_for`, `bf16_ok`, running an attack (bf16)
- `landscape`      `energy_landscape`, `Landscape`, `observation1`, `shift_by_outcome`, `outcome_summary`, `OUTCOMES`
- `sweep`          `strength_sweep`, `steps_sweep`, `sweep_summary`, `lowers_from` (Observation 1 as the attack grows)
- `trajectory`     `attack_trajectory`, `Trajectory`
- `plane`          `energy_plane`, `EnergyPlane`, `plane_spreads` (the span of E(x) on each image's plane)
- `decomposition`  `trades_decomposition`, `weight_curve`, `weights_of`
- `uploads`        `decode_image`, `load_uploaded_checkpoint` and their limits; `checkpoint_zip` (a model as one download)
- `datasets`       `find_datasets`, `demo_images`, `image_grid_png`
- `zoo`            `describe_model`, `recorded_table`, `observation1_grid`, `zoo_table`, `paired_table`,
                   `gap_trend`, `gap_trend_within`, `rank_corr_p`, `training_recipe`
- `training_log`   `load_training_log`, `history_frame`, `training_phases`, `runs_summary`, `stage_starts`,
                   `smooth_curves`
- `training_job`   `TrainingJob` (kept on disk: `live_runs_dir`, `kept_runs`, `prune_kept_runs`)
"""

from __future__ import annotations

from ._common import prepare
from .attack_specs import ATTACKS, EXPECTED_SHIFT, AttackSpec, attack_from, batch_size_for, bf16_ok
from .datasets import demo_images, find_datasets, image_grid_png
from .decomposition import trades_decomposition, weight_curve, weights_of
from .landscape import (
    OUTCOMES,
    Landscape,
    energy_landscape,
    observation1,
    outcome_summary,
    shift_by_outcome,
)
from .sweep import lowers_from, steps_sweep, strength_sweep, sweep_summary
from .trajectory import Trajectory, attack_trajectory
from .training_job import (  # noqa: F401 - KEEP_RUNS is public, not in __all__
    KEEP_RUNS,
    TrainingJob,
    kept_runs,
    live_runs_dir,
    prune_kept_runs,
)
from .training_log import (  # noqa: F401 - history_frame and the constants are public, not in __all__
    MIN_EPOCHS_FOR_PHASES,
    PHASE_NAMES,
    history_frame,
    load_training_log,
    runs_summary,
    smooth_curves,
    stage_starts,
    training_phases,
)
from .uploads import (  # noqa: F401 - the limits are public, not in __all__
    MAX_UNZIPPED_BYTES,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    PICKLE_MAGIC,
    checkpoint_zip,
    decode_image,
    load_uploaded_checkpoint,
)
from .plane import EnergyPlane, energy_plane, plane_spreads
from .zoo import (describe_model, gap_trend, gap_trend_within, observation1_grid, paired_table, rank_corr_p,
                  recorded_table, training_recipe, zoo_table)

__all__ = [
    "ATTACKS", "EXPECTED_SHIFT", "AttackSpec", "EnergyPlane", "Landscape", "Trajectory", "TrainingJob", "attack_from", "batch_size_for", "attack_trajectory", "bf16_ok",
    "checkpoint_zip", "decode_image", "demo_images", "describe_model", "energy_landscape", "energy_plane", "plane_spreads", "gap_trend", "gap_trend_within", "find_datasets", "image_grid_png",
    "load_training_log", "load_uploaded_checkpoint", "observation1", "observation1_grid", "prepare", "rank_corr_p", "recorded_table", "runs_summary", "smooth_curves", "stage_starts",
    "kept_runs", "live_runs_dir", "prune_kept_runs",
    "lowers_from", "strength_sweep", "steps_sweep", "sweep_summary", "shift_by_outcome", "outcome_summary", "OUTCOMES",
    "trades_decomposition", "training_phases", "training_recipe", "weight_curve", "weights_of", "zoo_table", "paired_table",
]
