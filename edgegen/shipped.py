"""The shipped models, by name (runtime code): `edgegen generate vae-digits`, `edgegen.load("vae-digits")`.

They come in a second distribution, edgegen-models (the repository's models/ folder, the
Python package `edgegen_models`): each pretrained checkpoint and, beside it in the built wheel,
its exported fp32 package, so that a device with the runtime alone can load them. A name
resolves, in order, to
1. the exported package in edgegen-models, when it was exported from the very weights of the
   checkpoint beside it (its manifest records their sha256), by this edgegen's code where this
   machine can export (its manifest records code_revision's digest);
2. a package exported earlier on this machine into the user's cache, keyed by that sha256 and
   by the edgegen that exported it, its version and a digest of its code (an edgegen of other
   code exports anew: its export may write other graphs from the same weights, and the version
   stays one number across a checkout's commits);
3. an export made now into that cache, where the export extra is installed (a checkout's
   editable install holds checkpoints only: `python -m edgegen_models.build` exports them in place).
docs/package-format.md describes the package; docs/cli.md the commands that take a name.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

from .errors import (CheckpointError, ConfigError, EdgegenWarning, OutputExistsError, PackageError, missing_export_modules,
                     not_one_of, warn_caller)
from .package import CHECKPOINT_WEIGHTS, read_json, sha256_file
from .storage import check_files_writable_in, check_folder_writable, user_cache_dir

MODELS_DISTRIBUTION = "edgegen-models"
# not on PyPI: the wheel is built with the runtime's (README, "Installing")
MODELS_INSTALL = ("pip install dist/edgegen_models-*.whl, the wheel built on the development machine beside edgegen's; "
                  "in a checkout, pip install -e ./models")
MODELS_MISSING = f"the {MODELS_DISTRIBUTION} distribution, which holds them, is not installed here ({MODELS_INSTALL})"
# --no-deps: --force-reinstall alone fetches edgegen, its dependency, from the index again, which has none
MODELS_REINSTALL = (f"install {MODELS_DISTRIBUTION} again (pip install --force-reinstall --no-deps dist/edgegen_models-*.whl, the "
                    "wheel built on the development machine; in a checkout, python -m edgegen_models.build)")
SHIPPED_SOURCE = "shipped:"   # how a shipped package's manifest names its source checkpoint


def models_root() -> Path | None:
    """The installed edgegen_models package's folder, or None (found without importing it)."""
    try:
        spec = importlib.util.find_spec("edgegen_models")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def checkpoints_dir() -> Path:
    """Where the shipped checkpoints are; a path that does not exist when edgegen-models is not installed."""
    root = models_root()
    return root / "checkpoints" if root else Path(__file__).resolve().parent / f"{MODELS_DISTRIBUTION}-not-installed"


def shipped_names() -> list[str]:
    folder = checkpoints_dir()
    return sorted(p.name for p in folder.iterdir() if (p / CHECKPOINT_WEIGHTS).is_file()) if folder.is_dir() else []


def shipped_family(name: str) -> str:
    """The family of the shipped `name`, from its checkpoint's config (no export needed)."""
    return str(read_json(checkpoints_dir() / name / "config.json", CheckpointError).get("family", "?"))


def is_bare_name(text: str | os.PathLike) -> bool:
    """A name without a folder in it: what may name a shipped model."""
    return os.sep not in str(text) and "/" not in str(text)


def is_shipped_name(text: str | os.PathLike) -> bool:
    return is_bare_name(text) and str(text) in shipped_names()


def names_shipped_model(given: str | os.PathLike) -> bool:
    """Whether a command's argument is a shipped model's name: one, where no path of that name is here."""
    return not os.path.exists(given) and is_shipped_name(given)


def checkpoint_named(given: str | os.PathLike) -> str | os.PathLike:
    """A checkpoint given to a command: a path as given, or a shipped model's name as its checkpoint."""
    return checkpoints_dir() / str(given) if names_shipped_model(given) else given


def weights_sha256(name: str) -> str:
    return sha256_file(checkpoints_dir() / name / CHECKPOINT_WEIGHTS)


def recorded_weights(package: Path) -> str | None:
    """The sha256 of the weights a package's manifest says it was exported from."""
    return _recorded(package, "source_checkpoint", "weights_sha256")


def recorded_code(package: Path) -> str | None:
    """The code_revision of the edgegen that exported a package (None: an earlier edgegen's)."""
    return _recorded(package, "edgegen_code")


def _recorded(package: Path, *keys: str):
    try:
        value = json.loads((package / "edgegen.json").read_text(encoding="utf-8"))["provenance"]
        for key in keys:
            value = value[key]
        return value
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cache_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where this machine keeps the package it exported from the shipped `name`: keyed by the
    weights' sha256 and this edgegen (export_version), so new weights, or an edgegen whose export
    may write other graphs, export anew."""
    return packages_cache(cache) / cached_export_name(name, weights_sha256(name), export_version())


def packages_cache(cache: str | os.PathLike | None = None) -> Path:
    """The folder that holds this machine's exports of shipped models."""
    return Path(cache or user_cache_dir()) / "packages"


def unwritable_cache(name: str, cache: str | os.PathLike | None = None) -> str | None:
    """Where the cache that would hold `name`'s export cannot be made or written by this user (a
    read-only home, a shared install, a container's): what it is and what to do instead; else None."""
    try:   # an existing packages/ itself (a root-owned one a `sudo edgegen` left), else the folder on the way to it
        folder = packages_cache(cache)   # (a file where the cache's folder goes: refused here too)
        check_files_writable_in(folder, "the cache") if folder.is_dir() else check_folder_writable(folder, "the cache")
    except (ConfigError, OutputExistsError) as exc:
        return (f"{exc}: export it elsewhere with 'edgegen export {name} --out DIR' and give DIR, or set XDG_CACHE_HOME "
                "to a folder this user can write")
    return None


def edgegen_version() -> str:
    return sys.modules[__package__].__version__   # loaded before any of edgegen's modules


# what decides the graphs an export writes: edgegen's export and families' code (models, export
# specs, graph rewrites, the configs their pipelines define), the manifest's writer, and the
# exporter's own packages; not a family's command-line options or demo (a comment in gpt's
# generate options made every shipped model's export stale in a checkout: helper 151)
EXPORT_CODE = ("export", "families", "package.py")
NOT_EXPORT_CODE = ("cli.py", "demo.py")   # in a family's folder
EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript")


@functools.lru_cache(maxsize=1)
def code_revision() -> str:
    """A digest of the code an export runs: EXPORT_CODE's Python files (by their path in the
    package; the same for a wheel and the checkout it was built from) and EXPORTER_PACKAGES'
    versions where installed. An export made by other code may hold a graph since fixed (an
    epsilon torch.onnx dropped), and edgegen's version stayed one number across hundreds of
    commits. A change elsewhere (the CLI, a family's command-line options, the runtime but for
    families' pipelines, which define their configs) exports nothing anew."""
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in export_code_files(root):
        try:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        except FileNotFoundError:
            continue
    for package in EXPORTER_PACKAGES:
        try:
            digest.update(f"{package}=={version(package)}\0".encode())
        except PackageNotFoundError:   # a device with the runtime alone: it compares no revision
            continue
    return digest.hexdigest()[:12]


def export_code_files(root: Path) -> list[Path]:
    """EXPORT_CODE's Python files under the package folder `root`, sorted, NOT_EXPORT_CODE left
    out; an editor's lock file (.#cli.py, a dangling link) is no code."""
    files = [f for entry in EXPORT_CODE for f in ((root / entry).rglob("*.py") if (root / entry).is_dir() else [root / entry])]
    return sorted(f for f in files if not f.name.startswith(".") and f.is_file()
                  and not (f.name in NOT_EXPORT_CODE and f.parent.parent == root / "families"))


def export_version() -> str:
    """What a cached export is keyed by: this edgegen's version and its code (code_revision)."""
    return f"{edgegen_version()}+{code_revision()}"


def said_version(version: str) -> str:
    """An export's version as a user reads it: "0.1.0 (code 1a2b3c4d5e6f)", or "0.1.0" where an
    earlier edgegen recorded no code revision."""
    number, _, code = version.rpartition("+") if "+" in version else (version, "", "")
    return f"{number} (code {code})" if code else number


def cached_export_name(name: str, weights_sha256: str, version: str) -> str:
    """The folder name of a shipped model's export in the cache; CACHED_EXPORT reads it back."""
    return f"{name}-{weights_sha256[:16]}-edgegen-{version}"


CACHED_EXPORT = re.compile(r"^(?P<name>.+)-(?P<weights>[0-9a-f]{16})-edgegen-(?P<version>[^/]+)$")
# the name edgegen gave a cached export before it named the version that made it (early December 2026)
UNVERSIONED_EXPORT = re.compile(r"^(?P<name>.+)-(?P<weights>[0-9a-f]{16})$")


def find_shipped(name: str, cache: str | os.PathLike | None = None) -> Path | None:
    """The exported package of the shipped `name` made from its checkpoint's very weights: the
    one edgegen-models carries, else one exported earlier into the cache; None if neither."""
    names = shipped_names()   # a directory listing
    if not names:
        raise PackageError(f"shipped model {name!r}: expected one of the shipped models, found none: {MODELS_MISSING}")
    if name not in names:
        raise PackageError(not_one_of("shipped model", name, names, f"the {MODELS_DISTRIBUTION} distribution's"))
    weights = weights_sha256(name)
    carried = carried_package(name, weights)
    # an export by other code is replaced where this machine can export (a checkout's packages
    # built before a fix); a device with the runtime alone reads it as it is
    if carried is not None and (missing_export_modules() or recorded_code(carried) == code_revision()):
        return carried
    # only now the cache: where edgegen-models carries the package, a device needs none
    exported = cache_path(name, cache)
    return exported if recorded_weights(exported) == weights else None


def carried_package(name: str, weights: str | None = None) -> Path | None:
    """edgegen-models' own package of the shipped `name` where it was exported from the very weights
    beside it (`weights`: their sha256, where the caller hashed them already), by whatever code;
    None if there is none."""
    carried = models_root() / "packages" / name
    return carried if recorded_weights(carried) == (weights or weights_sha256(name)) else None


def other_code(package: Path) -> str:
    """How a package exported by other code than this edgegen's is said: "code 1a2b3c4d5e6f; this is
    ...", or "no code recorded" for an earlier edgegen's."""
    return f"exported by other code ({recorded_code(package) or 'none recorded'}; this edgegen's is {code_revision()})"


def shared_package_of(package: str | os.PathLike) -> str | None:
    """The shipped model whose shared package `package` is (edgegen-models' own, or its export in
    the cache), which every use of the name reads; None for any other folder."""
    package = Path(package).resolve()
    if in_models(package):
        return package.name
    match = CACHED_EXPORT.match(package.name)
    if match and package.parent == (user_cache_dir(checked=False) / "packages").resolve():
        return match["name"]
    return None


def in_models(package: Path) -> bool:
    """Whether `package` is one edgegen-models carries (pip installs it), not the cache's."""
    return models_root() is not None and Path(package).resolve().parent == (models_root() / "packages").resolve()


def package_damage(package: Path) -> str | None:
    """Why a shipped model's package (the cache's export, or edgegen-models' own) cannot be read: a
    file changed or gone since it was written, its manifest unreadable; None where it is intact."""
    from .package import CHANGED_AFTER_EXPORT, Package

    try:
        damaged = [exc for parts in Package(package).damaged_variants.values() for exc in parts.values()]
    except PackageError as exc:
        damaged = [exc]
    if not damaged:   # a variant's damage too: the wheel build refuses it, so the models' build must mend it
        return None
    # its advice is for a user's package: copy it again, or export it again
    return str(damaged[0]).removeprefix(f"package {str(package)!r}: ").replace(f" ({CHANGED_AFTER_EXPORT})", "")


def cache_damage(name: str, cache: str | os.PathLike | None = None, found: Path | None = None) -> str | None:
    """Why the folder where the shipped `name` is exported in the cache cannot be read (a graph
    changed, the manifest itself unreadable, when find_shipped took it for none), or None: intact,
    not there, or not the one used (`found`, find_shipped's answer, is edgegen-models' own)."""
    if found is not None and in_models(found):
        return None
    package = cache_path(name, cache)
    return package_damage(package) if package.exists() else None


def shadows_shipped(given: str | os.PathLike) -> bool:
    """Whether `given` is a path here that bears a shipped model's name: the path wins, as
    everywhere, and a warning says so (it was taken without a word)."""
    if not (os.path.exists(given) and is_shipped_name(given)):   # os.path: an unsearchable folder here is False, not EACCES
        return False
    warn_caller(f"{str(given)!r}: the folder of that name here, not the shipped model (give the text './{given}' or the "
                "folder's absolute path for the folder without this warning, or the name from another folder for the "
                "shipped model)", EdgegenWarning)
    return True


def resolve(path_or_name: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """A package path as given, or the exported package of a shipped model's name."""
    if not isinstance(path_or_name, (str, os.PathLike)) or not os.fspath(path_or_name):
        return path_or_name   # not a path at all, or an empty one: Package says so
    if shadows_shipped(path_or_name) or os.path.exists(path_or_name) or not is_shipped_name(path_or_name):
        return Path(path_or_name)
    found = find_shipped(str(path_or_name), cache)
    if damage := cache_damage(str(path_or_name), cache, found):
        raise PackageError(f"shipped model {str(path_or_name)!r}: expected its export in the cache intact, found "
                           f"{cache_path(str(path_or_name), cache)} damaged ({damage}): give the name to an edgegen "
                           "command where the export extra is installed, which exports it again, or remove that "
                           "folder (edgegen cache --prune)")
    if found is not None and in_models(found) and (damage := package_damage(found)):
        raise PackageError(f"shipped model {str(path_or_name)!r}: expected the package edgegen-models installed intact, "
                           f"found {found} damaged ({damage}): {MODELS_REINSTALL}")
    if found is None and (carried := carried_package(str(path_or_name))) is not None:
        # this machine could export it anew (edgegen generate NAME does); loading never exports
        warn_caller(f"shipped model {str(path_or_name)!r}: edgegen-models' package in {carried} was "
                    f"{other_code(carried)}: loaded as it is; 'edgegen generate {path_or_name}' or 'python -m "
                    f"edgegen_models.build' exports it with this code", EdgegenWarning)
        return carried
    if found is None:
        exported = cache_path(str(path_or_name), cache)
        others = exports_by_other_code(exported)
        by = said_version(CACHED_EXPORT.match(others[-1].name)["version"]) if others else None
        newest = f"the newest of {len(others)} exports of other code, " if len(others) > 1 else "only "
        found_instead = (f"{newest}{others[-1]}, exported by edgegen {by}; this is {said_version(export_version())}"
                         if others else "none made from its weights (a checkout's editable install holds the "
                         "checkpoints only)")
        how = (unwritable_cache(str(path_or_name), cache) or
               f"export them with 'python -m edgegen_models.build', or give the name to an edgegen command once, which "
               f"exports it into {exported.parent} (both need the export extra, where this code's exports are made)")
        raise PackageError(f"shipped model {str(path_or_name)!r}: expected its exported package, found {found_instead}: "
                           f"{how}")
    return found


def exports_by_other_code(exported: Path) -> list[Path]:
    """The cache's exports of the same model and weights as `exported` (this code's, absent) by other
    code or versions, newest last: loading reads none of them, and its refusal names one."""
    match = CACHED_EXPORT.match(exported.name)
    prefix = f"{match['name']}-{match['weights']}-edgegen-"
    try:
        candidates = [(p.stat().st_mtime, p) for p in exported.parent.iterdir()
                      if p.name.startswith(prefix) and p.name != exported.name and p.is_dir()]
    except OSError:   # no cache yet, one this user cannot read, or an entry a prune removed meanwhile
        return []
    return [p for _, p in sorted(candidates)]
