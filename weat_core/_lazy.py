"""Lazy package exports (PEP 562): a package's public names are imported from their submodules on
first use, so importing the package, or a light submodule of it, does not import torch.

    __getattr__, __dir__ = lazy_exports(__name__, {"TrainConfig": "config", "train": "loop"})
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module-level `__getattr__` and `__dir__` for `package`, where `exports` maps each public
    name to the submodule that defines it. An exported name must not also be a submodule's name:
    importing that submodule would set the package attribute to the module."""

    def __getattr__(name: str) -> object:
        sub = exports.get(name)
        if sub is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{sub}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
