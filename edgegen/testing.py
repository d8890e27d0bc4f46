"""The family contract, for a family author's own tests (docs/adding-a-family.md, "Tests").

    from edgegen.testing import check_family

    def test_my_family_keeps_edgegens_contract(tmp_path):
        check_family("pca", tmp_path)

`check_family` runs what edgegen's own suite runs for every built-in family: the family's `smoke`
training, the export and its gate against PyTorch, the package read back as `load` reads it, and
`edgegen generate` on it in a fresh process where torch and onnx cannot be imported, which finds
the family as any user's process does: through its package's entry point. A broken promise is a
ConfigError naming the family, what edgegen expected and what it found; the contract's own
refusals are EdgegenErrors, while a failure inside the family's code (its training, its export)
comes as it was raised.

It trains and exports, so it needs the train and export extras (torch, onnx).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from .errors import ConfigError, OutputExistsError
from .families import ENTRY_POINT_GROUP, Family
from .families import get as get_family

# `edgegen generate` where the training side cannot be imported: the runtime installs without it
GENERATE_WITHOUT_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "onnx", "onnxscript", "safetensors"):
                raise ImportError(f"{name} imported by the runtime side (blocked by edgegen.testing: "
                                  "the runtime installs without the training side)")

    sys.meta_path.insert(0, Block())
    from edgegen.cli import main
    code = main(["generate", *sys.argv[1:]])
    blocked = [m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")]
    if blocked:
        sys.exit(f"generate imported {', '.join(sorted(blocked))}: the runtime installs without them")
    sys.exit(code)
""")
GENERATE_TIMEOUT_S = 300


def check_family(family: str | Family, workdir: str | os.PathLike | None = None) -> Path | None:
    """Run the family contract for `family` (a registered name, or its Family) in `workdir` (a
    folder without ckpt/, pkg/ and the smoke's output file in it: nothing there is replaced; a
    temporary one, removed afterwards, if None). Returns the file `edgegen generate` wrote into
    `workdir` (None without one). Raises an EdgegenError naming the family: a ConfigError for what
    the family broke, UnknownFamilyError for a name this process has not registered,
    OutputExistsError for a workdir holding what the contract writes, or the error of the step that
    failed (training's, the export gate's)."""
    name = family.name if isinstance(family, Family) else family
    declared = get_family(name)   # an unknown name is refused by the registry, naming those it has
    if declared.model is None or declared.export is None:
        raise ConfigError(f"family {name!r}: expected a family with a training side (model= and export=) for the "
                          f"contract's train and export, found model={declared.model!r}, export={declared.export!r}")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="edgegen-contract-") as scratch:
            _run_contract(declared, Path(scratch))
        return None
    workdir = Path(workdir).absolute()   # the generate process is given paths in it
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:   # a file where the folder, or one above it, would be
        raise OutputExistsError(f"family {name!r}: expected workdir {str(workdir)!r} to be a folder for the contract's "
                                f"files, found {type(exc).__name__}: {exc.strerror}") from None
    return _run_contract(declared, workdir)


def _run_contract(family: Family, workdir: Path) -> Path:
    from .export import export_checkpoint
    from .training.train import train

    smoke = {"train": {"steps": 2}, "generate": [], "out": "samples.png", **family.smoke}
    there = [name for name in ("ckpt", "pkg", smoke["out"]) if os.path.lexists(workdir / name)]   # a dangling link too
    if there:
        raise OutputExistsError(f"family {family.name!r}: expected no {', '.join(there)} in workdir {str(workdir)!r} "
                                f"(the contract writes them, and replaces nothing), found {'it' if len(there) == 1 else 'them'}: "
                                f"give an empty folder")
    _found_by_a_fresh_process(family)   # before minutes of training
    try:
        checkpoint = train(family.name, workdir / "ckpt", progress=False, **smoke["train"])
    except ConfigError as exc:   # an option train() refuses: said as the family's smoke, where it was written
        raise ConfigError(f"family {family.name!r}: smoke['train']: {exc}") from None
    package = export_checkpoint(checkpoint, workdir / "pkg")
    _check_manifest(family, package)
    return _generate_without_torch(family, package, workdir, smoke)


FIND_FAMILY = "import sys; from edgegen.families import get; print(get(sys.argv[1]).summary)"


def _found_by_a_fresh_process(family: Family) -> None:
    """The CLI, a server, a user's script: each finds a family of another package through its
    entry point, not through a register() call made in this process."""
    try:
        result = subprocess.run([sys.executable, "-c", FIND_FAMILY, family.name], capture_output=True, text=True,
                                timeout=GENERATE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"family {family.name!r}: expected a fresh Python process to import edgegen's registry "
                          f"within {GENERATE_TIMEOUT_S} s, found it still importing") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["nothing on stderr"])[-1]
        raise ConfigError(f"family {family.name!r}: expected a fresh Python process to find it through its package's "
                          f"entry point in {ENTRY_POINT_GROUP} (pip install your package; -e while developing), "
                          f"found: {last}")


def _check_manifest(family: Family, package: Path) -> None:
    from .families import package_config
    from .package import Package

    def broken(expected: str, found: str) -> ConfigError:
        return ConfigError(f"family {family.name!r}: expected {expected}, found {found} (package {str(package)!r})")

    manifest = json.loads((package / "edgegen.json").read_text())
    if manifest["family"] != family.name:
        raise broken(f"its export to write family {family.name!r} into the manifest", repr(manifest["family"]))
    if set(manifest["graphs"]) != set(family.graphs):
        raise broken(f"its export to write the graphs its Family names ({', '.join(family.graphs) or 'none'})",
                     ", ".join(manifest["graphs"]))
    outputs = {o["name"] for graph in manifest["graphs"].values() for o in graph["outputs"]}
    if family.picture_outputs is not None and not set(family.picture_outputs) <= outputs:
        raise broken(f"its picture_outputs ({', '.join(family.picture_outputs)}) among the graphs' outputs",
                     ", ".join(sorted(outputs)))
    _, config = package_config(Package(package))   # as load reads it
    if not isinstance(config, family.config):
        raise broken(f"the package's config read as its Family's config, a {family.config.__name__}",
                     f"a {type(config).__name__}")


def _generate_without_torch(family: Family, package: Path, workdir: Path, smoke: dict) -> Path:
    from .images import save_grid

    out = workdir / smoke["out"]
    with tempfile.TemporaryDirectory(prefix="edgegen-contract-") as scratch:
        hint = Path(scratch) / "hint.png"   # an image file for options that take one ("{hint}" in smoke["generate"])
        save_grid(np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32), hint, scale=1)
        args = [str(package), *(["--n", "2"] if family.grid_flags else []), "--out", str(out),
                *(a.format(hint=hint) for a in smoke["generate"])]
        try:
            result = subprocess.run([sys.executable, "-c", GENERATE_WITHOUT_TORCH, *args], capture_output=True,
                                    text=True, timeout=GENERATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"family {family.name!r}: expected `edgegen generate {' '.join(args)}` to end within "
                              f"{GENERATE_TIMEOUT_S} s on its smoke package, found it still running: is its loop "
                              f"bounded?") from None
    if result.returncode != 0:
        tail = result.stderr.strip()[-2000:] or "nothing on stderr"
        raise ConfigError(f"family {family.name!r}: expected `edgegen generate {' '.join(args)}` to run in a fresh "
                          f"process without torch or onnx, found exit status {result.returncode}:\n{tail}")
    if not out.is_file() or out.stat().st_size == 0:
        raise ConfigError(f"family {family.name!r}: expected `edgegen generate` to write {str(out)!r}, found "
                          f"{'an empty file' if out.is_file() else 'no file'} (smoke['out'] names the file it writes)")
    return out
