"""weat_core: adversarial robustness through the lens of Energy-Based Models.

Submodules (imported on demand, nothing heavy happens at import time):
energy, attacks, losses, models, data, train, evaluate, results, export, sampling, checkpoints, lens, cli.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "WeatError", "DEFAULT_CPU_ARCH"]

# The small architecture for CPUs (`weat_core.models.DEFAULT_CPU_ARCH` is this name). It lives here,
# free of torch, so that building the command line's parser (its `train --arch` default) imports nothing heavy.
DEFAULT_CPU_ARCH = "weatnet_s"


class WeatError(Exception):
    """An error with a message meant for the user (the CLI and the app show it as is)."""
