"""Exporting a shipped model by name into the user's cache, once (the torch side of shipped.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, OutputExistsError
from ..shipped import (cache_damage, cache_path, checkpoints_dir, find_shipped, recorded_weights, unwritable_cache,
                       weights_sha256)
from ..storage import remove_whole
from . import export_checkpoint


def export_shipped(name: str, cache: str | os.PathLike | None = None, report=print) -> Path:
    """The shipped `name`'s package: found (shipped.find_shipped), else exported now into the
    cache, as is one whose export in the cache was damaged since (a file changed or gone: the
    cache is edgegen's own, made from the checkpoint alone). Two commands that race export it
    once: the second waits for the writer lock, then finds the package there."""
    found = find_shipped(name, cache)
    damage = cache_damage(name, cache, found)
    if found is not None and damage is None:
        return found
    package = cache_path(name, cache)
    if blocked := unwritable_cache(name, cache):   # said as the cache's, not as the system's FileNotFoundError
        raise ConfigError(blocked)
    if damage:
        report(f"the export of the shipped {name} in {package} is damaged ({damage}): exporting it again")
        # after a command exporting it now, and only if it is damaged yet: not another's fresh export
        remove_whole(package, f"remove the damaged export of {name}", wait=True,
                     still=lambda: cache_damage(name, cache) is not None)
    else:
        report(f"exporting the shipped {name} once into {package}")
    package.parent.mkdir(parents=True, exist_ok=True)
    try:
        return export_checkpoint(checkpoints_dir() / name, package)
    except OutputExistsError:
        if recorded_weights(package) == weights_sha256(name):
            return package
        raise
