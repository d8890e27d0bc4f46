"""`edgegen demo`: every family end to end on this machine, summarised in demo/index.md.

For each family: a checkpoint (the shipped weights, or trained here with --train), export
through the validation gate, samples from the runtime, a benchmark beside PyTorch eager. The
shipped weights' packages are those `edgegen generate NAME` reads: carried by edgegen-models, or
exported once into edgegen's cache (shipped.py).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from .bench import MAX_ITERS, bench_package, cores_text, cpu_text, format_table, machine_info, per_token_text
from .errors import CheckpointError, ConfigError, OutputExistsError
from .families import PRETRAINED
from .package import CHECKPOINT_WEIGHTS, MANIFEST_NAME
from .storage import atomic_write_text, staged_directory

BENCH_BATCH = 8


def demo_models(only: list[str] | None = None) -> list[tuple]:
    """(family, demo model) for every registered family's shipped checkpoints, in registry order
    (only: those of these families)."""
    from .families import families, get

    if only:
        for name in only:
            if not get(name).demo:   # an unknown name is an error, not an empty demo; one without demo models too
                raise ConfigError(f"demo --only {name}: expected a family with demo models, found {name!r} with none "
                                  "(its Family declares no demo=): leave it out")
    return [(family, model) for family in families() for model in family.demo if not only or family.name in only]


def demo_files(folder: Path) -> set[str]:
    """What a demo folder holds: its results, index, checkpoints and packages, and each model's
    showcase files (NAME_samples.png, ...) for the models its results.json names. Anything else
    in it is someone else's (storage.refuse_replacing_other)."""
    try:
        models = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8")).get("families", {})
    except (OSError, ValueError, AttributeError):
        models = {}
    prefixes = tuple(f"{name}_" for name in models if isinstance(name, str))
    return {"results.json", "index.md", "ckpt", "pkg",
            *(e.name for e in Path(folder).iterdir() if prefixes and e.name.startswith(prefixes))}


def refuse_others_in_models(out: Path) -> None:
    """Replacing a demo folder replaces its pkg/ and ckpt/ whole: each must hold only the packages
    and checkpoints edgegen wrote there (demo_files judges the folder's top only; a note dropped
    into pkg/NAME/ would go with it)."""
    from .package import PACKAGE_KIND, package_files
    from .storage import LEFTOVER, refuse_replacing_other
    from .training.checkpoint import CHECKPOINT_KIND, checkpoint_files

    for sub, holds, kind, owns in (("pkg", MANIFEST_NAME, PACKAGE_KIND, package_files),
                                   ("ckpt", CHECKPOINT_WEIGHTS, CHECKPOINT_KIND, checkpoint_files)):
        if (out / sub).is_dir() and not (out / sub).is_symlink():
            for entry in sorted((out / sub).iterdir()):
                if LEFTOVER.match(entry.name):
                    continue
                try:
                    refuse_replacing_other(entry, holds, kind, owns=owns)
                except OutputExistsError as exc:   # said as the demo's: the user gave the demo's folder
                    raise OutputExistsError(f"demo {str(out)!r}: expected its {sub}/ to hold only what edgegen wrote "
                                            f"there, since --force replaces {sub}/ whole, found otherwise: {exc}") from None


def run_demo(out: str | Path, train_models: bool = False, overwrite: bool = False, iters: int = 200,
             only: list[str] | None = None) -> Path:
    """Write the demo into `out` (atomically: a failed demo leaves no half-written folder)."""
    from .runtimes import load
    from .training.train import train

    if isinstance(iters, bool) or not isinstance(iters, int) or not 1 <= iters <= MAX_ITERS:   # before the exports
        raise ConfigError(f"--iters: expected from 1 to {MAX_ITERS} benchmark iterations, found {iters!r}")
    models = demo_models(only)
    if not models:
        raise ConfigError(f"demo: expected families with demo models, found none among {only}")
    out = Path(out)
    if overwrite:
        refuse_others_in_models(out)
    started = time.perf_counter()
    with staged_directory(out, overwrite=overwrite, holds="results.json", kind="an edgegen demo",
                          owns=demo_files) as stage:
        sections, summary = [], {"machine": machine_info(), "families": {}}
        for family, model in models:
            ckpt = stage / "ckpt" / model.name
            if train_models:
                # a model that builds on another (a ControlNet's base) takes the one trained before it
                built_on = {keyword: str(stage / "ckpt" / name) for keyword, name in model.checkpoints.items()}
                train(family.name, ckpt, data=model.data, **built_on)
                origin = f"trained here: `edgegen train {family.name} --data {model.data}`"
            else:
                shipped = Path(model.folder or PRETRAINED) / model.name
                if not shipped.is_dir():
                    raise CheckpointError(f"demo model {model.name!r}: expected its shipped checkpoint at {str(shipped)!r}, "
                                          "found none (edgegen demo --train trains it here)")
                shutil.copytree(shipped, ckpt)
                origin = f"shipped weights, made by `{model.command(family.name)}`"
            pkg = stage / "pkg" / model.name
            _export(ckpt, pkg, shipped_name=model.name if not train_models and model.folder is None else None,
                    final_ckpt=out.resolve() / "ckpt" / model.name)
            pipe = load(pkg, backend="ort-cpu")
            extra, lines = family.showcase_function()(pipe, stage, model.name)
            report = bench_package(pkg, batch=BENCH_BATCH, iters=iters, vs_torch=ckpt, generation=False)   # its rows only
            report["package"] = f"pkg/{model.name}"  # relative to the demo folder, not the staging name
            summary["families"][model.name] = {"origin": origin, "bench": report, **extra}
            sections.append(_section(model.name, origin, report, lines, iters))
        summary["seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(stage / "results.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(stage / "index.md", _index(sections, summary))
    return out / "index.md"


def _export(ckpt: Path, pkg: Path, shipped_name: str | None, final_ckpt: Path) -> None:
    """Export ckpt into pkg. A shipped checkpoint's package is the one every use of its name reads
    (shipped.py: carried by edgegen-models, or exported through the same gate once into edgegen's
    cache), copied, not exported again for every demo; where that cache cannot be written, or holds
    a damaged entry, the demo exports its own, recording the checkpoint where the finished demo
    holds it (`final_ckpt`), not in the staging folder, so that optimize and bench --vs-torch find it."""
    from .export import export_checkpoint
    from .export.shipped import export_shipped
    from .package import copy_package
    from .progress import report_to_stderr

    if shipped_name is not None:
        try:
            found = export_shipped(shipped_name, report=report_to_stderr)
        except (OSError, ConfigError, OutputExistsError) as error:
            print(f"edgegen: demo: exporting {shipped_name} into the demo only, not into edgegen's cache: {error}",
                  file=sys.stderr)
        else:
            copy_package(found, pkg)
            return
    export_checkpoint(ckpt, pkg, recorded_as=final_ckpt)


def _section(name: str, origin: str, report: dict, showcase: list[str], iters: int) -> str:
    lines = [f"## {name}", "", f"Checkpoint: {origin}.", "", *showcase]
    if "generation" in report:
        g = report["generation"]
        lines += [f"Greedy generation, {g['prompt_tokens']}-token prompts, {g['new_tokens']} new tokens. Streamed at "
                  f"batch 1: time to first token p50 {g['ttft_ms_p50']:.2f} ms, {per_token_text(g)}. The table "
                  f"times whole generations at batch {report['batch']}; "
                  "PyTorch runs the checkpoint's own KV-cache loop.", ""]
    # the command that reproduces this table: the demo's --iters, and its graphs' rows only where a
    # whole generation would follow them (token packages time whole generations: no --no-generation)
    rows_only = "" if "generation" in report else " --no-generation"
    lines += [f"Latency at batch {report['batch']}, {report['threads']} threads, {report['iters']} iterations each, "
              f"interleaved (`edgegen bench pkg/{name} --batch {report['batch']} --iters {iters}{rows_only} "
              f"--vs-torch ckpt/{name}`):", "",
              format_table(report), ""]
    return "\n".join(lines)


def _index(sections: list[str], summary: dict) -> str:
    m = summary["machine"]
    head = ["# edgegen demo", "",
            f"Machine: {cpu_text(m)}, {cores_text(m)}, {m['os']}; onnxruntime {m['onnxruntime']}. "
            f"Total time {summary['seconds']} s.", "",
            "Each family: checkpoint -> `edgegen export` (validated against PyTorch at batch 1 and 3; shipped "
            "weights' packages are those `edgegen generate NAME` reads, carried by edgegen-models or exported once "
            "into edgegen's cache, and copied here) -> "
            "runtime samples (seed 0) -> benchmark beside PyTorch eager.", ""]
    return "\n".join(head + sections)
