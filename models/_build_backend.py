"""edgegen-models' build backend: setuptools's, except that a wheel is refused while a shipped
model's exported package is missing or was exported from other weights than its checkpoint's
(`python -m edgegen_models.build` makes them). Editable installs (a checkout's -e ./models)
need no packages: edgegen exports a model into the user's cache on first use there.

Standard library only: it runs in pip's isolated build environment, without edgegen."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403 - every other hook is setuptools's own

MODELS = Path(__file__).resolve().parent / "edgegen_models"


def stale_packages(models: Path = MODELS) -> list[str]:
    stale = []
    for checkpoint in sorted((models / "checkpoints").iterdir()):
        weights = checkpoint / "weights.safetensors"
        if not weights.is_file():
            continue
        try:
            manifest = json.loads((models / "packages" / checkpoint.name / "edgegen.json").read_text(encoding="utf-8"))
            recorded = manifest["provenance"]["source_checkpoint"]["weights_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None
        if recorded != hashlib.sha256(weights.read_bytes()).hexdigest():
            stale.append(checkpoint.name)
    return stale


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    stale = stale_packages()
    if stale:
        raise SystemExit(f"edgegen-models: expected an exported package beside every checkpoint, found none made from "
                         f"the weights of {', '.join(stale)}; run 'python -m edgegen_models.build' first")
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
