"""torch -> ONNX per family, the validation gate, and the package writer."""

from __future__ import annotations

import contextlib
import platform
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from .. import __version__
from ..errors import CheckpointError, ConfigError, EdgegenError, EdgegenWarning, ImportedSettingWarning, ParityError
from ..families import RuntimeConfig, package_config
from ..families import get as get_family
from ..package import (CHECKPOINT_WEIGHTS, MANIFEST_NAME, PACKAGE_KIND, GraphEntry, Manifest, Package, check_name,
                       created_time, hugging_face_folder, name_from_folder, package_files, read_json, refuse_output_inside_edgegens, sha256_file, write_manifest)
from ..progress import Progress
from ..storage import refuse_output_folder, staged_directory
from ..runtimes.feeds import HELD_OUT_FILE, write_feeds
from ..runtimes.ort import OrtSession
from ..training.checkpoint import Checkpoint, data_trained_on, load_checkpoint, save_pretrained_folder
from ..training.data import refuse_empty_data
from .onnx_export import DEFAULT_OPSET, export_module, untraceable, value_spec
from .spec import TRACE_BATCH, ExportSpec, GraphSpec
from .validate import Comparison, compare, gate_graph, refuse_lost_epsilons

MIN_OPSET = 18
EXPORT_BATCH = TRACE_BATCH  # traced at 2 ...
GATE_BATCHES = (1, 3)       # ... checked at sizes it was not traced at


def export_checkpoint(checkpoint: str | Path, out: str | Path, data: str | None = None, opset: int = DEFAULT_OPSET,
                      name: str | None = None, overwrite: bool = False, seed: int = 0,
                      progress: bool | None = False, recorded_as: str | Path | None = None) -> Path:
    """Export every graph of a checkpoint, gate each against PyTorch, and write the package.

    data: the dataset the gate draws realistic inputs from (default: the one it was trained on).
    recorded_as: the checkpoint's path to record as the package's source, where that is not
    `checkpoint` (the demo's, staged in a folder that is renamed to the demo's when it is done).
    Raises ParityError (a ValidationError), and leaves nothing at `out`, when a graph does not reproduce PyTorch.
    """
    refuse_package_output(out, overwrite, name, reads=[checkpoint])   # before the checkpoint and its data load
    return export_model(load_checkpoint(checkpoint), out, data, opset, name, overwrite, seed, progress,
                        recorded_as=recorded_as)


def refuse_package_output(out, overwrite: bool, name: str | None, reads=()) -> None:
    """What refuses a package's output before any work (an import's minutes, the data loading):
    the name, the time it will record, and the folder as the export's staged_directory would
    refuse it at the end."""
    check_name(name)
    created_time()
    refuse_output_inside_edgegens("output", out)
    refuse_output_folder(out, overwrite, MANIFEST_NAME, PACKAGE_KIND, reads, package_files)


def check_opset(opset) -> None:
    """The opsets edgegen exports: refused before any tracing, so a package never names another."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= DEFAULT_OPSET:
        raise ConfigError(f"opset: expected {MIN_OPSET} to {DEFAULT_OPSET} ({MIN_OPSET} for TensorRT 10.3 on JetPack 6; "
                          f"the exporter breaks below it), found {opset!r}")


def export_model(ckpt: Checkpoint, out: str | Path, data: str | None = None, opset: int = DEFAULT_OPSET,
                 name: str | None = None, overwrite: bool = False, seed: int = 0, progress: bool | None = False,
                 spec: ExportSpec | None = None, recorded_as: str | Path | None = None) -> Path:
    """export_checkpoint for a checkpoint already in memory (an imported model, for one).
    progress: a bar per graph (None: on a terminal, a summary line in logs; False: silent).
    spec: the graphs to export, where they are not the family's own (an imported diffusers UNet)."""
    checkpoint = ckpt.path
    check_opset(opset)
    check_name(name)
    created_time()   # a mistyped SOURCE_DATE_EPOCH said before the work, not after the gate
    family = get_family(ckpt.family)
    spec = spec or family.export_spec()
    refuse_empty_data(data)
    if data is not None and not spec.needs_data:   # before an import's loading; optimize would not read it either
        raise_unread_data(data, ckpt.family)
    if spec.via_import is not None:
        with exported_as(ckpt, spec) as (imported, imported_spec):
            return export_model(imported, out, data, opset, name, overwrite, seed, progress, spec=imported_spec,
                                recorded_as=recorded_as)
    if missing := [part for part in family.graphs if part not in {g.part for g in spec.graphs}]:   # load would refuse it
        raise ConfigError(f"family {family.name!r}: expected its export spec to make the graphs every {family.name} "
                          f"package has ({', '.join(family.graphs)}), found {', '.join(g.part for g in spec.graphs) or 'none'}"
                          f": {', '.join(missing)} missing")
    images, gate_data = None, data
    if spec.needs_data:
        _warn_of_other_data(ckpt, data, family.builtin_data)
        source = data or ckpt.trained_data()
        if data is None and source != ckpt.data.get("source", "digits"):   # an earlier edgegen's relative path, read
            gate_data = source   # from here: recorded whole, so that optimize reads this folder from anywhere
        images = spec.load_data(ckpt, source)
    with staged_directory(out, overwrite=overwrite, holds=MANIFEST_NAME, kind=PACKAGE_KIND,
                          reads=[checkpoint] if checkpoint else [], owns=package_files) as stage:
        graphs, failures = {}, []
        with Progress(len(spec.graphs), f"export {Path(checkpoint).name}", enabled=progress) as bar:
            for graph in spec.graphs:
                bar.update(0, info=f"{graph.part}: tracing and gating against PyTorch")
                entry, results = _export_graph(graph, ckpt, images, stage, opset, seed)
                graphs[graph.part] = entry
                failures += [f"graph {graph.part!r} {r.line()} (tolerance atol {graph.atol:g}, rtol {graph.rtol:g})"
                             for r in results if not r.passed]
                bar.update(1, info=f"{graph.part}: " + ("gate passed" if all(r.passed for r in results) else "FAILED"))
        if failures:
            raise ParityError(f"export of {str(checkpoint)!r} does not reproduce PyTorch, package not written: "
                                  + "; ".join(failures))
        for file_name, source in ckpt.files.items():  # what the runtime needs beside the graphs
            shutil.copyfile(source, stage / file_name)
        config = _runtime_config(family, spec, ckpt)
        if spec.recorded_feeds:
            config.held_out = _record_feeds(stage, spec, ckpt, images, seed)
        if spec.companions is not None:
            spec.companions(stage, config, graphs)
        # what the export wrote beside the graphs, recorded so that --force knows it for edgegen's
        beside = sorted(e.name for e in stage.iterdir() if e.name not in {g.file for g in graphs.values()})
        manifest = Manifest(
            family=ckpt.family,
            name=name or name_from_folder(Path(checkpoint).resolve().name),
            config=config.to_json(),
            graphs=graphs,
            provenance={**provenance(opset, {"path": str(Path(recorded_as or ckpt.path).resolve()),
                                             "weights_sha256": ckpt.weights_sha256,
                                             **_gate_data(family, gate_data), **_imported_with(checkpoint)},
                                     training=ckpt.training), "files_beside": beside},
        )
        write_manifest(stage, manifest)
        package_config(Package(stage))  # read back what we wrote, through the runtime's own checks, as load() does
    return Path(out)


def _warn_of_other_data(ckpt: Checkpoint, data: str | None, builtin: tuple[str, ...]) -> None:
    """--data other than the data the checkpoint was trained on, which is still there: export's
    --data is for data that moved, and the gate and optimize's calibration draw from what it names
    (photographs for a model of grey digits, without a word; helper 143)."""
    if data is None:
        return
    source, gone = data_trained_on(ckpt.data, builtin)
    same = source == data or (source not in builtin and data not in builtin
                              and Path(source).resolve() == Path(data).resolve())
    if not gone and not same and (source in builtin or Path(source).exists()):
        warnings.warn(f"--data {data!r}: the checkpoint was trained on {source!r}, which is there: the gate, and "
                      "optimize's calibration after it, draw from the data given (--data is for the trained data's new "
                      "place, where it moved)", EdgegenWarning, stacklevel=3)


def raise_unread_data(data: str, family: str) -> None:
    raise ConfigError(f"data (--data) {data!r}: expected a family whose export gates on data, found {family}, whose "
                      "gate draws its own inputs (the data would be recorded and never read)")


def _imported_with(checkpoint) -> dict:
    """The Hugging Face libraries' versions, for a package imported from a save_pretrained folder."""
    if checkpoint is None or hugging_face_folder(Path(checkpoint)) is None:
        return {}
    from .hugging_face import importing_versions

    return {"imported_with": importing_versions()}


def _gate_data(family, data: str | None) -> dict:
    """{"data": the data given to the gate in place of the training data} (a path whole), which
    optimize then draws from too (the training data moved); {} where none was given."""
    if data is None:
        return {}
    return {"data": data if data in family.builtin_data else str(Path(data).resolve())}


def export_spec(family: str) -> ExportSpec:
    """The export spec of a registered family."""
    return get_family(family).export_spec()


def export_transformers(architecture: str | None, folder: str | Path, out: str | Path, **options) -> Path:
    """`edgegen export [ARCH] --from-transformers DIR`: the folder imported by the family that takes
    ARCH (default: config.json's model_type) (import_transformers), then exported through the gate
    as any checkpoint."""
    refuse_package_output(out, options.get("overwrite", False), options.get("name"), reads=[folder])
    architecture = architecture or model_type(folder)
    with tempfile.TemporaryDirectory(prefix="edgegen-import-") as scratch:
        return export_model(import_transformers(architecture, folder, Path(scratch)), out, **options)


def model_type(folder: str | Path) -> str:
    """The architecture a transformers save_pretrained folder's config.json names (model_type)."""
    path = save_pretrained_folder(folder, "transformers checkpoint") / "config.json"
    if not path.is_file():
        route, what = hugging_face_folder(path.parent) or (None, None)
        other = route not in (None, "--from-transformers")   # a diffusers pipeline: the way that imports it
        raise CheckpointError(f"transformers checkpoint {str(folder)!r}: expected a save_pretrained directory with "
                              f"config.json, found no config.json in it"
                              + (f" ({what}: import it with edgegen export {route} DIR)" if other else ""))
    config = read_json(path, CheckpointError)
    found = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(found, str):
        raise CheckpointError(f"{path}: expected a model_type naming the architecture, found {found!r} "
                              "(transformers needs it too: add \"model_type\": \"llama\", or qwen2, mistral, gpt2)")
    return found


def import_transformers(architecture: str, folder: str | Path, scratch: Path) -> Checkpoint:
    """A transformers save_pretrained folder of `architecture` as the checkpoint the family that
    takes it makes (Family.importers: (architecture, folder, scratch) -> Checkpoint)."""
    from ..families import transformers_importer

    ckpt = transformers_importer(architecture)(architecture, folder, scratch)
    if not isinstance(ckpt, Checkpoint):
        raise ConfigError(f"the importer of {architecture!r} (Family.importers): expected (architecture, folder, scratch) "
                          f"-> Checkpoint, found it returning {type(ckpt).__name__}")
    return ckpt


@contextlib.contextmanager
def source_model(package: Package, given: str | Path | None = None):
    """(checkpoint, spec) of the torch side a package's graphs came from: the checkpoint (`given`,
    else the path its manifest records), or, for a package imported from a transformers or diffusers
    folder, that folder imported again; either refused unless its weights are the ones the package
    came from. What `bench --vs-torch` runs beside the graphs."""
    from ..shipped import SHIPPED_SOURCE
    from ..training.checkpoint import load_source_checkpoint, recorded_source, require_recorded_weights

    source = given or recorded_source(package)
    folder = Path(source) if source else None
    if (folder is None or str(source).startswith(SHIPPED_SOURCE) or (folder / CHECKPOINT_WEIGHTS).is_file()
            or (folder / MANIFEST_NAME).is_file() or not folder.is_dir()):   # a package: load_checkpoint names it
        with exported_as(load_source_checkpoint(package, given, "--vs-torch")) as pair:   # which says what is missing
            yield pair
        return
    with tempfile.TemporaryDirectory(prefix="edgegen-import-") as scratch:
        ckpt, spec = _imported_again(folder, Path(scratch))
        yield require_recorded_weights(package, ckpt, repr(str(folder)), "imported"), spec or export_spec(ckpt.family)


def _imported_again(folder: Path, scratch: Path) -> tuple[Checkpoint, ExportSpec | None]:
    """A transformers (config.json with a model_type) or diffusers (model_index.json) folder as the
    checkpoint its import makes."""
    from .diffusers_import import import_diffusers

    if (folder / "model_index.json").is_file():
        return import_diffusers(folder, scratch)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{str(folder)!r}: expected an edgegen checkpoint (weights.safetensors), a "
                              "transformers save_pretrained folder (config.json) or a diffusers pipeline "
                              "(model_index.json), found none of them")
    with warnings.catch_warnings():   # what the import says of the folder's settings, the export said once
        warnings.simplefilter("ignore", ImportedSettingWarning)
        return import_transformers(model_type(folder), folder, scratch), None


@contextlib.contextmanager
def exported_as(ckpt: Checkpoint, spec: ExportSpec | None = None):
    """(checkpoint, spec) whose graphs the export writes: the family's own, or for a family that
    exports through its import path (ExportSpec.via_import), the imported ones, alive while the
    import's scratch folder is."""
    spec = spec or export_spec(ckpt.family)
    if spec.via_import is None:
        yield ckpt, spec
        return
    with tempfile.TemporaryDirectory(prefix="edgegen-export-") as scratch:
        yield spec.via_import(ckpt, Path(scratch))


def _runtime_config(family, spec: ExportSpec, ckpt) -> RuntimeConfig:
    """The family's typed runtime config for this checkpoint, checked as the runtime will check it."""
    config = spec.runtime_config(ckpt)
    values = config.to_json() if isinstance(config, RuntimeConfig) else config
    # read back as the runtime will read it: what the package says is what loads
    return family.runtime_config(values, f"export of {str(ckpt.path)!r}: runtime config")


def _export_graph(graph: GraphSpec, ckpt, images, stage: Path, opset: int, seed: int) -> tuple[GraphEntry, list[Comparison]]:
    rng = np.random.default_rng(seed)
    module = graph.submodule(ckpt.model).eval()
    inputs = graph.inputs(ckpt.config)
    example = graph.feeds(ckpt, EXPORT_BATCH, rng, images)
    try:
        model = export_module(module, graph.part, inputs, graph.output_names(ckpt.config), example, opset)
    except EdgegenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's module torch cannot export is its author's to change
        if type(module).__module__.startswith("edgegen."):   # edgegen's own: its bug, raised as it is
            raise
        raise untraceable(exc, module, f"graph {graph.part!r} of family {ckpt.family!r}",
                          "docs/bring-your-own-model.md") from exc
    if graph.rewrite is not None:
        model = graph.rewrite(model)
    file = f"{graph.part}.onnx"
    onnx.save(model, str(stage / file))
    outputs = tuple(value_spec(v) for v in model.graph.output)
    session = OrtSession(graph.part, stage / file, inputs, outputs, backend="ort-cpu")
    results = gate_graph(graph.part, module, session,
                         lambda batch: graph.feeds(ckpt, batch, rng, images), GATE_BATCHES,
                         graph.atol, graph.rtol)
    if graph.also_gate is not None:
        results += graph.also_gate(module, session, example, graph.atol, graph.rtol)
    refuse_lost_epsilons(graph.part, module, session, example)
    validation = {
        "batches": list(GATE_BATCHES),
        "atol": graph.atol,
        "rtol": graph.rtol,
        "max_abs": max(r.max_abs for r in results),
        "max_rel": max(r.max_rel for r in results),
        "passed": all(r.passed for r in results),
    }
    entry = GraphEntry(file, sha256_file(stage / file), inputs, outputs,
                       extra={"opset": opset, "validation": validation})
    return entry, results


def _record_feeds(stage: Path, spec: ExportSpec, ckpt, images, seed: int) -> dict:
    """Feeds of every graph's inputs (one dict per feed, each graph's names in it), drawn as the
    gate draws them, written beside the graphs; what config.held_out names."""
    rng = np.random.default_rng(seed + 1)   # not the gate's own draws
    feeds = []
    for _ in range(spec.recorded_feeds):
        feed = {}
        for graph in spec.graphs:
            feed.update(graph.feeds(ckpt, EXPORT_BATCH, rng, images))
        feeds.append(feed)
    write_feeds(stage / HELD_OUT_FILE, feeds)
    return {"file": HELD_OUT_FILE, "sha256": sha256_file(stage / HELD_OUT_FILE), "feeds": len(feeds)}


def provenance(opset: int, source: dict, training: dict | None = None) -> dict:
    """What made a package: the versions, the time, and its source (a checkpoint's path and weights
    hash, or a user's module and its weights hash)."""
    import onnxscript

    key = "source_checkpoint" if "path" in source else "source_module"
    from ..shipped import code_revision

    return {
        "edgegen": __version__,
        "edgegen_code": code_revision(),   # the version stays one number across a checkout's commits
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": opset,
        "python": platform.python_version(),
        "created": created_time(),
        key: source,
        "training": training or {},
    }


__all__ = ["export_checkpoint", "export_model", "exported_as", "provenance", "export_module", "export_spec", "ExportSpec", "GraphSpec", "compare", "gate_graph",
           "DEFAULT_OPSET"]
