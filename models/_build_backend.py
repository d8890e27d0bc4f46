"""edgegen-models' build backend: setuptools's, except that a wheel is refused while a shipped
model's exported package is missing or was exported from other weights than its checkpoint's
(`python -m edgegen_models.build` makes them). Editable installs (a checkout's -e ./models)
need no packages: edgegen exports a model into the user's cache on first use there.

Standard library only: it runs in pip's isolated build environment, without edgegen."""

from __future__ import annotations

import hashlib
import json
import shutil
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
    stale = stale_packages(MODELS)
    if stale:
        raise SystemExit(f"edgegen-models: expected an exported package beside every checkpoint, found none made from "
                         f"the weights of {', '.join(stale)}; run 'python -m edgegen_models.build' first")
    damaged = damaged_files(MODELS)
    if damaged:   # edgegen refuses them on the device, where installing the wheel again cannot mend them
        raise SystemExit(f"edgegen-models: expected every exported package's files as their manifest records them, "
                         f"found {', '.join(damaged)} changed or gone since the export; run 'python -m "
                         f"edgegen_models.build', which exports those packages again")
    # setuptools copies the packages into build/lib and keeps what a previous build copied there:
    # a file since removed from packages/ (a replaced variant, a damaged graph) would ship again.
    # Only that folder: the rest of build/ may be the user's (pip wheel -w build)
    shutil.rmtree(MODELS.parent / "build" / "lib", ignore_errors=True)
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    wheel = Path(wheel_directory) / name
    left_out = files_left_out(wheel, MODELS)
    if left_out:   # a package-data pattern missed a file a package needs (held_out.npz once was)
        wheel.unlink()
        raise SystemExit(f"edgegen-models: expected every file of the exported packages in the wheel, found "
                         f"{', '.join(left_out)} left out; add its pattern to pyproject.toml's package-data")
    return name


def damaged_files(models: Path = MODELS) -> list[str]:
    """The exported packages' files (NAME/FILE) whose sha256 is not the one their manifest records."""
    damaged = []
    for manifest_path in sorted((models / "packages").glob("*/edgegen.json")):
        package = manifest_path.parent
        try:
            recorded = dict(_recorded_files(json.loads(manifest_path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            damaged.append(f"{package.name}/{manifest_path.name}")
            continue
        for file, sha256 in recorded.items():
            path = package / file
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
                damaged.append(f"{package.name}/{file}")
    return damaged


def _recorded_files(node):
    """(file, sha256) of each file a manifest records with its hash, wherever it stands: graphs,
    variants and config records ({"file": ..., "sha256": ...}), external data ({location: sha256})."""
    if isinstance(node, list):
        for item in node:
            yield from _recorded_files(item)
    if not isinstance(node, dict):
        return
    if isinstance(node.get("file"), str) and isinstance(node.get("sha256"), str):
        yield node["file"], node["sha256"]
    for key, value in node.items():
        if key == "external_data" and isinstance(value, dict):
            yield from ((location, sha256) for location, sha256 in value.items() if isinstance(sha256, str))
        else:
            yield from _recorded_files(value)


def files_left_out(wheel: Path, models: Path = MODELS) -> list[str]:
    """The exported packages' files (edgegen_models/packages/NAME/FILE) that the wheel lacks."""
    with zipfile.ZipFile(wheel) as built:
        inside = set(built.namelist())
    wanted = [f"{models.name}/packages/{path.parent.name}/{path.name}"
              for path in sorted((models / "packages").glob("*/*")) if path.is_file() and not path.name.startswith(".")]
    return [name for name in wanted if name not in inside]
