"""What edgegen keeps in the user's cache, and which of it this edgegen no longer reads: `edgegen cache`.

The cache (storage.user_cache_dir) holds shipped models exported once on this machine (shipped.py),
the digit judge the image metrics train once (training/classifier.py), TensorRT's timing caches,
the key that signs this user's engine records (runtimes/engines.py) and the engines of packages this
user cannot write in (package.user_engines_dir). Exports and judges are
kept per edgegen version and per weights, so an upgrade leaves the old ones behind: on a Jetson's
eMMC that is space worth having back. Nothing here needs torch.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import PackageBusyError, missing_export_modules
from .package import MANIFEST_NAME, USER_ENGINES, engines_package
from .runtimes.backends import tensorrt_version
from .shipped import (CACHED_EXPORT, UNVERSIONED_EXPORT, edgegen_version, export_version, models_root, package_damage,
                      recorded_weights, said_version, shipped_names, weights_sha256)
from .storage import KILLED_WRITERS_LEFTOVER, clean_leftover, remove_whole, user_cache_dir, writing_now
from .wording import counted

JUDGE = re.compile(r"^digits-\d+px-\d+steps-seed\d+-edgegen-(?P<edgegen>.+)-torch-(?P<torch>.+)\.safetensors$")


def judge_file_name(size: int, steps: int, seed: int, torch_version: str) -> str:
    """The digit judge's file: edgegen's version is in the name, since another may train it
    otherwise (as shipped models' exports are kept per version), and torch's, since another
    release may train other weights from the same seed. JUDGE reads it back."""
    return f"digits-{size}px-{steps}steps-seed{seed}-edgegen-{edgegen_version()}-torch-{torch_version}.safetensors"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    kind: str            # what it is, in words
    size: int            # bytes on disk
    stale: str | None    # why this edgegen never reads it (what --prune removes), or None


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry of the cache at `root` (default: the user's), its size, and whether it is stale."""
    root = Path(root) if root is not None else user_cache_dir()
    weights = functools.lru_cache(maxsize=None)(lambda name: weights_sha256(name)[:16])   # hashed once per model
    entries = []
    for folder, judge in ((root / "packages", functools.partial(_export_staleness, weights=weights)),
                          (root / "judges", _judge_staleness),
                          (root / "tensorrt", _timing_cache_staleness),
                          (root / USER_ENGINES, _engines_staleness)):
        if folder.exists() and not folder.is_dir():   # listed, not met as the system's NotADirectoryError
            entries.append(CacheEntry(folder, f"a file where edgegen keeps its {folder.name} folder, which it cannot "
                                              "write in until the file is moved away", _size(folder), None))
        for path in _listed(folder):
            leftover = KILLED_WRITERS_LEFTOVER.match(path.name)
            if leftover and (writer := writing_now(folder / leftover["name"])):   # a part of a live write
                entries.append(CacheEntry(path, f"being written now by {writer}", _size(path), None))
            elif leftover:
                entries.append(CacheEntry(path, "left by an interrupted write", _size(path),
                                          f"a part of {leftover['name']} a killed command left"))
            else:
                kind, stale = judge(path)
                entries.append(CacheEntry(path, kind, _size(path), stale))
    if (root / "engine.key").is_file():
        entries.append(CacheEntry(root / "engine.key", "the key that signs this user's engine records", _size(root / "engine.key"), None))
    return entries


def _listed(folder: Path) -> list[Path]:
    """A folder's entries, less the writer locks of commands running now (.NAME.lock)."""
    try:
        return sorted(p for p in folder.iterdir() if not (p.name.startswith(".") and p.name.endswith(".lock")))
    except (FileNotFoundError, NotADirectoryError):   # none yet, or a file there (listed as such)
        return []


def _export_staleness(path: Path, weights) -> tuple[str, str | None]:
    match = CACHED_EXPORT.match(path.name)
    if not match and (old := UNVERSIONED_EXPORT.match(path.name)) and path.is_dir() \
            and (recorded_weights(path) or "").startswith(old["weights"]):
        return f"shipped model {old['name']}, exported", "exported by an earlier edgegen, which left its version out of the name"
    if not match or not path.is_dir():
        return "not written by edgegen", None
    kind = f"shipped model {match['name']}, exported"
    # the runtime alone cannot tell the code an export ran (its revision hashes the exporter's
    # versions too) and exports nothing: an export side sharing this cache reads its version's
    untold = missing_export_modules() and match["version"].partition("+")[0] == edgegen_version()
    if match["version"] != export_version() and not untold:
        return kind, f"exported by edgegen {said_version(match['version'])}; this is {said_version(export_version())}"
    if models_root() is None:
        return kind, None   # without edgegen-models installed its weights cannot be told: kept
    if match["name"] not in shipped_names():
        return kind, "the installed edgegen-models ships no model of that name"
    if weights(match["name"]) != match["weights"]:
        return kind, f"exported from other weights than the installed edgegen-models' {match['name']}"
    if damage := package_damage(path):
        return kind, f"damaged ({damage}); a command given the name exports it again"
    return kind, None


def _engines_staleness(path: Path) -> tuple[str, str | None]:
    package = engines_package(path) if path.is_dir() else None
    if package is None:
        return "not written by edgegen", None
    kind = f"engines of the package {package}, built here since this user could not write in it or its engines there were not this user's"
    try:
        gone = not (Path(package) / MANIFEST_NAME).is_file()
    except OSError:   # a folder on the way this user may not enter now: kept, since it may be there
        return kind, None
    return kind, f"the package {package} is gone" if gone else None


# runtimes.engines.timing_cache_path's names: timing-{TensorRT version}-{GPU}-sm{capability}.cache
TIMING_CACHE = re.compile(r"^timing-(?P<tensorrt>\d+(\.\d+)*)-.+\.cache$")


def _timing_cache_staleness(path: Path) -> tuple[str, str | None]:
    """A timing cache of another TensorRT than this environment's is never read again (each
    release writes its own): stale. Without TensorRT here, none can be judged: kept."""
    match = TIMING_CACHE.match(path.name)
    if not match:
        return "not written by edgegen", None
    installed = tensorrt_version()
    kind = "TensorRT timing cache"
    if installed is None or installed == match["tensorrt"]:
        return kind, None
    return kind, f"written by TensorRT {match['tensorrt']}; this is {installed}"


def _judge_staleness(path: Path) -> tuple[str, str | None]:
    match = JUDGE.match(path.name)
    if not match:
        return "not written by edgegen", None
    kind = "digit judge (image metrics)"
    if match["edgegen"] != edgegen_version():
        return kind, f"trained by edgegen {match['edgegen']}; this is {edgegen_version()}"
    installed = torch_version()
    if installed is None:
        return kind, None   # the runtime alone never reads it; an export side elsewhere may
    if match["torch"] != installed:
        return kind, f"trained with torch {match['torch']}; this is {installed}"
    return kind, None


def torch_version() -> str | None:
    """The installed torch's version as its package metadata gives it, without importing torch (the
    judge's file is named by it, so that both sides read the same string), or None."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _size(path: Path) -> int:
    """Bytes on disk of a file or a whole folder (links not followed)."""
    total = 0
    for file in [path] if not path.is_dir() or path.is_symlink() else \
            (Path(folder) / name for folder, _, names in os.walk(path) for name in names):
        try:
            total += file.lstat().st_size
        except FileNotFoundError:   # removed by a command running now
            pass
    return total


def prune(entries: list[CacheEntry], report=print) -> list[CacheEntry]:
    """Remove the stale entries, each whole or not at all, under the writer lock of what it is or
    was left beside, reporting each as it goes; one another command is writing now, or that the
    system refuses to remove, is kept and said so. Returns those removed."""
    removed = []
    for entry in entries:
        if entry.stale is None:
            continue
        leftover = KILLED_WRITERS_LEFTOVER.match(entry.path.name)
        beside = entry.path.parent / leftover["name"] if leftover else None
        there_before = beside is not None and beside.exists()
        try:
            if beside is not None:
                clean_leftover(entry.path)
            else:
                remove_whole(entry.path, "removing it from the cache")
        except PermissionError as exc:   # its errno text named a lock file beside it, not what to change
            report(f"kept {entry.path}: expected a cache folder this user may write in, found {entry.path.parent} "
                   f"not writable by this user ({exc.strerror})")
            continue
        except (PackageBusyError, OSError) as exc:
            report(f"kept {entry.path}: {exc}")
            continue
        if beside is not None and not there_before and beside.exists():
            report(f"restored {beside} from {entry.path.name}: the only copy of an output a killed command moved aside")
            continue
        if entry.path.exists() or entry.path.is_symlink():   # said as removed only where it is gone
            report(f"kept {entry.path}: it could not be removed")
            continue
        removed.append(entry)
        report(f"removed {entry.path} ({megabytes(entry.size)}): {entry.stale}")
    return removed


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def format_entries(entries: list[CacheEntry], root: Path) -> str:
    """The cache's table for `edgegen cache`: one line per entry, then the totals."""
    names = [os.path.relpath(e.path, root) for e in entries]
    width = max((len(n) for n in names), default=0)
    lines = [f"{name:<{width}}  {megabytes(e.size):>9}  {e.kind}" + (f"; stale: {e.stale}" if e.stale else "")
             for name, e in zip(names, entries)]
    stale = [e for e in entries if e.stale]
    lines.append(f"{root}: {megabytes(sum(e.size for e in entries))} in {counted(len(entries), 'entry', 'entries')}"
                 + (f", {megabytes(sum(e.size for e in stale))} of it in {counted(len(stale), 'stale one')} "
                    "(edgegen cache --prune removes them)" if stale else ", none stale"))
    return "\n".join(lines)
