"""`edgegen demo`: every family end to end on this machine, summarised in demo/index.md.

For each family: a checkpoint (the shipped weights, or trained here with --train), export
through the validation gate, samples from the runtime, a benchmark beside PyTorch eager. The
shipped weights' packages are those `edgegen generate NAME` reads: carried by edgegen-models, or
exported once into edgegen's cache (shipped.py).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

from .bench import MAX_ITERS, bench_package, cores_text, cpu_text, format_table, machine_info, per_token_text
from .errors import CheckpointError, ConfigError, OutputExistsError, not_one_of
from .families import PRETRAINED
from .package import CHECKPOINT_WEIGHTS, MANIFEST_NAME, refuse_output_inside_edgegens
from .storage import atomic_write_text, staged_directory

BENCH_BATCH = 8


def demo_models(only: list[str] | None = None) -> list[tuple]:
    """(family, demo model) for every registered family's shipped checkpoints, in registry order
    (only: those of these families)."""
    from .families import families

    if only:
        with_demo = [family.name for family in families() if family.demo]
        for name in only:   # an unknown name is an error, not an empty demo; one without demo models too
            if name not in with_demo:
                raise ConfigError(not_one_of("demo --only: family", name, with_demo, "the families with demo models"))
    return [(family, model) for family in families() for model in family.demo if not only or family.name in only]


def refuse_training_without_what_it_builds_on(models: list[tuple]) -> None:
    """--train: a model built on another (a ControlNet on its base) takes the one trained before it
    in this demo; where --only leaves that out, said before any training, not after minutes of it."""
    trained: list[str] = []
    for family, model in models:
        for name in model.checkpoints.values():
            if name not in trained:
                raise ConfigError(f"demo --train: expected {name}, which {model.name} is trained on, trained first in "
                                  f"this demo, found it left out: add its family to --only (or leave --train out: "
                                  f"the shipped {model.name} needs none)")
        trained.append(model.name)


def refuse_what_the_demo_lacks(models: list[tuple], train_models: bool) -> None:
    """Before any work: each model's showcase (a family's reference to a function its module lacks
    was found only after that model's training, up to 90 minutes in) and, without --train, its
    shipped checkpoint (without edgegen-models installed the message named a made-up path)."""
    from .shipped import MODELS_MISSING, models_root

    for family, model in models:
        family.showcase_function()
        if train_models:
            continue
        if model.folder is None and models_root() is None:
            raise CheckpointError(f"demo model {model.name!r}: expected its shipped checkpoint, found none: "
                                  f"{MODELS_MISSING}; or give --train to train it here")
        shipped = shipped_checkpoint(model)
        if not shipped.is_dir():
            raise CheckpointError(f"demo model {model.name!r}: expected its shipped checkpoint at {str(shipped)!r}, "
                                  "found none (edgegen demo --train trains it here)")


def shipped_checkpoint(model) -> Path:
    return Path(model.folder or PRETRAINED) / model.name


# the showcase files a demo before December 6 wrote, which it did not record: MODEL_samples.png, ...
SHOWCASE_FILE = re.compile(r"[\w.-]+_((samples|mixing|reconstructions)\.png|samples\.txt|\w+\.wav)")


def demo_files(folder: Path) -> set[str]:
    """What a demo folder holds: its results, index, checkpoints and packages, and the showcase
    files its results.json records for each model (for a demo that recorded none, the files named
    MODEL_what.png/.txt/.wav). Anything else in it is someone else's (storage.refuse_replacing_other):
    a file or folder of the user's named like a model's is not taken for the demo's."""
    models = _demo_models_recorded(folder)
    recorded = {name for entry in models.values() for name in entry.get("files", ())
                if isinstance(entry, dict) and isinstance(name, str)}
    unrecorded = tuple(f"{name}_" for name, entry in models.items() if not isinstance(entry, dict) or "files" not in entry)
    return {"results.json", "index.md", "ckpt", "pkg", *recorded,
            *(e.name for e in Path(folder).iterdir() if unrecorded and e.name.startswith(unrecorded)
              and SHOWCASE_FILE.fullmatch(e.name) and e.is_file() and not e.is_symlink())}


def _demo_models_recorded(folder: Path) -> dict:
    """{model name: its entry} of the demo's results.json; {} where it has none readable."""
    try:
        models = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8")).get("families", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {name: entry for name, entry in models.items() if isinstance(name, str)} if isinstance(models, dict) else {}


def refuse_others_in_models(out: Path) -> None:
    """Replacing a demo folder replaces its pkg/ and ckpt/ whole: each must hold only the packages
    and checkpoints edgegen wrote there (demo_files judges the folder's top only; a note dropped
    into pkg/NAME/ would go with it)."""
    from .package import PACKAGE_KIND, package_files
    from .storage import LEFTOVER, refuse_replacing_other
    from .training.checkpoint import CHECKPOINT_KIND, checkpoint_files

    models = _demo_models_recorded(out)
    for sub, holds, kind, owns in (("pkg", MANIFEST_NAME, PACKAGE_KIND, package_files),
                                   ("ckpt", CHECKPOINT_WEIGHTS, CHECKPOINT_KIND, checkpoint_files)):
        if (out / sub).is_dir() and not (out / sub).is_symlink():
            for entry in sorted((out / sub).iterdir()):
                if LEFTOVER.match(entry.name):
                    continue
                if entry.name not in models:   # a package of the user's copied in beside the demo's
                    raise OutputExistsError(f"demo {str(out)!r}: expected its {sub}/ to hold only the models its "
                                            f"results.json names, since --force replaces {sub}/ whole, found "
                                            f"{sub}/{entry.name}, which this demo did not make")
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
    if train_models:
        refuse_training_without_what_it_builds_on(models)
    refuse_what_the_demo_lacks(models, train_models)
    refuse_output_inside_edgegens("output", out)
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
                shutil.copytree(shipped_checkpoint(model), ckpt)   # there: refuse_what_the_demo_lacks
                origin = f"shipped weights, made by `{model.command(family.name)}`"
            pkg = stage / "pkg" / model.name
            _export(ckpt, pkg, shipped_name=model.name if not train_models and model.folder is None else None,
                    final_ckpt=out.resolve() / "ckpt" / model.name)
            pipe = load(pkg, backend="ort-cpu")
            before = {entry.name for entry in stage.iterdir()}
            showcase = family.showcase_function() or _no_showcase
            extra, lines = showcase(pipe, stage, model.name)
            extra["files"] = sorted({entry.name for entry in stage.iterdir()} - before)   # what --force may replace
            report = bench_package(pkg, batch=BENCH_BATCH, iters=iters, vs_torch=ckpt, generation=False)   # its rows only
            report["package"] = f"pkg/{model.name}"  # relative to the demo folder, not the staging name
            summary["families"][model.name] = {"origin": origin, "bench": report, **extra}
            sections.append(_section(model.name, origin, report, lines, iters))
        summary["seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(stage / "results.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(stage / "index.md", _index(sections, summary))
    return out / "index.md"


def _no_showcase(pipe, folder: Path, name: str) -> tuple[dict, list[str]]:
    """A family without a showcase (Family.showcase None): its section holds the benchmark alone."""
    return {}, ["(Its family gives no showcase: the benchmark alone.)", ""]


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
    each = (f"{report['iters']} whole generations each (a tenth of --iters)" if "generation" in report else
            f"{report['iters']} iterations each")
    lines += [f"Latency at batch {report['batch']}, {report['threads']} threads, {each}, interleaved "
              f"(`edgegen bench pkg/{name} --batch {report['batch']} --iters {iters}{rows_only} --vs-torch ckpt/{name}`; "
              "vs torch: the ratio of the p50s):", "",
              format_table({**report, "energy": None}), ""]   # not measured: said once, under the machine
    return "\n".join(lines)


def _energy_unmeasured(summary: dict) -> str | None:
    """Why no benchmark measured energy (the machine's power source, the same for every model)."""
    return next((entry["bench"]["energy"] for entry in summary["families"].values()
                 if entry["bench"].get("energy") and not any("watts" in r for r in entry["bench"]["results"])), None)


def _index(sections: list[str], summary: dict) -> str:
    m = summary["machine"]
    head = ["# edgegen demo", "",
            f"Machine: {cpu_text(m)}, {cores_text(m)}, {m['os']}; onnxruntime {m['onnxruntime']}. "
            f"Total time {summary['seconds']} s.", "",
            *([f"Energy: not measured: {unmeasured}", ""] if (unmeasured := _energy_unmeasured(summary)) else []),
            "Commands below run from this folder.", "",
            "Each model below: checkpoint -> `edgegen export` (validated against PyTorch at batch 1 and 3; shipped "
            "weights' packages are those `edgegen generate NAME` reads, carried by edgegen-models or exported once "
            "into edgegen's cache, and copied here) -> "
            "runtime samples (seed 0) -> benchmark beside PyTorch eager.", ""]
    return "\n".join(head + sections)
