"""Exporting a shipped model by name into the user's cache, once (the torch side of shipped.py)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputExistsError
from ..shipped import cache_path, checkpoints_dir, find_shipped, recorded_weights, weights_sha256
from ..storage import check_folder_writable
from . import export_checkpoint


def export_shipped(name: str, cache: str | os.PathLike | None = None, report=print) -> Path:
    """The shipped `name`'s package: found (shipped.find_shipped), else exported now into the
    cache. Two commands that race export it once: the second waits for the writer lock, then
    finds the package there."""
    found = find_shipped(name, cache)
    if found is not None:
        return found
    package = cache_path(name, cache)
    check_folder_writable(package.parent, "the cache")   # said as the cache's, not as the system's FileNotFoundError
    report(f"exporting the shipped {name} once into {package}")
    package.parent.mkdir(parents=True, exist_ok=True)
    try:
        return export_checkpoint(checkpoints_dir() / name, package)
    except OutputExistsError:
        if recorded_weights(package) == weights_sha256(name):
            return package
        raise
