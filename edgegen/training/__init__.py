"""The PyTorch side shared by every family: the training loop, checkpoints, datasets, EMA."""

from __future__ import annotations

from types import ModuleType


def family_module(family: str) -> ModuleType:
    """The torch side of a registered family (its Config, build, Trainer and defaults)."""
    from ..families import get

    return get(family).model_module()
