"""Generation: a robust classifier read as an energy-based model is a generator.

    from weat_core import checkpoints
    from weat_core.sampling import generate
    model = checkpoints.load("weatnet_s-weat-adv")
    res = generate(model, torch.arange(10).repeat_interleave(8), seed=0)   # res.images (80, 3, 32, 32)

- `sgld`:       the SGLD sampler (momentum, update clamp, divergence detection) and its Heun variant,
                small frozen objects with `init()` / `step()`; the caller writes the loop.
- `init`:       uniform / class-conditional Gaussian / class-wise PCA starts.
- `class_stats`: `ClassStats`, what the Gaussian and PCA starts need (fitted once, saved as
                `init_stats.safetensors` beside the checkpoint); `pca`, its linear algebra.
- `settings`:   `GenerationSettings` and the per-model defaults (`default_settings`).
- `generation`: `generate(model, labels, ...)`.
- `metrics`:    Inception Score / FID (torchmetrics) and the offline classifier agreement and diversity.

The names above are imported from their submodules on first use. The `generate`, `gen-eval`
and `init-stats` commands live in `weat_core.cli`.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("GenerationResult", "generate", "objective_energy"), "generation"),
    **dict.fromkeys(("FAMILY_DEFAULTS", "OBJECTIVES", "GenerationSettings", "default_settings", "threat_model"),
                    "settings"),
    **dict.fromkeys(("INITS", "initial_images"), "init"),
    **dict.fromkeys(("DEFAULT_MAX_BYTES", "STATS_NAME", "ClassStats", "stats_path"), "class_stats"),
    **dict.fromkeys(("classifier_agreement", "diversity", "evaluate_samples", "fid", "inception_score",
                     "penultimate_features"), "metrics"),
    **dict.fromkeys(("DIVERGENCE_REASONS", "SGLD", "EnergyFn", "Heun", "SamplingDiverged", "SGLDState", "make_sampler"),
                    "sgld"),
}
# imported on first use, so that the command line builds its parser without torch
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ClassStats",
    "DEFAULT_MAX_BYTES",
    "DIVERGENCE_REASONS",
    "EnergyFn",
    "FAMILY_DEFAULTS",
    "GenerationResult",
    "GenerationSettings",
    "Heun",
    "INITS",
    "OBJECTIVES",
    "SGLD",
    "SGLDState",
    "STATS_NAME",
    "SamplingDiverged",
    "classifier_agreement",
    "default_settings",
    "diversity",
    "evaluate_samples",
    "fid",
    "generate",
    "inception_score",
    "initial_images",
    "make_sampler",
    "objective_energy",
    "penultimate_features",
    "stats_path",
    "threat_model",
]
