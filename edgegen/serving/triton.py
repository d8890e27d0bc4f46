"""`edgegen triton`: a Triton Inference Server model repository from packages (docs/serving.md).

Two routes, chosen per package:
- graph: a family whose generation is one graph call (Family.served_graph: the GAN generator,
  the VAE decoder, a bring-your-own-model graph). Triton's ONNX Runtime backend serves the ONNX
  file itself, or its TensorRT backend an engine built here (on the device that will serve
  it); or edgegen's Python-backend model runs the same graph with the same inputs and outputs.
  Requests are batched along the first dim, so Triton's dynamic batcher merges them.
- pipeline: a family whose generation is a loop (diffusion samplers, GPT, WaveNet, PixelCNN):
  a Python-backend model runs the family's pipeline on a copy of the package. Requests carry
  the pipeline's arguments (serving/requests.py); GPT streams through Triton's decoupled mode.
  A pipeline that can merge requests (diffusion's sample_batched) takes them as rows of a
  batch, and the dynamic batcher hands it several at once.

Each model folder is written under a temporary name and renamed into place, so a failed run
leaves the repository as it was. Runtime code: no torch, no onnx, no Triton packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from ..errors import ConfigError, OutputExistsError, PackageBusyError
from ..external_data import external_data_files
from ..families import get as get_family
from ..families import package_config, require_offered_precision
from ..package import (CHECKPOINT_WEIGHTS, MANIFEST_NAME, PRECISIONS, Package, TensorSpec, check_name, copy_package,
                       fp32_graphs_note, name_from_folder)
from ..runtimes.backends import KNOWN_BACKENDS
from ..runtimes import warn_of_variant_gates
from ..shipped import resolve as resolve_shipped
from ..storage import (KILLED_WRITERS_LEFTOVER, atomic_write_text, clean_leftover, refuse_empty, refuse_output_folder,
                       refuse_replacing_other, resolved, staged_directory)
from .requests import COUNT_INPUTS, TRITON_TYPES, Field, served

MODEL_CONFIG = "config.pbtxt"   # what every Triton model folder holds: the folders --force may replace
MODEL_FOLDER = "a Triton model folder"
MODEL_VERSION = "1"              # the one version edgegen writes in a model folder


def model_folder_files(folder: Path) -> set[str]:
    """What edgegen writes in a model folder: its config and its one version, 1/. Another numbered
    version (a user's 2/ beside it) is the user's, and --force refuses to delete it."""
    return {MODEL_CONFIG, MODEL_VERSION}


ROUTES = ("graph", "pipeline")
GRAPH_BACKENDS = ("onnxruntime", "tensorrt", "python")
# Triton's onnxruntime backend's `optimization { graph { level } }`: -1 basic, 1 basic and extended
# (its README; 2 turns all off, and leaving it out runs all)
TRITON_ORT_LEVELS = {"basic": -1, "extended": 1}
KINDS = ("cpu", "gpu")
MODEL_SHIM = '''"""A Triton Python-backend model written by `edgegen triton`: edgegen's own model class runs
the package in package/ (edgegen's runtime must be importable by this server's Python)."""

try:
    from edgegen.serving.triton_model import TritonPythonModel  # noqa: F401
except ModuleNotFoundError as exc:   # said in the server's log as what to do, not as a bare import error
    if exc.name != "edgegen":
        raise
    raise ModuleNotFoundError("edgegen: expected edgegen's runtime in this Triton server's Python, found none: install "
                              "it there (pip install the edgegen wheel; see edgegen's docs/serving.md, 'The server's "
                              "Python')", name="edgegen") from None
'''


@dataclass(frozen=True)
class RepositoryOptions:
    """How each model is served (`edgegen triton`'s options)."""

    route: str | None = None            # None: graph where the family has a served graph, else pipeline
    graph_backend: str = "onnxruntime"  # who runs a graph-route model: Triton's ORT or TensorRT backend, or Python
    max_batch_size: int = 16            # graph route: the most items Triton merges into one call
    dynamic_batching: bool = True
    # how long the batcher waits for more requests: 0 merges what is queued and adds no latency
    # when requests are few (benchmarks/triton_load.py: 2000 cost a lone GAN request 2 ms)
    queue_delay_us: int = 0
    instances: int = 1                  # model instances Triton runs side by side
    kind: str = "cpu"                   # where they run: KIND_CPU or KIND_GPU
    precision: str = "fp32"             # or a variant `edgegen optimize` wrote
    backend: str = "auto"               # edgegen's backend inside a Python-backend model
    # ONNX Runtime threads per instance, of a Python-backend model or Triton's onnxruntime backend;
    # 0: a Python-backend instance takes its share of the cores it may use (cpus.shared_threads),
    # Triton's onnxruntime backend its own default (a thread per physical core, per instance)
    threads: int = 0
    # a pipeline-route request's largest count (its n, num_samples or max_new_tokens: requests.COUNT_INPUTS);
    # 0: no cap, a request of 60,000 audio samples holds its instance for the requests behind it
    max_count: int = 0

    def problems(self) -> list[str]:
        problems = []
        if self.route is not None and self.route not in ROUTES:
            problems.append(f"route: expected one of {', '.join(ROUTES)}, found {self.route!r}")
        if self.graph_backend not in GRAPH_BACKENDS:
            problems.append(f"graph_backend: expected one of {', '.join(GRAPH_BACKENDS)}, found {self.graph_backend!r}")
        if self.kind not in KINDS:
            problems.append(f"kind: expected one of {', '.join(KINDS)}, found {self.kind!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision: expected one of {', '.join(PRECISIONS)}, found {self.precision!r}")
        if self.backend not in KNOWN_BACKENDS:
            problems.append(f"backend: expected one of {', '.join(KNOWN_BACKENDS)}, found {self.backend!r}")
        for name, low in (("max_batch_size", 1), ("instances", 1), ("queue_delay_us", 0), ("threads", 0), ("max_count", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name}: expected an integer of at least {low}, found {value!r}")
        return problems


@dataclass(frozen=True)
class ServedModel:
    """One model written into the repository."""

    name: str
    route: str
    backend: str          # Triton's backend: onnxruntime, tensorrt or python
    max_batch_size: int
    streams: bool
    folder: Path


def model_name(package: Package) -> str:
    """The package's name as a Triton model name: as export takes it, the name rule's (an older
    package's default name from its folder, sanitized as export now sanitizes one)."""
    return name_from_folder(package.manifest.name)


def _model_names(packages: list[Package], given: list[str] | None) -> list[str]:
    """The model folder of each package: the name given for it, else its own; two of one name refused."""
    if given is not None:
        if isinstance(given, str) or len(given) != len(packages):
            found = repr(given) if isinstance(given, str) else len(given)
            raise ConfigError(f"names (--name): expected one per package, in order ({len(packages)}), found {found}")
        for name in given:
            check_name("" if name is None else name)   # None is check_name's "no name given"
    names = [model_name(p) for p in packages] if given is None else list(given)
    for name in {n for n in names if names.count(n) > 1}:
        how = "" if given is not None else " (--name gives each its own: the same package at two precisions, two versions)"
        raise ConfigError(f"model {name!r}: expected one package per model name, found {names.count(name)} packages "
                          f"named so{how}")
    return names


def write_repository(packages: list[str], out: str | Path, options: RepositoryOptions = RepositoryOptions(),
                     overwrite: bool = False, report=print, names: list[str] | None = None) -> list[ServedModel]:
    """A model folder in `out` for each package (a path or a shipped model's name), named by
    `names` (one per package, in order) or else by each package's name. A folder that exists
    already is refused unless `overwrite`; every package is checked before any is written."""
    problems = options.problems()
    if problems:
        raise ConfigError(problems[0])   # named by its keyword, which the command line says as its flag
    opened = [Package(resolve_shipped(p)) for p in packages]
    names = _model_names(opened, names)
    refuse_empty(out, "output")   # the working folder, which the hint would then name as ''
    resolved(out, "output")   # a symbolic-link loop said here, before anything resolves it
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {str(out)!r}: expected a model repository directory, found a file")
    if (out / MANIFEST_NAME).is_file() or (out / CHECKPOINT_WEIGHTS).is_file():
        raise OutputExistsError(f"output {str(out)!r}: expected a model repository directory, found an edgegen "
                                f"{'package' if (out / MANIFEST_NAME).is_file() else 'checkpoint'}: choose another output")
    for package in opened:   # a repository inside a package would be copied into its own pipeline-route model
        if out.resolve().is_relative_to(package.path.resolve()):
            raise OutputExistsError(f"output {str(out)!r}: expected a model repository outside the packages it serves, "
                                    f"found it inside {str(package.path)!r}")
    _refuse_inside_edgegen_folder(out)
    plans = [_plan(package, name, out / name, options) for package, name in zip(opened, names)]   # refusals before writing
    if unused := _options_no_model_takes(options, plans):
        raise ConfigError(f"edgegen triton: expected options that some model of this run takes, found {unused[0]}")
    reads = [p.path for p in opened]   # no model folder replaced may hold a package the run reads
    if out.is_dir():   # first: a model folder it restores (a killed write's only copy) is checked as any other
        _clean_killed_writes(out, report)
    def losing(plan) -> None:   # what a replacement would lose that is not edgegen's: --force does not help
        refuse_replacing_other(out / plan.name, MODEL_CONFIG, MODEL_FOLDER, reads, model_folder_files)
        _refuse_losing_changes(out / plan.name, config_text(plan, options))

    # every folder checked before any is replaced, a read-only one too, each said in one run, not one per run
    _refused_together(plans, losing)
    _refused_together(plans, lambda plan: refuse_output_folder(out / plan.name, overwrite, MODEL_CONFIG, MODEL_FOLDER,
                                                                reads, model_folder_files))
    for package, plan in zip(opened, plans):   # built, or found in the cache, before any folder is written
        if plan.backend == "tensorrt":
            _engine(package, plan, options, report)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return [_write_and_say(package, plan, options, out, overwrite, reads, report)
                for package, plan in zip(opened, plans)]
    except BaseException:
        if created:   # a failure writing the first model leaves no empty repository behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _write_and_say(package: Package, plan: _Plan, options: RepositoryOptions, out: Path, overwrite: bool,
                   reads: list[Path], report) -> _Plan:
    with staged_directory(out / plan.name, overwrite=overwrite, holds=MODEL_CONFIG, kind=MODEL_FOLDER,
                          reads=reads, owns=model_folder_files) as stage:
        _write_model(package, plan, options, stage)
    report(f"{plan.name}: {plan.route} route, Triton's {plan.backend} backend"
           + (f", batches of up to {plan.max_batch_size}" if plan.max_batch_size else "")
           + (", decoupled (streams)" if plan.streams else ""))
    if plan.route == "pipeline" and (note := fp32_graphs_note(options.precision, package.fp32_graphs(options.precision))):
        report(f"{plan.name}: {note}")
    tokenizer = package.config.get("tokenizer")
    if plan.route == "pipeline" and isinstance(tokenizer, dict) and tokenizer.get("kind") == "bpe":
        # its Python backend imports tokenizers: said here, not at the server's first load
        report(f"{plan.name}: its Python backend needs edgegen's text extra in the server's Python "
               "(the tokenizers library, for its Hugging Face tokenizer)")
    return plan


# the first line of a config.pbtxt edgegen writes (a protobuf text comment, which Triton skips):
# the hash of the lines below it, so that --force tells a config changed by hand from its own
CONFIG_MARK = "# written by edgegen triton; --force replaces it only as written (sha256 of the lines below: {})"
CONFIG_MARK_LINE = re.compile(r"^# written by edgegen triton; .*\(sha256 of the lines below: ([0-9a-f]{64})\)$")
# what Triton's Python backend adds in a version folder (its stub imports model.py)
SERVER_MADE = {"__pycache__"}


def _marked(text: str) -> str:
    return CONFIG_MARK.format(_config_hash(text)) + "\n" + text


def _config_hash(text: str) -> str:
    return hashlib.sha256(text.rstrip("\n").encode()).hexdigest()   # a trailing newline an editor adds is no change


def _refuse_losing_changes(folder: Path, written_now: str) -> None:
    """--force replaces a model folder whole: refused where that would lose what an operator
    changed or added in it (instance_group or batching tuned in config.pbtxt, notes in 1/), which
    the folder-level check (only config.pbtxt and 1/ in it) does not see."""
    config = folder / MODEL_CONFIG
    if config.is_file():
        _refuse_a_changed_config(folder, config.read_text(errors="replace"), written_now)
        _refuse_files_of_yours_in_the_version(folder)


def _refuse_a_changed_config(folder: Path, text: str, written_now: str) -> None:
    """A config as edgegen wrote it (its mark's hash holds), or the same as this run writes (an
    older edgegen's, unmarked), loses nothing; any other is the operator's."""
    first, _, rest = text.partition("\n")
    mark = CONFIG_MARK_LINE.match(first)
    body = rest if mark else text
    if body.rstrip("\n") != written_now.rstrip("\n") and (mark is None or _config_hash(rest) != mark[1]):
        if mark is None and "edgegen_" in body:   # its parameters: an edgegen from before the mark wrote it
            raise OutputExistsError(
                f"output {str(folder)!r}: expected its {MODEL_CONFIG} as edgegen triton wrote it, found an older "
                "edgegen's (no mark: written before edgegen marked its configs), which differs from what this run "
                "writes, by what this edgegen serves (new request inputs) or by a change of yours, which replacing "
                f"the folder would lose: where nothing in it is yours, move it out of the repository, where Triton "
                f"would load it as a model (mv {str(folder)!r} {str(_aside(folder))!r}), and run again; else set your "
                "change with edgegen triton's options")
        found = "no mark of edgegen's (written by hand, or by an older edgegen)" if mark is None else "it changed since"
        raise OutputExistsError(f"output {str(folder)!r}: expected its {MODEL_CONFIG} as edgegen triton wrote it, found "
                                f"{found}: replacing the folder would lose that; set what you changed with edgegen "
                                "triton's options (--instances, --max-batch-size, --queue-delay-us, --kind, --threads), "
                                "or move the folder aside yourself")


def _refused_together(plans: list, check: Callable) -> None:
    """check(plan) for every model folder, its OutputExistsErrors raised as one."""
    refused = []
    for plan in plans:
        try:
            check(plan)
        except OutputExistsError as exc:
            refused.append(str(exc))
    if refused:
        raise OutputExistsError("; and ".join(refused))


def _aside(folder: Path) -> Path:
    """Where a model's folder goes out of its repository: beside the repository, named by both."""
    repository = folder.parent.resolve()
    return repository.parent / f"{repository.name}.{folder.name}.old"


def _refuse_files_of_yours_in_the_version(folder: Path) -> None:
    version = folder / MODEL_VERSION
    written = {"model.py", "package", "model.onnx", "model.plan", *SERVER_MADE}
    if (version / "model.onnx").is_file():
        written |= set(external_data_files(version / "model.onnx"))
    if version.is_dir() and (other := sorted(e.name for e in version.iterdir() if e.name not in written)):
        raise OutputExistsError(f"output {str(folder)!r}: expected only what edgegen writes in version {MODEL_VERSION}/, "
                                f"found {', '.join(other[:4])}{', ...' if len(other) > 4 else ''} there, which replacing "
                                "the folder would delete: move them out, or move the folder aside yourself")


def _clean_killed_writes(out: Path, report) -> None:
    """What a killed edgegen triton left in the repository (a model's staging folder, an old one
    moved aside) is a folder Triton tries to load as a model, failing the server's start: removed
    before this run writes, whichever models it names (one another edgegen writes now is its own)."""
    for entry in sorted(out.iterdir()):
        leftover = KILLED_WRITERS_LEFTOVER.match(entry.name)
        if not leftover or not (entry.exists() or entry.is_symlink()):   # gone with an earlier one of its model
            continue
        if not killed_write(entry):   # a hidden folder of the user's, named alike: theirs
            continue
        model = out / leftover["name"]
        there = model.exists()
        with contextlib.suppress(PackageBusyError):
            clean_leftover(entry)
            report(f"restored {model.name} from {entry.name}, the only copy of it, moved aside by a killed edgegen triton"
                   if not there and model.exists() else
                   f"removed {entry.name}, left by a killed edgegen triton (Triton would load it as a model)")


def killed_write(entry: Path) -> bool:
    """Whether a repository's entry is what a killed edgegen triton left: a KILLED_WRITERS_LEFTOVER
    name on a temporary file, a staging folder (mkdtemp's random name), or a model folder moved
    aside (it holds a config.pbtxt); a user's own hidden folder may be named like the last
    (.notes.20261206.old) or like a file (.x.tmp), and is theirs."""
    if not KILLED_WRITERS_LEFTOVER.match(entry.name):
        return False
    if entry.name.endswith(".tmp"):
        return entry.is_file() or entry.is_symlink()
    return entry.name.endswith(".partial") or (entry / MODEL_CONFIG).is_file()


def _refuse_inside_edgegen_folder(out: Path) -> None:
    """A repository inside another package, a checkpoint or a model folder would be taken for a part of
    it (and a model folder's version 1/ would hold other models)."""
    for folder in (out.resolve(), *out.resolve().parents):
        for holds, what in ((MANIFEST_NAME, "an edgegen package"), (CHECKPOINT_WEIGHTS, "an edgegen checkpoint"),
                            (MODEL_CONFIG, "a Triton model folder")):
            if (folder / holds).is_file():
                raise OutputExistsError(f"output {str(out)!r}: expected a model repository of its own, found it in "
                                        f"{what}, {str(folder)!r}: choose another output")


@dataclass(frozen=True)
class _Plan(ServedModel):
    graph: str | None = None
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    # Triton's onnxruntime backend's graph optimization level, where the variant turns optimizers off
    # by name (Package.level_without_disabled): an fp16 graph's NCHWc layout crashed the server's process
    ort_level: str | None = None


def _plan(package: Package, name: str, folder: Path, options: RepositoryOptions) -> _Plan:
    """What the model folder of `package` will hold; a package that cannot be served so is refused here."""
    family, config = package_config(package)
    require_offered_precision(package, options.precision)   # else the advice to optimize, which would refuse it
    if options.precision != "fp32":   # said here: a graph-route model never passes through edgegen.load
        warn_of_variant_gates(package, options.precision)
    route = options.route or ("graph" if family.served_graph else "pipeline")
    if route == "pipeline" and (missing := package.missing_variants(options.precision)):
        raise ConfigError(missing)
    if route == "graph":
        part = family.served_graph
        if part is None or part not in package.graphs:
            raise ConfigError(f"package {str(package.path)!r}: the graph route expected a family whose generation is one "
                              f"graph call, found family {family.name!r}, whose generation is more than one graph call (a loop, or graphs in "
                              "turn, as StyleGAN's mapping and synthesis): use --route pipeline")
        if missing := package.missing_variants(options.precision, part):
            raise ConfigError(missing)
        entry = package.graphs[part]
        # Triton merges requests along the first dim: only where every tensor's is the batch dim
        batched = all(t.shape and t.shape[0] == "batch" for t in (*entry.inputs, *entry.outputs))
        max_batch = _engine_batch(package, part, options) if batched else 0
        return _Plan(name, "graph", options.graph_backend, max_batch, False, folder, part,
                     tuple(_graph_field(t, batched) for t in entry.inputs),
                     tuple(_graph_field(t, batched) for t in entry.outputs),
                     package.level_without_disabled(options.precision, part))
    # every request would fail, as the client's mistake
    family.refuse_tensorrt_for_its_loop(options.backend, "serve it on ort-cuda or ort-tensorrt")
    request = served(get_family(family.name), config)
    # a pipeline that merges requests takes them batched (each request one row); Triton's
    # batcher, where it is on, hands it several at once
    max_batch = options.max_batch_size if request.answer_many is not None else 0
    return _Plan(name, "pipeline", "python", max_batch, request.streams, folder, None, request.inputs, request.outputs)


def _options_no_model_takes(options: RepositoryOptions, plans: list[_Plan]) -> list[str]:
    """Options set away from their defaults that apply to no model of the run (each applies to
    some routes or backends only; a run of several packages may set one for some of them):
    refused, not ignored without a word."""
    default = RepositoryOptions()
    python = [p for p in plans if p.backend == "python"]
    batching = [p for p in plans if p.max_batch_size > 0]
    served = ", ".join(f"{p.name}: {p.route} route, {p.backend} backend" for p in plans)
    unused = []
    if options.graph_backend != default.graph_backend and not any(p.route == "graph" for p in plans):
        unused.append(f"graph_backend (--graph-backend) {options.graph_backend!r}, which runs a graph-route model ({served})")
    if options.backend != default.backend and not python:
        unused.append(f"backend (--backend) {options.backend!r}, edgegen's backend inside a Python-backend model ({served})")
    if options.max_batch_size != default.max_batch_size and not batching:
        unused.append(f"max_batch_size (--max-batch-size) {options.max_batch_size}, where no model merges requests "
                      f"({served}; a loop that streams, or a graph without a batch dim, takes them one at a time)")
    if options.kind != default.kind and not any(p.backend == "onnxruntime" for p in plans):
        unused.append(f"kind (--kind) {options.kind!r}, the device of an ONNX Runtime graph-route model's instances, "
                      f"where there is none ({served}; a Python-backend model runs on its --backend, a TensorRT plan "
                      "on the GPU)")
    if options.threads != default.threads and not any(p.backend in ("python", "onnxruntime") for p in plans):
        unused.append(f"threads (--threads) {options.threads}, ONNX Runtime's threads in a Python-backend or ONNX "
                      f"Runtime graph-route model, where there is none ({served}; a TensorRT plan runs on the GPU)")
    if not options.dynamic_batching and not batching:
        unused.append(f"dynamic_batching off (--no-dynamic-batching), where no model merges requests ({served})")
    if options.max_count and not any(f.name in COUNT_INPUTS for p in python if p.route == "pipeline" for f in p.inputs):
        unused.append(f"max_count (--max-count) {options.max_count}, a pipeline-route request's largest count, where no "
                      f"model takes one ({served}; a graph route's requests are capped by --max-batch-size)")
    if options.queue_delay_us != default.queue_delay_us and not (options.dynamic_batching and batching):
        unused.append(f"queue_delay_us (--queue-delay-us) {options.queue_delay_us}, the dynamic batcher's wait, where "
                      f"{'it is off' if not options.dynamic_batching else 'no model merges requests'}")
    return unused


def _engine_batch(package: Package, part: str, options: RepositoryOptions) -> int:
    """The batch Triton may form: the option's, and for a TensorRT engine no more than its profile's largest."""
    if options.graph_backend != "tensorrt":
        return options.max_batch_size
    from ..runtimes.engines import load_profiles

    profile = load_profiles(package, options.precision)[part]   # an engine built with --profile: its own
    first = package.graphs[part].inputs[0].name
    highest = next(high[0] for tensor, _, _, high in profile if tensor == first)
    return min(options.max_batch_size, int(highest))


def _graph_field(spec: TensorSpec, batched: bool) -> Field:
    dims = tuple(-1 if isinstance(d, str) else int(d) for d in spec.shape)
    return Field(spec.name, spec.dtype, dims[1:] if batched else dims, required=True, form="array")


def _write_model(package: Package, plan: _Plan, options: RepositoryOptions, folder: Path) -> None:
    version = folder / MODEL_VERSION
    version.mkdir()
    if plan.backend == "python":
        atomic_write_text(version / "model.py", MODEL_SHIM)
        # a repository Triton's user can read, --force replace; with the one precision it serves
        copy_package(package.path, version / "package", precisions=[options.precision])
    elif plan.backend == "onnxruntime":
        graph = package.graph_path(plan.graph, options.precision)
        shutil.copyfile(graph, version / "model.onnx")
        for location in external_data_files(graph):   # the graph names them relative to itself
            shutil.copyfile(graph.parent / location, version / location)
    else:
        (version / "model.plan").write_bytes(_engine(package, plan, options, report=lambda line: None))
    atomic_write_text(folder / MODEL_CONFIG, _marked(config_text(plan, options)))


def _engine(package: Package, plan: _Plan, options: RepositoryOptions, report) -> bytes:
    """The TensorRT engine of a tensorrt-backend model's graph, from edgegen's engine cache (built
    there on a miss). write_repository asks for each before writing any folder, so that a machine
    without TensorRT, or a graph it cannot build, is refused with the repository as it was."""
    from ..runtimes.engines import cached_engines

    return cached_engines(package.path, options.precision, report=report)[plan.graph][1]


def config_text(plan: _Plan, options: RepositoryOptions) -> str:
    """The model's config.pbtxt: the protobuf text form of Triton's ModelConfig."""
    backend = {"onnxruntime": 'backend: "onnxruntime"\ndefault_model_filename: "model.onnx"',
               "tensorrt": 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"',
               "python": 'backend: "python"'}[plan.backend]
    lines = [f'name: "{plan.name}"', backend, f"max_batch_size: {plan.max_batch_size}",
             "input [", ",\n".join(_tensor(f, optional=not f.required) for f in plan.inputs), "]",
             "output [", ",\n".join(_tensor(f) for f in plan.outputs), "]"]
    if plan.max_batch_size and options.dynamic_batching:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}")
    if plan.streams:
        lines.append("model_transaction_policy { decoupled: true }")
    # TensorRT plans run on GPU instances only; a Python-backend model picks its device itself
    kind = "KIND_GPU" if plan.backend == "tensorrt" or (options.kind == "gpu" and plan.backend != "python") else "KIND_CPU"
    lines.append(f"instance_group [ {{ count: {options.instances} kind: {kind} }} ]")
    if plan.backend == "onnxruntime" and plan.ort_level:   # the backend's levels: -1 basic, 1 extended, 2 none
        lines.append(f"optimization {{ graph {{ level: {TRITON_ORT_LEVELS[plan.ort_level]} }} }}")
    if plan.backend == "python":
        parameters = {"edgegen_route": plan.route, "edgegen_graph": plan.graph or "", "edgegen_backend": options.backend,
                      "edgegen_threads": str(options.threads), "edgegen_precision": options.precision,
                      **({"edgegen_max_count": str(options.max_count)} if options.max_count else {})}
    elif plan.backend == "onnxruntime" and options.threads:
        parameters = {"intra_op_thread_count": str(options.threads)}   # the backend's own key
    else:
        parameters = {}
    lines += [f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}' for k, v in parameters.items()]
    return "\n".join(lines) + "\n"


def _tensor(field: Field, optional: bool = False) -> str:
    # Triton needs at least one dim beyond the batch: a tensor of one value per item ([batch],
    # cGAN's labels) travels as [batch, 1] and reaches the model reshaped to [batch]
    dims = ", ".join(str(d) for d in field.dims) or "1"
    reshape = " reshape: { shape: [ ] }" if not field.dims else ""
    return (f'  {{ name: "{field.name}" data_type: {TRITON_TYPES[field.dtype]} dims: [ {dims} ]{reshape}'
            + (" optional: true" if optional else "") + " }")
