"""edgegen-models' build backend: setuptools's, except that a wheel is refused while a shipped
model's exported package is missing or was exported from other weights than its checkpoint's
(`python -m edgegen_models.build` makes them). Editable installs (a checkout's -e ./models)
need no packages: edgegen exports a model into the user's cache on first use there.

Standard library only: it runs in pip's isolated build environment, without edgegen."""

from __future__ import annotations

import hashlib
import json
import zipfile
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
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    wheel = Path(wheel_directory) / name
    left_out = files_left_out(wheel)
    if left_out:   # a package-data pattern missed a file a package needs (held_out.npz once was)
        wheel.unlink()
        raise SystemExit(f"edgegen-models: expected every file of the exported packages in the wheel, found "
                         f"{', '.join(left_out)} left out; add its pattern to pyproject.toml's package-data")
    return name


def files_left_out(wheel: Path, models: Path = MODELS) -> list[str]:
    """The exported packages' files (edgegen_models/packages/NAME/FILE) that the wheel lacks."""
    with zipfile.ZipFile(wheel) as built:
        inside = set(built.namelist())
    wanted = [f"{models.name}/packages/{path.parent.name}/{path.name}"
              for path in sorted((models / "packages").glob("*/*")) if path.is_file() and not path.name.startswith(".")]
    return [name for name in wanted if name not in inside]
