"""`python -m edgegen_models.build [NAME ...] [--check]`: export each shipped checkpoint into
packages/NAME beside it, the step before building the edgegen-models wheel (whose build backend
refuses to run while a package is missing or stale). Needs edgegen with its export extra.

A package already made from the same weights by this edgegen's export code (edgegen.shipped.
code_revision: its export and families' code, and the exporter's versions) is kept; one made by
other code is exported again. --check writes nothing: it re-exports
each model into a temporary folder and compares every graph's form (inputs, outputs, nodes of each
op type) and outputs on the same inputs with the built package's, so a package that no longer
matches its checkpoint and today's code is found before it ships, an export-code change that keeps
the outputs too (exit status 1 if any is missing, stale or different)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import CHECKPOINTS

ROOT = CHECKPOINTS.parent
MAX_ABS_DIFF = 1e-5   # a re-export of the same weights with the same code: identical up to float noise


def names_in(root: Path = ROOT) -> list[str]:
    return sorted(p.name for p in (root / "checkpoints").iterdir() if (p / "weights.safetensors").is_file())


def stale(names: list[str], root: Path = ROOT) -> list[str]:
    """The names whose package must be exported again (why_stale)."""
    return [n for n in names if why_stale(n, root)]


def why_stale(name: str, root: Path = ROOT) -> str | None:
    """Why the package of `name` must be exported again: missing, exported from other weights than
    the checkpoint's, damaged (a file changed or gone since, which a wheel would ship), or by other
    export code (its export may have been fixed since) where this install can export: one with the
    runtime alone keeps the packages it was given. None where it is current."""
    from edgegen.errors import missing_export_modules
    from edgegen.package import sha256_file
    from edgegen.shipped import code_revision, package_damage, recorded_code, recorded_weights

    package = root / "packages" / name
    if recorded_weights(package) != sha256_file(root / "checkpoints" / name / "weights.safetensors"):
        return "package missing, or exported from other weights"
    if damage := package_damage(package):
        return f"package damaged ({damage})"
    if not missing_export_modules() and recorded_code(package) != code_revision():
        return "package exported by other export code"
    return None


def build(names: list[str], root: Path = ROOT, report=print) -> list[Path]:
    from edgegen.shipped import SHIPPED_SOURCE
    from edgegen.storage import atomic_write_text

    todo = stale(names, root)
    if not todo:   # nothing to export: a runtime-only install has no export side to import
        return []
    from edgegen.export import export_checkpoint

    (root / "packages").mkdir(exist_ok=True)
    written = []
    for name in todo:
        report(f"exporting {name}")
        # the export checks every graph against PyTorch, writes to a temporary name and renames
        package = export_checkpoint(root / "checkpoints" / name, root / "packages" / name, overwrite=True)
        manifest_path = package / "edgegen.json"
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        # the build machine's path means nothing on a device: name the checkpoint as shipped
        manifest["provenance"]["source_checkpoint"]["path"] = f"{SHIPPED_SOURCE}{name}"
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        written.append(package)
    return written


def drift(name: str, root: Path = ROOT) -> dict[str, float | str]:
    """{graph: max abs difference} between the built package and a fresh export of its
    checkpoint, on the same random inputs at batch 2 and the family's typical sizes; or, for a
    graph whose form changed (other inputs or outputs, other nodes: an export-code change that
    keeps the outputs), what changed."""
    from edgegen.bench import bench_feeds
    from edgegen.export import export_checkpoint
    from edgegen.families import package_config
    from edgegen.package import Package
    from edgegen.runtimes import open_sessions

    built = Package(root / "packages" / name)
    family, config = package_config(built)
    sizes = family.bench_dims(config) if family.bench_dims else {}
    sizes.pop("batch", None)
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Package(export_checkpoint(root / "checkpoints" / name, Path(scratch) / name))
        ours_sessions, fresh_sessions = open_sessions(built, "ort-cpu", 1), open_sessions(fresh, "ort-cpu", 1)
        differences = {}
        for part, entry in built.graphs.items():
            changed = form_change(built, fresh, part)
            if changed:
                differences[part] = changed
                continue
            if family.held_out_tokens is not None:   # a decoder's dims hang together: a prompt call and a decode step
                windows, _, step, _ = family.held_out_tokens(built, config, 1, 0)
                calls = [windows[0], step]
            else:
                calls = [bench_feeds(entry.inputs, 2, seed=0, shapes=sizes)]
            differences[part] = max(_max_difference(ours_sessions[part].run(f), fresh_sessions[part].run(f)) for f in calls)
    return differences


def _max_difference(ours: dict, theirs: dict) -> float:
    return max(float(np.max(np.abs(ours[k].astype(np.float64) - theirs[k]))) if ours[k].size else 0.0 for k in ours)


def form_change(built, fresh, part: str) -> str:
    """What differs between two packages' graph `part` besides its weights' values: its inputs and
    outputs, and how many nodes of each op type it has ("" when nothing does)."""
    from collections import Counter

    from edgegen.graph_summary import read_graph_summary

    ours, theirs = built.graphs.get(part), fresh.graphs.get(part)
    if theirs is None:
        return "a fresh export has no such graph"
    signature = lambda e: [f"{s.name} {s.describe()}" for s in (*e.inputs, *e.outputs)]   # noqa: E731
    if signature(ours) != signature(theirs):
        only_ours = [s for s in signature(ours) if s not in signature(theirs)] or ["the same tensors in another order"]
        only_theirs = [s for s in signature(theirs) if s not in signature(ours)] or ["another order"]
        return f"inputs and outputs {', '.join(only_ours)} where a fresh export has {', '.join(only_theirs)}"
    counts = [Counter(n.op_type for n in read_graph_summary(p.graph_path(part)).nodes) for p in (built, fresh)]
    changed = sorted(op for op in set(counts[0]) | set(counts[1]) if counts[0][op] != counts[1][op])
    return ("nodes " + ", ".join(f"{op} {counts[0][op]} where a fresh export has {counts[1][op]}" for op in changed)
            if changed else "")


def check(names: list[str], root: Path = ROOT, report=print) -> list[str]:
    """The problems that keep these packages from shipping; [] when every one is current."""
    problems = [f"{n}: {why}" for n in names if (why := why_stale(n, root))]
    for name in sorted(set(names) - {p.split(":")[0] for p in problems}):
        for part, diff in drift(name, root).items():
            if isinstance(diff, str):
                problems.append(f"{name}: {part} has another form than a fresh export of its checkpoint ({diff}): "
                                "rebuild it")
                continue
            report(f"{name}: {part} within {diff:.2g} of a fresh export")
            if not diff <= MAX_ABS_DIFF:
                problems.append(f"{name}: {part} differs from a fresh export of its checkpoint by {diff:.3g} "
                                f"(expected at most {MAX_ABS_DIFF:g}): rebuild it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgegen_models.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="shipped models (default: all)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing (see above)")
    args = parser.parse_args(argv)
    names = args.names or names_in()
    from edgegen.errors import EdgegenError, require_export

    try:   # a runtime-only install (a device's) has the packages, and no export side to check or make them
        if args.check:
            require_export(f"{parser.prog} --check, which compares each package with a fresh export,")
            problems = check(names)
            print("\n".join(problems) or f"all {len(names)} packages match their checkpoints")
            return 1 if problems else 0
        if reasons := [f"{n}: {why}" for n in names if (why := why_stale(n))]:
            require_export(f"{parser.prog}, which exports again what is not current ({'; '.join(reasons)}),")
        written = build(names)
    except EdgegenError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(written)} exported, {len(names) - len(written)} already current, in {ROOT / 'packages'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
