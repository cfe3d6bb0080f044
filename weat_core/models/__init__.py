"""Model registry: `create_model(arch, num_classes=10)` builds any architecture by name.

Every architecture is also registered in timm's registry under `weat_<arch>`, so
`timm.create_model("weat_preactresnet18", num_classes=10)` builds the same model. Importing this
module does not import timm: when timm is not loaded yet, the architectures join its registry as
soon as it is (timm's import takes about 3 s on a laptop CPU, most of it torchvision and
torch._dynamo, which building our models does not need).
Models take images in [0, 1]; normalisation lives inside the model.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from .. import DEFAULT_CPU_ARCH, WeatError
from .layers import CIFAR10_MEAN, CIFAR10_STD, Classifier, Normalize
from .preact_resnet import PreActResNet
from .resnet import ResNet
from .wide_resnet import WideResNet
from .weatnet import WeatNet

__all__ = [
    "ArchSpec",
    "arch_name",
    "Classifier",
    "DEFAULT_CPU_ARCH",
    "Normalize",
    "create_model",
    "list_archs",
    "register_arch",
    "TIMM_PREFIX",
]

TIMM_PREFIX = "weat_"


@dataclass(frozen=True)
class ArchSpec:
    name: str
    build: Callable[..., nn.Module]  # (num_classes, **kwargs) -> raw network on normalised input
    description: str
    gpu_only: bool = False  # too slow to be useful on a CPU


_ARCHS: dict[str, ArchSpec] = {}


def register_arch(name: str, description: str, gpu_only: bool = False):
    """Decorator: register `fn(num_classes, **kw) -> nn.Module` here and in timm's registry."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHS[name] = ArchSpec(name, fn, description, gpu_only)
        _join_timm_registry()
        return fn

    return deco


_IN_TIMM: set[str] = set()  # the architectures already in timm's registry


def _join_timm_registry() -> None:
    """Put the architectures in timm's registry now if timm is loaded, else as soon as it is."""
    if "timm.models" in sys.modules:
        _register_pending()
    elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenTimmLoads())


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """An import hook that waits for `timm.models`, lets the usual finders find it, and registers
    our architectures once it has run; then it removes itself."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm.models":
            return None
        sys.meta_path.remove(self)  # one shot: the real spec, found without this hook
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _register_pending()

            spec.loader.exec_module = exec_module
        return spec


def _register_pending() -> None:
    try:
        from timm.models import register_model
    except ImportError:  # timm is optional for the core
        return
    for name in sorted(set(_ARCHS) - _IN_TIMM):
        register_model(_timm_entry(name))
        _IN_TIMM.add(name)


def _timm_entry(name: str) -> Callable[..., nn.Module]:
    def entry(pretrained: bool = False, num_classes: int = 10, **kwargs) -> nn.Module:
        for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm bookkeeping
            kwargs.pop(k, None)
        if pretrained:
            raise ValueError("use weat_core.checkpoints.load() for pretrained WEAT Lens weights")
        return create_model(name, num_classes=num_classes, **kwargs)

    entry.__name__ = entry.__qualname__ = TIMM_PREFIX + name
    entry.__module__ = __name__
    return entry


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def arch_name(arch: str) -> str:
    """The registered name of `arch`, ours or timm's (`weat_`-prefixed); an unknown one is a
    WeatError that lists the choices (checked before slow work such as reading a dataset)."""
    name = arch[len(TIMM_PREFIX):] if arch.startswith(TIMM_PREFIX) and arch[len(TIMM_PREFIX):] in _ARCHS else arch
    if name not in _ARCHS:
        raise WeatError(f"unknown architecture {arch!r}; choose one of: {', '.join(list_archs())}")
    return name


def create_model(
    arch: str,
    num_classes: int = 10,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    **kwargs,
) -> Classifier:
    """Build `arch` (see `list_archs()`) for `num_classes` classes, inputs in [0, 1].

    Extra keyword arguments go to the architecture (e.g. `width=` for weatnet) and are
    recorded in `model.config` so checkpoints can rebuild the model exactly. An unknown
    architecture or option raises a WeatError.
    """
    name = arch_name(arch)
    try:
        net = _ARCHS[name].build(num_classes, **kwargs)
    except TypeError as e:  # an option the architecture does not have (e.g. from --arch-kwargs)
        if kwargs and "keyword argument" in str(e):
            raise WeatError(f"architecture {name!r} does not take the options {kwargs}: {e}") from None
        raise
    return Classifier(net, mean, std, {"arch": name, "num_classes": num_classes, "arch_kwargs": dict(kwargs)})


@register_arch("preactresnet18", "Pre-activation ResNet-18 (11.2 M params)", gpu_only=True)
def _preactresnet18(num_classes: int, **kw) -> nn.Module:
    return PreActResNet((2, 2, 2, 2), num_classes, **kw)


@register_arch("resnet18", "ResNet-18, CIFAR stem (11.2 M params)", gpu_only=True)
def _resnet18(num_classes: int, **kw) -> nn.Module:
    return ResNet((2, 2, 2, 2), num_classes, **kw)


@register_arch("wrn28_10", "WideResNet-28-10 (36.5 M params)", gpu_only=True)
def _wrn28_10(num_classes: int, **kw) -> nn.Module:
    return WideResNet(28, 10, num_classes, **kw)


@register_arch("wrn34_10", "WideResNet-34-10 (46.2 M params)", gpu_only=True)
def _wrn34_10(num_classes: int, **kw) -> nn.Module:
    return WideResNet(34, 10, num_classes, **kw)


@register_arch("weatnet_s", "WeatNet-S: small fast CNN for CPUs (the app's default)")
def _weatnet_s(num_classes: int, width: int = 24, **kw) -> nn.Module:
    return WeatNet(num_classes, width=width, **kw)


@register_arch("weatnet_tiny", "WeatNet-Tiny: a few thousand parameters, for tests")
def _weatnet_tiny(num_classes: int, width: int = 4, **kw) -> nn.Module:
    return WeatNet(num_classes, width=width, **kw)
