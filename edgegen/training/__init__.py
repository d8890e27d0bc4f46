"""The PyTorch side shared by every family: the training loop, checkpoints, datasets, EMA."""

from __future__ import annotations

from types import ModuleType


def family_module(family: str) -> ModuleType:
    """The torch side of a registered family (its Config, build, Trainer and defaults)."""
    from ..errors import UnknownFamilyError, not_one_of
    from ..families import _BROKEN, families, get, names, unloaded

    # an unknown name among the families edgegen trains (generic has no training side), not all; a
    # known one without a training side, or a family whose entry point failed, says so itself (get)
    if family not in names() and family not in _BROKEN:
        raise UnknownFamilyError(not_one_of("family", family, [f.name for f in families() if f.model],
                                            "the families edgegen trains; a family of your own registers through "
                                            "the 'edgegen.families' entry point") + unloaded())
    return get(family).model_module()
