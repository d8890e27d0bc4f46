"""Checkpoints: weights in safetensors, the architecture in config.json. Never pickled code."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import types
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import CheckpointError, ConfigError, DataError, EdgegenWarning, format_mismatch
from ..package import CHECKPOINT_WEIGHTS, MANIFEST_NAME, hugging_face_folder, read_json, sha256_file
from ..shipped import MODELS_DISTRIBUTION, MODELS_INSTALL, SHIPPED_SOURCE, checkpoints_dir
from ..storage import atomic_write_text, creation_mode, staged_directory
from . import family_module

CHECKPOINT_FORMAT = "edgegen.checkpoint/1"
CONFIG = "config.json"


@dataclass
class Checkpoint:
    path: Path
    family: str
    config: Any  # the family's Config dataclass
    model: torch.nn.Module
    data: dict
    training: dict
    weights_sha256: str
    files: dict = dataclasses.field(default_factory=dict)  # name -> path: files the package carries (a tokenizer)

    def trained_data(self) -> str:
        """The data this checkpoint was trained on, as training recorded it (a built-in set's name, or
        a file or folder's absolute path), for the gates that draw from it; a path refused where it
        is gone."""
        from ..families import get as get_family

        names = get_family(self.family).builtin_data
        source, gone = data_trained_on(self.data, names)
        if gone:
            relative = "" if Path(source).is_absolute() else (", a path relative to where an earlier edgegen trained "
                                                              "it, which recorded no folder")
            raise DataError(f"data {source!r}: expected the data checkpoint {str(self.path)!r} was trained on there, "
                            f"found nothing at that path (moved or deleted?{relative}): give export its new place with "
                            "--data (optimize then draws from it too), or optimize feeds with --inputs")
        if not Path(source).is_absolute() and source not in (*names, *IMPORTED_SOURCES):
            found = str(Path(source).resolve())   # an earlier edgegen's path, as given where it trained: read from here
            warnings.warn(f"data {source!r}: a path an earlier edgegen recorded relative to where it trained "
                          f"{str(self.path)!r}, read from this folder as {found!r} (give export --data to name the "
                          "data, or optimize --inputs)",
                          EdgegenWarning, stacklevel=2)
            return found
        return source


IMPORTED_SOURCES = ("transformers", "diffusers")   # what an importer records as its checkpoint's data


def data_trained_on(data: dict, names: tuple[str, ...] | None = None) -> tuple[str, bool]:
    """(the data a checkpoint's training recorded in its config's "data": a built-in set's name or a
    file or folder's absolute path, whether that path is gone). With `names`, the family's built-in
    sets: a relative path that is none of them and not here is gone too (an edgegen before
    December 2026 recorded the path as given, relative to where it trained)."""
    source = data.get("source", "digits")
    # training records a path whole; a name (digits, an importer's "transformers") is the family's to read
    if Path(source).is_absolute() or names is None:
        return source, Path(source).is_absolute() and not Path(source).exists()
    return source, source not in (*names, *IMPORTED_SOURCES) and not Path(source).exists()


def make_config(family: str, values: dict) -> Any:
    """The family's Config from plain values; unknown keys and bad values are ConfigErrors."""
    config_class = family_module(family).Config
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{family} config: expected keys among {sorted(known)}, found unknown {unknown}")
    try:
        hints = typing.get_type_hints(config_class)
    except Exception:  # noqa: BLE001 - a family's annotation that cannot be resolved here: checked by its defaults
        hints = {}
    values = {k: _tuples(v, hints.get(k)) for k, v in values.items()}
    unset = [f.name for f in dataclasses.fields(config_class) if f.name not in values
             and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unset:   # a family's Config (a plugin's) whose field has no default: Python's TypeError, an internal error
        raise ConfigError(f"family {family!r}: expected its Config ({config_class.__module__}.{config_class.__qualname__}) "
                          f"to give every field a default (edgegen fills only what the data and the options set), "
                          f"found {', '.join(unset)} without one")
    config = config_class(**values)
    for f in dataclasses.fields(config_class):
        kinds = _annotated_types(hints.get(f.name))
        if kinds is None:   # no usable annotation (Any, Literal, a string): the default's type
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kinds = (type(default),)
        value = getattr(config, f.name)
        # ints are fine where floats are expected; bools are not numbers here
        ok = isinstance(value, kinds) or float in kinds and isinstance(value, int)
        if not ok or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise ConfigError(f"{family} config: expected {f.name} to be {expected}, found {type(value).__name__} {value!r}")
        try:   # what config.json holds, known now rather than when the trained checkpoint is written
            json.dumps(value)
        except (TypeError, ValueError):
            raise ConfigError(f"family {family!r}: expected its Config's {f.name} to hold what config.json can (numbers, "
                              f"strings, booleans, lists, tuples, dicts), found {type(value).__name__} {value!r:.60}") from None
    validate = getattr(config, "validate", None)
    problems = validate() if callable(validate) else []
    if not isinstance(problems, (list, tuple)) or not all(isinstance(p, str) for p in problems):
        raise ConfigError(f"family {family!r}: expected its Config.validate() to return a list of problems, each a "
                          f"sentence (empty when the values are possible), found {type(problems).__name__} {problems!r:.80}")
    if problems:
        raise ConfigError(f"{family} config: " + "; ".join(problems))
    return config


def _tuples(value, hint):
    """`value` read back from config.json's lists as the tuples its annotation names, at every depth
    (tuple[tuple[int, int], ...] from [[3, 4], [5, 6]]); anything else as it is."""
    if not isinstance(value, list):
        return value
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for member in members:
        origin, args = typing.get_origin(member) or member, typing.get_args(member)
        if origin is tuple:   # tuple[X, ...] or tuple[X, Y]
            inner = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args) or [None] * len(value)
            return tuple(_tuples(v, h) for v, h in zip(value, inner)) if len(inner) == len(value) else tuple(value)
        if origin is list:
            return [_tuples(v, args[0] if args else None) for v in value]
    return value


def _annotated_types(hint) -> tuple[type, ...] | None:
    """The classes an annotation allows (`int | None`: int and NoneType; `list[float]`: list), or
    None where it names no classes isinstance can test."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kinds = tuple(typing.get_origin(m) or m for m in members)
    return kinds if kinds and all(isinstance(k, type) for k in kinds) else None


CHECKPOINT_KIND = "an edgegen checkpoint"   # what --force may replace: a folder holding CHECKPOINT_WEIGHTS


def checkpoint_files(folder: Path) -> set[str]:
    """What a checkpoint folder holds: anything else in it is someone else's (storage.refuse_replacing_other)."""
    return {CHECKPOINT_WEIGHTS, CONFIG}


def save_checkpoint(out: str | Path, family: str, config: Any, model: torch.nn.Module, data: dict, training: dict,
                    overwrite: bool = False, reads=(), lock_held: bool = False) -> Path:
    """Write a checkpoint at `out`, replacing one there only with `overwrite`, and never a folder
    that is or holds one of `reads` (what made it). lock_held: the caller holds `out`'s writer lock."""
    with staged_directory(out, overwrite=overwrite, holds=CHECKPOINT_WEIGHTS, kind=CHECKPOINT_KIND, reads=reads,
                          owns=checkpoint_files, lock_held=lock_held) as stage:
        _save_weights(_unshared(model.state_dict()), stage / CHECKPOINT_WEIGHTS, out)
        os.chmod(stage / CHECKPOINT_WEIGHTS, creation_mode(directory=False))   # safetensors writes it private (0600)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "family": family,
            "config": saved_config(config),
            "data": data,
            "training": training,
            "versions": {"edgegen": __version__, "torch": torch.__version__, "python": platform.python_version()},
        }
        atomic_write_text(stage / CONFIG, json.dumps(meta, indent=2) + "\n")
    return Path(out)


def _save_weights(state: dict, path: Path, out) -> None:
    """safetensors' save_file, whose failure to write (a full disk) is its own SafetensorError with the
    system's error in its text: said as that OSError, for `out`, the user's output."""
    try:
        save_file(state, str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError derives from Exception alone
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(out)) from None


def saved_config(config) -> dict:
    """The config as a checkpoint holds it: every field, but those a family added later
    (`LATER_FIELDS`) where they hold their default, which an earlier edgegen's config refuses as
    unknown keys: a checkpoint that does not use them reads there too (upgrading.md)."""
    values = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.name in getattr(config, "LATER_FIELDS", ()) and values[f.name] == default:
            del values[f.name]
    return values


def _unshared(state: dict) -> dict:
    """The state dict with no two tensors sharing memory, which safetensors refuses (tied weights:
    a codebook an encoder and a decoder share, an embedding tied to the output head). Each name
    gets its own copy; load_state_dict loads both into the one tied parameter again."""
    storages, unshared = set(), {}
    for name, tensor in state.items():
        tensor = tensor.contiguous()
        storage = tensor.untyped_storage().data_ptr()
        unshared[name] = tensor.clone() if storage in storages else tensor
        storages.add(storage)
    return unshared


def recorded_source(package) -> str | None:
    """The path of the checkpoint or folder the package's manifest says it came from, or None (the
    manifest's reader checked that it is a string)."""
    return (package.manifest.provenance.get("source_checkpoint") or {}).get("path")


def load_source_checkpoint(package, given: str | Path | None = None, flag: str = "--checkpoint") -> Checkpoint:
    """The checkpoint a package was exported from (`given`, else the path its manifest records),
    refused unless its weights are the ones the package was exported from. `flag`: the option that
    gives it, for the refusal's hint."""
    source = given or recorded_source(package)
    if not given and source and source.startswith(SHIPPED_SOURCE):   # a shipped package names its checkpoint
        source = checkpoints_dir() / source[len(SHIPPED_SOURCE):]
    if not source or not Path(source).is_dir():
        found = f"no checkpoint folder at {str(source)!r}" if source else "no path to it recorded"
        hint = "" if given else f"; pass it ({flag} CHECKPOINT)"   # given: the path given is what is missing
        raise CheckpointError(f"package {str(package.path)!r}: expected the checkpoint it was exported from, found "
                              f"{found}{hint}")
    return require_recorded_weights(package, load_checkpoint(source), f"checkpoint {str(source)!r}", "exported")


def require_recorded_weights(package, ckpt: Checkpoint, what: str, how: str) -> Checkpoint:
    """`ckpt`, refused unless its weights are the ones `package` records it was `how` (exported,
    imported) from."""
    if ckpt.family != package.family:   # the likelier slip, said as such rather than as other weights
        raise CheckpointError(f"{what}: expected a {package.family} model, the family of the package "
                              f"{str(package.path)!r}, found a {ckpt.family} model")
    expected = package.manifest.provenance.get("source_checkpoint", {}).get("weights_sha256")
    if expected and expected != ckpt.weights_sha256:
        raise CheckpointError(f"{what}: expected the weights package {str(package.path)!r} was {how} from "
                              f"(sha256 {expected[:12]}...), found {ckpt.weights_sha256[:12]}...")
    return ckpt


def state_dict_mismatch(model: torch.nn.Module, state: dict, shown: int = 3) -> str | None:
    """What keeps `state` from loading into `model` strictly, on one line (the tensors missing, those
    the model has no place for, those of another shape, a few of each named), or None where it
    loads. Said in the model's terms rather than in torch's multi-clause refusal."""
    own = model.state_dict()
    groups = {
        "missing": [name for name in own if name not in state],
        "not in the model": [name for name in state if name not in own],
        "of another shape": [f"{name} {list(state[name].shape)} against the model's {list(own[name].shape)}"
                             for name in own if name in state and tuple(state[name].shape) != tuple(own[name].shape)],
    }
    said = [f"{len(names)} {what} ({', '.join(names[:shown])}{', ...' if len(names) > shown else ''})"
            for what, names in groups.items() if names]
    return "; ".join(said) or None


def save_pretrained_folder(folder: str | Path, what: str) -> Path:
    """`folder` as a Path where it is a directory (a transformers or diffusers save_pretrained
    folder, `what`), else CheckpointError saying what is there instead."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{what} {str(folder)!r}: expected a save_pretrained directory, found "
                              f"{'a file' if folder.exists() else 'nothing at that path'}")
    return folder


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    meta_path, weights_path = path / CONFIG, path / CHECKPOINT_WEIGHTS
    if not path.is_dir():
        missing_models = not checkpoints_dir().is_dir() and path.parent == checkpoints_dir()
        raise CheckpointError(f"checkpoint {str(path)!r}: expected a directory with {CONFIG} and {CHECKPOINT_WEIGHTS}, "
                              f"found {'a file' if path.exists() else 'nothing at that path'}"
                              + (f" (the shipped checkpoints come with the {MODELS_DISTRIBUTION} distribution: "
                                 f"{MODELS_INSTALL})"
                                 if missing_models else ""))
    if not meta_path.is_file() and (path / MANIFEST_NAME).is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: expected a checkpoint ('edgegen train' writes one), found an "
                              f"edgegen package ({MANIFEST_NAME}): give the checkpoint it was exported from (edgegen "
                              "info names it)")
    for needed in (meta_path, weights_path):
        if not needed.is_file():
            imported = hugging_face_folder(path)   # given where an edgegen checkpoint is expected: the way in
            raise CheckpointError(f"checkpoint {str(path)!r}: expected {needed.name} in it, found none" + (
                f" ({imported[1]}: import it with edgegen export {imported[0]} DIR)" if imported else ""))
    meta = read_json(meta_path, CheckpointError)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(format_mismatch(str(meta_path), CHECKPOINT_FORMAT, found))
    family = meta.get("family")
    stored = meta.get("config", {})
    # keys a family added after this checkpoint was written take the values its model had then
    config = make_config(family, {**getattr(family_module(family), "LEGACY_DEFAULTS", {}), **stored})
    model = family_module(family).build(config)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights_path}: expected a safetensors file, found: {exc}") from None
    if wrong := state_dict_mismatch(model, state):
        raise CheckpointError(f"{weights_path}: expected weights of the {family} model described by {CONFIG}, found "
                              f"tensors {wrong}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return Checkpoint(path, family, config, model, meta.get("data", {}), meta.get("training", {}),
                      sha256_file(weights_path))
