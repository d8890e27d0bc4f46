"""The family registry: every model family edgegen serves, built in or brought by a user's package.

A family is one folder (docs/architecture.md): its torch side (model, trainer, export spec)
and its runtime side (pipeline, typed runtime config) in separate modules, and one
`Family` declaration in its `__init__.py` that registers everything else about it: its
`edgegen generate` options, demo models and showcase, bench mode, variant gate and the
limits of its dynamic dims. The shared modules (CLI, demo, bench, optimize, engines, check)
iterate this registry and name no family.

Built-in families are the sub-packages of this package. Another Python package registers
its own through the entry-point group ``edgegen.families`` (each entry point names a
`Family` object), or by calling `register()` before use. docs/adding-a-family.md walks
through one.

Runtime code: nothing here imports torch or onnx. The torch side of a family is named by
module path and imported only when training or export asks for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import sys
import threading
import types
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import (CheckpointError, ConfigError, EdgegenWarning, ManifestError, PackageError, UnknownFamilyError, described,
                      not_one_of)
from ..shipped import checkpoints_dir
from ..training.data import BUILTIN_IMAGE_DATA

ENTRY_POINT_GROUP = "edgegen.families"
PRETRAINED = checkpoints_dir()   # the built-in families' shipped checkpoints (the edgegen-models distribution)


# -- the typed runtime config ----------------------------------------------------------------

@dataclass
class RuntimeConfig:
    """Base of each family's runtime config: the settings its pipeline needs, written into the
    manifest by the export and checked field by field when a package is loaded.

    Subclasses declare typed fields (int, float, str, bool, list[int], list[float], dict,
    `X | None`) and may add `problems()` for values no type can rule out."""

    @classmethod
    def from_manifest(cls, values: Any, where: str) -> "RuntimeConfig":
        """The config from a manifest's `config` object; a missing key, a wrong type or an
        impossible value is a ManifestError that names the field."""
        if not isinstance(values, dict):
            raise ManifestError(f"{where}: expected an object, found {type(values).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ManifestError(f"{where}: missing required field {f.name!r} of a {cls.__name__}")
                continue
            kwargs[f.name] = _typed(values[f.name], hints[f.name], f"{where}.{f.name}")
        config = cls(**kwargs)
        problems = config.problems()
        if problems:
            raise ManifestError(f"{where}: " + "; ".join(problems))
        return config

    def problems(self) -> list[str]:
        """Values that have the right type but are impossible ("image_shape expected 3 positive dims, ...")."""
        return []

    def graph_problems(self, graphs: dict) -> list[str]:
        """Values that disagree with the package's graphs ({part: GraphEntry}): a vocabulary the
        logits do not have, a layer count the cache inputs do not match. Found at load time,
        not as a wrong result or a huge allocation on the first call."""
        return []

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _typed(value: Any, kind: Any, where: str) -> Any:
    """`value` checked against the annotation `kind` (JSON's types: lists for tuples, ints for floats)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for member in (a for a in args if a is not type(None)):
            try:
                return _typed(value, member, where)
            except ManifestError as exc:
                errors.append(str(exc))
        raise ManifestError(errors[0] if len(errors) == 1 else f"{where}: expected one of {kind}, found {value!r:.60}")
    if origin is list or kind is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected a list, found {type(value).__name__} {value!r:.60}")
        return [_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is tuple or kind is tuple:   # JSON's list; tuple[float, float] of that length, tuple[int, ...] any
        if not isinstance(value, (list, tuple)):
            raise ManifestError(f"{where}: expected a list, found {type(value).__name__} {value!r:.60}")
        if not args or args[-1] is Ellipsis:
            return tuple(_typed(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value))
        if len(value) != len(args):
            raise ManifestError(f"{where}: expected a list of {len(args)} values, found {len(value)}: {value!r:.60}")
        return tuple(_typed(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, found {type(value).__name__} {value!r:.60}")
        return value
    if kind is Any or kind is object:
        return value
    # a family author's annotation, said when its first package is written or read (a bare `set`
    # passed here and failed in json.dumps, after the export's work: review 172)
    if not isinstance(kind, type) or kind not in (int, float, str, bool):
        raise ConfigError(f"{where}: expected a RuntimeConfig field annotated int, float, str, bool, list[...], "
                          f"tuple[...], dict or X | None, found {kind!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ManifestError(f"{where}: expected {kind.__name__}, found {type(value).__name__} {value!r:.60}")
    return value


def positive(config: RuntimeConfig, *names: str) -> list[str]:
    """Problems for the named int fields (or list fields, item by item) that are not positive."""
    problems = []
    for name in names:
        value = getattr(config, name)
        items = value if isinstance(value, list) else [value]
        if not items or any(v is None or v <= 0 for v in items):
            problems.append(f"{name} expected positive, found {value!r}")
    return problems


# -- the declaration ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One option a family's command takes: `--flag` on the command line, `keyword` in its
    pipeline's Python call. `kwargs` go to argparse (type, choices, metavar, action)."""

    flag: str
    keyword: str
    help: str
    kwargs: dict = field(default_factory=dict)
    default: Any = None       # applied when the flag is not given (and shown in the help)
    # the checkpoint config field that records a training option's value (ControlNet's --base:
    # base_checkpoint), which `train --init` takes for it (a path gone: the shipped checkpoint of its
    # name, else refused)
    recorded_as: str | None = None
    # whether a served request (edgegen triton) carries it: not a file on the client's disk, nor a cap
    # the server's work keeps that a client could lift
    served: bool = True

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def label_option(default: str) -> Option:
    """--label, the families with classes': its text as given, a class's name (a folder's subfolder)
    or its id, which the pipeline tells apart (runtimes.pipeline.class_labels: a name first, since
    subfolders named "0" to "12" sort as 0, 1, 10, ..., and --label 2 is the one named 2). A served
    request's labels are ids (serving.requests.option_field)."""
    return Option("--label", "labels", "class to generate: its id, or its name where the classes have names (a "
                                       f"folder's subfolders) (default: {default})")


@dataclass(frozen=True)
class DemoModel:
    """A shipped checkpoint the demo runs: its name among the shipped checkpoints (PRETRAINED) and how it
    was trained."""

    name: str
    data: str
    checkpoints: dict = field(default_factory=dict)   # train keyword -> the demo model it builds on (a ControlNet's base)
    folder: str | None = None    # where its shipped checkpoint lies (default: PRETRAINED)

    def command(self, family: str) -> str:
        """The command that trains it again, into the user's ckpt/ (a shipped checkpoint lies in an
        installed distribution's folder, not one to write into), a model it builds on from there too."""
        extra = "".join(f" --{k.replace('_', '-')} ckpt/{v}" for k, v in self.checkpoints.items())
        return f"edgegen train {family} --data {self.data}{extra} --out ckpt/{self.name}"


@dataclass
class GenerateRequest:
    """What `edgegen generate` hands a family's generate hook."""

    n: int
    seed: int
    out: str | None
    options: dict                          # keyword -> value: the family's options given, and their defaults
    write_images: Callable[[Any], str]     # images [n, C, H, W] -> a PNG grid at `out`; returns the line to print
    seed_given: bool = False               # --seed on the command line (seed is 0 without it)


@dataclass(frozen=True)
class GenerationCall:
    """One whole generation as `edgegen bench` times it beside the graphs (a sampling loop of many
    graph calls): the call, the results it makes (`count` `unit`), and what it is, for the report."""

    call: Callable[[], Any]
    count: int
    unit: str      # "images", "audio samples"
    what: str      # "8 images, 20 steps of ddim"
    steps: int | None = None   # the sampler's steps it runs; None: a loop without them (PixelCNN's pixels)


# graphs: one call of each graph; tokens: whole greedy generations (the pipeline's context, generate and stream,
# its decode_read_bytes(tokens) for the memory-bandwidth bound, and for --vs-torch the model's
# greedy_cached(prompts, new_tokens))
BENCH_MODES = ("graphs", "tokens")
# how a variant's outputs are compared with fp32's: PSNR; top-1 agreement of logits; PSNR and,
# of a graph giving a flow's z and logdet, the log densities anomaly scores rank by; PSNR and, of
# a sampling model's logits over classes on axis 1, the KL divergence of its distributions
# of an output that is a base the graph computes from its input plus what the model learned (SR's
# bilinear upscale and its correction): PSNR and the learned part kept (gate_base gives the base)
GATE_KINDS = ("psnr", "logits", "density", "categorical", "detail")


@dataclass(frozen=True)
class Family:
    """Everything edgegen needs to know about one family, beside its code."""

    name: str
    summary: str                         # one line: what the model is
    pipeline: type                       # the runtime Pipeline subclass (numpy over sessions)
    config: type[RuntimeConfig]          # what the export writes into the manifest and the pipeline reads
    graphs: tuple[str, ...] = ()         # the graphs every package of the family has: one missing is refused at load
    data: str = "digits (default), natural, or a folder of your images"   # what `edgegen train --data` takes
    # the --data names its training reads as built-in data, never as a path, even with a folder of that
    # name in the working directory (so --force may replace such a folder: training does not read it)
    builtin_data: tuple[str, ...] = BUILTIN_IMAGE_DATA
    model: str | None = None             # module path of the torch side: Config, build, Trainer, DEFAULT_*
    export: str | None = None            # module path of the export spec (its SPEC)
    options: tuple[Option, ...] = ()     # `edgegen generate` options, beyond --n, --seed, --out
    train_options: tuple[Option, ...] = ()   # `edgegen train` options beyond the common ones
    generate: Callable | None = None     # the CLI's generate (pipe, request); None: a PNG grid of pipe(n, ...)
    # (options, out) -> None: what generate refuses without a package (a required option missing, --out's
    # format), run before one loads or a shipped name's first export; `generate` may then rely on it
    check_generate: Callable[[dict, str | None], None] | None = None
    grid_flags: bool = True              # whether `edgegen generate` --n, --nrow and --scale apply (an image grid)
    seeded: bool = True                  # whether --seed applies (False: the input alone sets the result)
    demo: tuple[DemoModel, ...] = ()
    showcase: str | None = None          # "module:function" (pipe, folder, name) -> (results dict, Markdown lines)
    bench: str = "graphs"
    # the graph outputs that are pictures, by name: bench gives their megapixels per second (None: any
    # float output shaped [N, 1|3|4, H, W], as a user's module's; a UNet's prediction or a latent is not one)
    picture_outputs: tuple[str, ...] | None = None
    gate: str = "psnr"
    # gate "detail": "module:function" (feed, fp32's outputs) -> {output: the base the model adds its learned part to}
    gate_base: str | None = None
    bench_row: str = "sample"            # what one batch row of a graph call is, in bench's table's rate
    # the graphs a generation calls once per step of its loop (a denoiser, WaveNet's step, PixelCNN's
    # row): bench counts their rows as steps ("sample steps/s"), not as whole samples made
    step_graphs: tuple[str, ...] = ()
    dim_limits: Callable[[Any], dict[str, int]] | None = None   # runtime config -> largest value of each dynamic dim
    # runtime config -> smallest value of the dynamic dims it records one for (a user's module: the
    # least its export checked); the others' is package.least_size's default
    dim_minimums: Callable[[Any], dict[str, int]] | None = None
    # runtime config -> the step of the dynamic dims whose sizes must be multiples of one (a user's
    # strided module: the least its export found the graph to match the module at); the others' is 1
    dim_multiples: Callable[[Any], dict[str, int]] | None = None
    fusion: Callable[[Any], dict] | None = None   # runtime config -> ONNX Runtime transformer-optimizer settings
    # "module:NAME" of an export.graph_rewrites.GraphForm: the form `edgegen optimize` gives the
    # variants it makes for ONNX Runtime targets (the GPT decoder's KV cache written in place)
    ort_form: str | None = None
    # transformers architectures this family imports (`edgegen export ARCH --from-transformers DIR`):
    # architecture -> "module:function" (architecture, folder, scratch) -> Checkpoint of this family
    # (files it needs beside the weights, a tokenizer, put in the scratch folder)
    importers: dict = field(default_factory=dict)
    # diffusers pipelines this family imports (`edgegen export --from-diffusers DIR`), by the class of
    # their unet: class -> "module:function" (folder, model_index, scratch) -> (Checkpoint, ExportSpec)
    diffusers_importers: dict = field(default_factory=dict)
    # runtime config -> {dynamic dim: size} bench uses where --shapes does not set a dim (default 1)
    bench_dims: Callable[[Any], dict[str, int]] | None = None
    # (pipeline, batch, steps) -> GenerationCall: a whole generation at the family's defaults (steps
    # None) or at `steps` sampler steps, which bench times after the graphs, for a family whose
    # generation is more than one graph call (a sampling loop, a model of two graphs); None: the
    # graphs' rows say it all
    bench_generation: Callable[[Any, int, int | None], GenerationCall] | None = None
    # (package, runtime config, count, seed, extra=0) -> (feeds with known next tokens: count batches,
    # then `extra` more over windows apart from theirs; their source; the feed of the call speed is
    # judged at; its description): what a token family's weight-only variants (optimize --precision
    # int4), and every variant of a package without a checkpoint, are calibrated, gated and timed on
    held_out_tokens: Callable[..., tuple] | None = None
    # "module:function" (reference, package) -> {graph: torch module}: what `bench --vs-torch REF` runs
    # for a family without checkpoints (default: the export spec's modules of a checkpoint)
    eager_modules: str | None = None
    # a tiny run for the family contract (edgegen.testing.check_family): {"train": train() options, "generate":
    # `edgegen generate` arguments ("{hint}" is an image file), "out": the file generate writes}
    smoke: dict = field(default_factory=lambda: {"train": {"steps": 2}})
    # commands of its own beside edgegen's ("edgegen upscale"): "module:function" (subparsers,
    # runtime_options) that adds each one's parser with its handler as `func`
    commands: tuple[str, ...] = ()
    # serving (edgegen triton, docs/serving.md): the graph whose one call is this family's
    # generation, which Triton's ONNX Runtime or TensorRT backend serves by itself (None: the
    # generation is a loop, served by a Python-backend model that runs the pipeline) ...
    served_graph: str | None = None
    # ... and the pipeline's request: "module:function" (runtime config) -> serving.Served;
    # None derives it from `options` (n, seed and each option a request can carry)
    serving: str | None = None
    # what of its generation binds ONNX Runtime's IO, which backend "tensorrt" has not ("the KV-cache
    # loop"): that generation needs an ONNX Runtime backend, so serving it on TensorRT is refused
    onnxruntime_loop: str | None = None
    order: int = 1000                    # where it stands in listings (built-ins first)

    def __post_init__(self):
        # a word of the command line and of folder names (`edgegen train NAME`, checkpoints/NAME)
        if not (isinstance(self.name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name)):
            raise ConfigError(f"family name: expected letters, digits, '.', '_' or '-', starting with a letter or "
                              f"digit, found {self.name!r}")
        if self.bench not in BENCH_MODES:
            raise ConfigError(f"family {self.name!r}: bench expected one of {BENCH_MODES}, found {self.bench!r}")
        if self.gate not in GATE_KINDS:
            raise ConfigError(f"family {self.name!r}: gate expected one of {GATE_KINDS}, found {self.gate!r}")
        if (self.gate == "detail") != (self.gate_base is not None):
            raise ConfigError(f"family {self.name!r}: gate_base expected with gate \"detail\" (the base output its "
                              f"learned part is judged against) and only with it, found gate {self.gate!r} and gate_base "
                              f"{self.gate_base!r}")
        if not (isinstance(self.config, type) and issubclass(self.config, RuntimeConfig)):
            raise ConfigError(f"family {self.name!r}: config expected a RuntimeConfig subclass, found {self.config!r}")
        # graphs=("encoder") (a comma left out) is the string, whose letters became graph names
        if not isinstance(self.graphs, (tuple, list)) or not all(isinstance(g, str) and g for g in self.graphs):
            raise ConfigError(f"family {self.name!r}: graphs expected a tuple of graph names, found {self.graphs!r:.60}")
        if self.generate is None and (untaken := _keywords_not_taken(self.pipeline, [o.keyword for o in self.options])):
            # `edgegen generate` calls pipe(n, seed=..., **options): failed there as edgegen's TypeError (review 172)
            raise ConfigError(f"family {self.name!r}: expected its options' keywords to be arguments of its pipeline's "
                              f"generation ({self.pipeline.__qualname__}.__call__ or sample), found "
                              f"{', '.join(map(repr, untaken))}, which it does not take (or give generate= a function)")
        _check_smoke(self.name, self.smoke)
        # a name misspelt here went unseen: bench's rate changed from steps to samples (review 172)
        # (a family without fixed graphs, the user's module's, has its package name them)
        for field_name in ("step_graphs", "served_graph") if self.graphs else ():
            named = getattr(self, field_name)
            unknown = [g for g in ((named,) if isinstance(named, str) else named or ()) if g not in self.graphs]
            if unknown:
                raise ConfigError(f"family {self.name!r}: {field_name} expected among its graphs "
                                  f"({', '.join(self.graphs) or 'none'}), found {', '.join(map(repr, unknown))}")

    def model_module(self) -> types.ModuleType:
        """The torch side: Config, build(config), Trainer, DEFAULT_STEPS/BATCH/LR, DATA_RANGE."""
        if self.model is None:
            raise UnknownFamilyError(f"family {self.name!r}: expected one that edgegen trains, found one without a "
                                     "training side (its Family declares no model=\"package.module\"; a module of your "
                                     "own exports with edgegen.export_pytorch or edgegen export --module)")
        module = _import_side(self.name, self.model)
        if missing := [name for name in MODEL_NAMES if not hasattr(module, name)]:
            raise ConfigError(f"family {self.name!r}: expected its module {self.model!r} to define "
                              f"{', '.join(MODEL_NAMES)} (docs/adding-a-family.md, section 1), found no "
                              f"{', '.join(missing)}")
        return module

    def export_spec(self):
        """The family's ExportSpec: `export` names a module (its SPEC) or "module:NAME"."""
        if self.export is None:
            raise UnknownFamilyError(f"family {self.name!r}: expected one with an export spec, found none")
        return self.resolve(self.export, "SPEC")

    def refuse_tensorrt_for_its_loop(self, backend: str, advice: str) -> None:
        """A generation that binds ONNX Runtime's IO (onnxruntime_loop) cannot run on TensorRT's own
        backend: refused before a package loads (its engines build for minutes) or a server starts."""
        if backend == "tensorrt" and self.onnxruntime_loop:
            raise ConfigError(f"backend (--backend) 'tensorrt': expected a backend {self.name}'s generation runs on, "
                              f"found TensorRT, which its {self.onnxruntime_loop} cannot use (it binds ONNX Runtime's "
                              f"IO): {advice}")

    def runtime_config(self, values: Any, where: str) -> RuntimeConfig:
        return self.config.from_manifest(values, where)

    def limits(self, config: RuntimeConfig) -> dict[str, int]:
        return dict(self.dim_limits(config)) if self.dim_limits else {}

    def minimums(self, config: RuntimeConfig) -> dict[str, int]:
        return dict(self.dim_minimums(config)) if self.dim_minimums else {}

    def multiples(self, config: RuntimeConfig) -> dict[str, int]:
        return dict(self.dim_multiples(config)) if self.dim_multiples else {}

    def variant_precisions(self) -> tuple[str, ...]:
        """The precisions `edgegen optimize` writes for this family's packages: fused for a
        transformer (fusion), the weight-only ones for a token model (held_out_tokens)."""
        return ("int8", "fp16", *(("fused",) if self.fusion else ()),
                *(("int4", "int8-weights") if self.held_out_tokens else ()))

    def eager_modules_function(self) -> Callable | None:
        return None if self.eager_modules is None else self.resolve(self.eager_modules, "")

    def ort_form_object(self):
        return None if self.ort_form is None else self.resolve(self.ort_form, "FORM")

    def gate_base_function(self) -> Callable | None:
        return None if self.gate_base is None else self.resolve(self.gate_base, "")

    def showcase_function(self) -> Callable | None:
        return None if self.showcase is None else self.resolve(self.showcase, "showcase")

    def serving_function(self) -> Callable | None:
        return None if self.serving is None else self.resolve(self.serving, "served")

    def command_adder(self, reference: str) -> Callable:
        """One entry of `commands` -> its add_commands(subparsers, runtime_options)."""
        return self.resolve(reference, "add_commands")

    def resolve(self, reference: str, default_name: str) -> Any:
        """"package.module:name" (or "package.module", meaning its `default_name`) -> the object; a
        plugin's module without that name is its author's to mend, said as such."""
        module, _, name = reference.partition(":")
        name = name or default_name
        found = getattr(_import_side(self.name, module), name, _MISSING)
        if found is _MISSING:
            if module.startswith("edgegen."):
                raise AttributeError(f"module {module!r} has no attribute {name!r}")   # edgegen's own: its bug
            raise ConfigError(f"family {self.name!r}: expected its module {module!r} to define {name} (the Family names "
                              f"{reference!r}), found no such name")
        return found


# what a family's torch side (model=) defines, which `edgegen train` reads (docs/adding-a-family.md)
MODEL_NAMES = ("Config", "build", "Trainer", "DEFAULT_STEPS", "DEFAULT_BATCH", "DEFAULT_LR", "DATA_RANGE")
_MISSING = object()


def _import_side(family: str, module: str) -> types.ModuleType:
    """A family's module; one of a plugin's that fails to import (a dataclass field without a default
    after one with) is its author's to mend, said as such, not as edgegen's internal error."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - whatever a plugin's import raises; edgegen's own: its bug, raised
        if module.startswith("edgegen."):
            raise
        raise UnknownFamilyError(f"family {family!r}: expected its module {module!r} to import, found "
                                 f"{described(exc)} (in the family's own code, or what it imports)") from exc


# -- the registry ------------------------------------------------------------------------------

_REGISTRY: dict[str, Family] = {}
# a family's name (or, where it never loaded, its entry point's) -> why edgegen left it out (said when it is asked for)
_BROKEN: dict[str, str] = {}
_BUILT_IN: set[str] = set()        # the families of edgegen's own folders
_DISTRIBUTIONS: dict[str, str] = {}   # a plugin family's name -> the installed distribution whose entry point named it
_REGISTERED_BY: dict[str, str] = {}   # a family's name -> the module that called register() for it
_DISCOVERED = False                # set once discovery has finished, so a reader sees every family
_DISCOVERING = False               # True while this process's one discovery runs (its own imports may ask)
_DISCOVERY_LOCK = threading.RLock()


def register(family: Family) -> Family:
    """Add a family (a user's package calls this, or names its Family in an entry point).
    Registering the same object again is harmless; another family under a taken name is refused."""
    existing = _REGISTRY.get(family.name)
    if existing is not None and existing is not family:
        # who registered it, not its pipeline's module: a user's family may reuse a built-in pipeline
        taken = source(family.name)
        said = ("edgegen's own" if taken == "edgegen" else taken if family.name not in _DISTRIBUTIONS else
                f"by the entry point of {taken}")
        raise ConfigError(f"family {family.name!r}: expected a new name, found one already registered ({said})")
    _REGISTRY[family.name] = family
    _REGISTERED_BY.setdefault(family.name, sys._getframe(1).f_globals.get("__name__", "?"))
    return family


def _discover() -> None:
    """Import the built-in family folders, then the entry points of installed packages, once. Under
    a lock: threads loading their first packages at once (a server warming its models) each wait
    for the whole registry, where they read it half filled and refused families not yet imported."""
    global _DISCOVERED, _DISCOVERING
    if _DISCOVERED:
        return
    with _DISCOVERY_LOCK:
        if _DISCOVERED or _DISCOVERING:   # another thread finished it, or this one is inside it
            return
        _DISCOVERING = True
        try:
            _import_families()
            _DISCOVERED = True
        finally:
            _DISCOVERING = False


def _import_families() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            importlib.import_module(f"{__name__}.{info.name}")
    # by the folder their pipeline lives in: a script's own family registered before this ran is
    # not one (it was, and its code's errors were then said as edgegen's: review 177)
    _BUILT_IN.update(name for name, family in _REGISTRY.items() if family.pipeline.__module__.startswith(f"{__name__}."))
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        # a broken package of someone else's must not take the built-ins down with it: its
        # failure is reported when its family is asked for
        where = f"its package's entry point {point.name!r} ({point.value}) of {ENTRY_POINT_GROUP}"
        try:
            family = point.load()
        except Exception as exc:  # noqa: BLE001 - any import error of a third-party package
            _BROKEN[point.name] = f"{where} failed to load: {type(exc).__name__}: {exc}"
            continue
        if not isinstance(family, Family):
            _BROKEN[point.name] = f"{where}: expected an edgegen.families.Family, found {type(family).__name__}"
            continue
        try:
            register(family)
            _DISTRIBUTIONS[family.name] = point.dist.name if getattr(point, "dist", None) else point.value
        except ConfigError as exc:
            _BROKEN[point.name] = str(exc)
            # its name taken (a built-in's): asked for by that name, the other family answers, so said now
            warnings.warn(f"entry point {point.name!r} ({point.value}) of {ENTRY_POINT_GROUP}: {exc}; edgegen leaves "
                          f"it out: give the family a name of its own", EdgegenWarning, stacklevel=2)


def leave_out(name: str, why: str) -> None:
    """Take a plugin's family out of this process's registry, warned now and said when it is asked
    for: its declaration does not fit edgegen's command line (a flag of a command's own), which
    must not take the built-ins' commands down with it. A built-in's is edgegen's bug: raised."""
    if name in _BUILT_IN:
        raise ConfigError(f"family {name!r}: {why}")
    _REGISTRY.pop(name, None)
    _REGISTERED_BY.pop(name, None)
    _BROKEN[name] = f"edgegen left it out of its command line: {why}"
    warnings.warn(f"family {name!r}: {why}; edgegen leaves the family out", EdgegenWarning, stacklevel=2)


def is_built_in(name: str) -> bool:
    _discover()
    return name in _BUILT_IN


def source(name: str) -> str:
    """Where a registered family comes from: edgegen, the distribution whose entry point names it,
    or (registered by a call) the module that called register()."""
    if is_built_in(name):
        return "edgegen"
    return _DISTRIBUTIONS.get(name) or f"registered by {_REGISTERED_BY.get(name, '?')}"


# Family.smoke's keys and what each holds
SMOKE_KEYS = {"train": (dict, "a dict of train() options"), "generate": ((list, tuple), "a list of generate arguments"),
              "out": (str, "the name of the file generate writes")}


def _check_smoke(family: str, smoke) -> None:
    """Family.smoke's keys and types: a misspelt key ("trian") was ignored, the contract training a
    default-size model for minutes (review 184). train()'s own options are checked when it runs."""
    if not isinstance(smoke, dict):
        raise ConfigError(f"family {family!r}: smoke expected a dict with keys among {', '.join(SMOKE_KEYS)}, found "
                          f"{type(smoke).__name__}")
    if unknown := sorted(set(smoke) - set(SMOKE_KEYS)):
        raise ConfigError(f"family {family!r}: smoke expected keys among {', '.join(SMOKE_KEYS)}, found "
                          f"{', '.join(map(repr, unknown))}")
    for key, value in smoke.items():
        kind, said = SMOKE_KEYS[key]
        if not isinstance(value, kind):
            raise ConfigError(f"family {family!r}: smoke[{key!r}] expected {said}, found {type(value).__name__}")


def _keywords_not_taken(pipeline: type, keywords: list[str]) -> list[str]:
    """Those of `keywords` that the pipeline's call does not take (its __call__, or the sample it
    passes everything to); none where a signature cannot be read or takes any keyword."""
    def parameters(function) -> dict:
        try:
            return dict(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            return {}

    call = getattr(pipeline, "__call__", None)
    # the runtime's Pipeline.__call__ hands everything to sample; another that takes anything is not read
    taken = parameters(getattr(pipeline, "sample", None) if call.__qualname__ == "Pipeline.__call__" else call)
    if not taken or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in taken.values()):
        return []
    return [k for k in keywords if k not in taken or taken[k].kind is inspect.Parameter.POSITIONAL_ONLY]


def refuse_trainer_signatures(family: str, trainer) -> None:
    """Before a training's data loads: a Trainer that does not take what training calls it with
    (`step` without `labels`, `__init__` without `total_steps`) failed as edgegen's internal error
    once the data had loaded (review 172). A factory function's trainer is judged by its call."""
    calls = [("Trainer(model, lr, total_steps=...)", trainer, (None, 0.0))]
    if isinstance(trainer, type):   # its step as an instance's: self given, unless a static or class method
        bound = isinstance(inspect.getattr_static(trainer, "step", None), (staticmethod, classmethod))
        calls.append(("Trainer.step(images, labels)", getattr(trainer, "step", None), (None, None) if bound else
                      (None, None, None)))
    for call, target, args in calls:
        if not callable(target):
            raise ConfigError(f"family {family!r}: expected its {call} (docs/adding-a-family.md, section 1), found "
                              f"{'no step' if target is None and call.startswith('Trainer.step') else repr(target)}")
        try:
            inspect.signature(target).bind(*args, **({"total_steps": 1} if target is trainer else {}))
        except TypeError as exc:
            raise ConfigError(f"family {family!r}: expected its {call} to take those arguments (docs/adding-a-family.md, "
                              f"section 1), found {target.__qualname__}{inspect.signature(target)} ({exc})") from None
        except ValueError:   # no signature to read (a builtin's): left to the call
            pass


def outside_family_of(module: str) -> str | None:
    """The registered family outside edgegen whose package `module` belongs to (its pipeline's,
    model's or export's top-level package), None for edgegen's own code and anyone else's."""
    top = module.partition(".")[0]
    for family in list(_REGISTRY.values()):
        if family.name in _BUILT_IN:
            continue
        modules = (family.pipeline.__module__, family.model or "", family.export or "")   # export: "pkg:SPEC" too
        if top in {re.split(r"[.:]", m)[0] for m in modules if m} - {"edgegen"}:
            return family.name
    return None


def broken() -> dict[str, str]:
    """Families (or entry points) edgegen left out, and why."""
    _discover()
    return {name: why for name, why in _BROKEN.items() if name not in _REGISTRY}


def unloaded() -> str:
    """Said beside an unknown family's name: the families and entry points edgegen left out, one
    of which may be it under another key ("" where none was)."""
    failed = [f"{name!r} ({why})" for name, why in broken().items()]
    return f"; left out: {'; '.join(failed)}" if failed else ""


def families() -> list[Family]:
    """Every registered family, built-ins first in their own order."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda f: (f.order, f.name))


def require_offered_precision(package, precision: str) -> None:
    """Where `precision` is one `edgegen optimize` never writes for the package's family (int4 for a
    VAE), a PackageError saying so: the advice to optimize, which a missing variant gives, would be
    refused there."""
    offered = get(package.family).variant_precisions()
    if precision != "fp32" and precision not in offered:
        raise PackageError(f"package {str(package.path)!r}: expected fp32 or a precision edgegen optimize writes for "
                           f"{package.family} packages ({', '.join(offered)}), found {precision!r}")


def package_config(package) -> tuple[Family, RuntimeConfig]:
    """The family of a loaded Package and its manifest config, checked against the family's dataclass."""
    _discover()
    family = _REGISTRY.get(package.family)
    if family is None and package.family in _BROKEN:
        get(package.family)   # says why its package did not load
    if family is None:
        raise UnknownFamilyError(f"package {str(package.path)!r}: expected family to be one of {', '.join(names())}, "
                                 f"found {package.family!r} (is the package that registers it installed?)")
    missing = [part for part in family.graphs if part not in package.graphs]
    if missing:
        raise ManifestError(f"package {str(package.path)!r}: expected the graphs of a {family.name} package "
                            f"({', '.join(family.graphs)}), found {', '.join(package.graphs) or 'none'}: "
                            f"{', '.join(missing)} missing")
    where = f"package {str(package.path)!r}: edgegen.json config"
    config = family.runtime_config(package.config, where)
    problems = config.graph_problems(package.graphs)
    if problems:
        raise ManifestError(f"{where} disagrees with its graphs: " + "; ".join(problems))
    return family, config


def dim_problems(graphs: dict, expected: list[tuple]) -> list[str]:
    """[(graph, tensor, axis, config field, its value[, the whole field])] -> where a tensor's static
    dim differs from the config field it must equal (one entry of a shape field, which the message
    shows whole). A dynamic dim, or a tensor the graph lacks, says nothing here (the graph's own
    input checks catch those)."""
    problems = []
    for part, tensor, axis, name, value, *whole in expected:
        entry = graphs.get(part)
        specs = {t.name: t for t in (*entry.inputs, *entry.outputs)} if entry else {}
        shape = specs[tensor].shape if tensor in specs else ()
        if -len(shape) <= axis < len(shape) and isinstance(shape[axis], int) and shape[axis] != value:
            problems.append(f"{name} {whole[0] if whole else value}: expected {tensor} of graph {part!r} to have {value} "
                            f"at axis {axis}, found {shape[axis]}")
    return problems


def transformers_importer(architecture: str) -> Callable:
    """The function that imports a transformers save_pretrained folder of `architecture`."""
    for family in families():
        if architecture in family.importers:
            return family.resolve(family.importers[architecture], "")
    known = [a for f in families() for a in f.importers]
    raise CheckpointError(not_one_of("architecture", architecture, known, "the ones edgegen imports from transformers"))


def names() -> list[str]:
    return [f.name for f in families()]


def get(name: str) -> Family:
    _discover()
    if name in _BROKEN and name not in _REGISTRY:
        raise UnknownFamilyError(f"family {name!r}: {_BROKEN[name]}")
    if name not in _REGISTRY:
        raise UnknownFamilyError(not_one_of("family", name, names(), "a family of your own registers through the "
                                                                   "'edgegen.families' entry point") + unloaded())
    return _REGISTRY[name]


__all__ = ["Family", "Option", "GenerateRequest", "GenerationCall", "DemoModel", "RuntimeConfig", "register", "families", "names", "get", "package_config", "positive", "dim_problems",
           "ENTRY_POINT_GROUP"]
