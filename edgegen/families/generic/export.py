"""A user's own PyTorch module -> a validated package of the generic family.

`export_pytorch(module, inputs, out, dynamic=...)` traces the module at the example inputs,
then gates the graph against PyTorch on inputs at sizes the trace did not see (drawn like the
example's values, plus the user's held-out inputs), refuses NaN/Inf, and writes the package
with those inputs recorded for `edgegen optimize`. The CLI form is
`edgegen export --module model.py:factory --inputs example.npz --dynamic image:0=batch`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ...errors import (BackendError, CheckpointError, ConfigError, EdgegenError, EdgegenWarning, InputError, PackageError,
                       ParityError, ValidationError, described, first_line, warn_caller)
from ...export import check_opset, provenance
from ...export.onnx_export import DEFAULT_OPSET, distributions_unchecked, trace_module, untraceable, value_spec
from ...export.validate import (feed_label, gate_feeds, gate_inputs_zeroed, output_tolerances, refuse_lost_epsilons,
                                sizes_label, tolerance_said, torch_inputs)
from ...package import (DTYPES, MANIFEST_NAME, PACKAGE_KIND, GraphEntry, Manifest, Package, TensorSpec, check_name,
                        created_time, may_be_empty, name_from_folder, package_files, refuse_output_inside_edgegens, sha256_file, write_manifest)
from ...storage import staged_directory
from ...runtimes.engines import DEFAULT_BATCH_PROFILE
from ...runtimes.feeds import HELD_OUT_FILE, read_feeds, recorded_feeds, write_feeds
from ...runtimes.ort import OrtSession
from ...runtimes.session import check_feeds
from . import FAMILY
from .pipeline import GenericConfig

GRAPH = "model"
DEFAULT_LIMIT_FACTOR = 4      # a non-batch dynamic dim may grow to this many times its traced size by default
SYNTHESIZED_FEEDS = 8
# the gate's default tolerances (atol, rtol); a float16 output is compared at no tighter than
# validate.FLOAT16_TOLERANCES, each output at its own
FLOAT32_TOLERANCES = (1e-4, 1e-3)


def _in_eval_mode(export):
    """`export` of a CPU module in eval mode (dropout off, batch norm's running statistics), as it
    runs for inference, the caller's module given back in the mode it came in, with the buffers it
    came with (a forward that changes them is refused, but only after it ran once)."""
    @functools.wraps(export)
    def run(module, *args, **kwargs):
        _refuse_other_than_a_cpu_module(module)
        # each submodule's own flag: module.train(flag) sets them all alike, and a user who froze a
        # batch norm (module.bn.eval() inside a training module) would find it training again. Set
        # through train(), top down, so that a module's own train() override still runs.
        modes = [(m, m.training) for m in module.modules()]
        buffers = _buffer_copies(module)
        try:
            with distributions_unchecked():   # the trace and the gate's calls of the module alike
                return export(module.eval(), *args, **kwargs)
        finally:
            module.train(modes[0][1])
            for m, training in modes[1:]:
                if m.training != training:
                    m.train(training)
            _put_back(module, buffers)

    return run


def _buffer_copies(module: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (the buffer, a copy of its values)} under every name it has (one tensor may be
    registered in two submodules); a lazy module's buffer not yet made is left out."""
    return {name: (buffer, buffer.detach().clone()) for name, buffer in module.named_buffers(remove_duplicate=False)
            if not isinstance(buffer, torch.nn.parameter.UninitializedBuffer)}


def _same(a, b: torch.Tensor) -> bool:
    """Equal to the bit, NaN where NaN was (torch.equal takes NaN for unequal to itself)."""
    return isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and (
        torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)))


def _buffer_now(module: torch.nn.Module, name: str):
    owner, _, leaf = name.rpartition(".")
    return module.get_submodule(owner)._buffers.get(leaf)


def _changed_buffers(module: torch.nn.Module, kept: dict) -> list[str]:
    """The buffers of `kept` whose values differ now, or which forward replaced or set to None."""
    return [name for name, (_, values) in kept.items() if not _same(_buffer_now(module, name), values)]


def _put_back(module: torch.nn.Module, kept: dict) -> None:
    """Each buffer the tensor it was, holding the values it held: a caller's reference to it, and a
    tensor two submodules share, stay what they were."""
    for name in _changed_buffers(module, kept):
        buffer, values = kept[name]
        with torch.no_grad():
            buffer.copy_(values)
        owner, _, leaf = name.rpartition(".")
        module.get_submodule(owner)._buffers[leaf] = buffer


def _refuse_other_than_a_cpu_module(module) -> None:
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"module: expected a torch.nn.Module, found {type(module).__name__}")
    if isinstance(module, torch.jit.ScriptModule):   # torch.export traces Python code, which TorchScript has compiled away
        raise ConfigError(f"module: expected a Python nn.Module (torch.export traces its Python code), found a TorchScript "
                          f"{type(module).__name__}: export the nn.Module it was scripted or traced from")
    devices = sorted({str(t.device) for t in (*module.parameters(), *module.buffers()) if t.device.type != "cpu"})
    if devices:   # the example arrays become CPU tensors, and the check runs ONNX Runtime on the CPU
        raise ConfigError(f"module: expected its weights on the CPU (export module.cpu(); the package runs on any "
                          f"device), found them on {', '.join(devices)}")


@_in_eval_mode
def export_pytorch(module: torch.nn.Module, inputs: Mapping[str, Any], out: str | os.PathLike, *,
                   dynamic: Mapping[str, Mapping[int, str]] | None = None, output_names: list[str] | None = None,
                   held_out: list[Mapping[str, Any]] | str | os.PathLike | None = None,
                   dim_limits: Mapping[str, int] | None = None, name: str | None = None, opset: int = DEFAULT_OPSET,
                   atol: float | None = None, rtol: float | None = None, overwrite: bool = False, seed: int = 0,
                   source: str = "", reads: list[str | os.PathLike] = ()) -> Path:
    """Export `module` (called as module(*inputs.values()), in eval mode: _in_eval_mode) to a
    package at `out`.

    inputs: example arrays (numpy or torch), by input name: by forward's parameter names (put in
        forward's order), or, under names of their own, in forward's order.
    dynamic: {input name: {axis: dim name}}; the same name on two inputs means the dims are
        equal. Default: axis 0 of every input is "batch". {} exports every shape static.
    held_out: inputs to gate on and to record for optimize (a list of feeds, or an .npz as
        `edgegen.runtimes.feeds` reads it); default: drawn like the example's values.
    dim_limits: the largest value of each dynamic dim (TensorRT profiles); default batch 16,
        other dims DEFAULT_LIMIT_FACTOR x their traced size.
    atol, rtol: the gate's tolerances; default 1e-4 and 1e-3, and for a float16 output at least
        1e-3 and 1e-2 (validate.FLOAT16_TOLERANCES), each output at its own.
    reads: files the caller read the module and inputs from (its .py file), which `overwrite` never
        replaces; a held_out .npz counts without being named.
    Raises ParityError (a ValidationError), and writes nothing, when the graph does not reproduce PyTorch;
    a module torch.export cannot trace, or one failing on its inputs, is a ValidationError too.
    """
    check_opset(opset)
    check_name(name)
    created_time()   # a mistyped SOURCE_DATE_EPOCH said before the work, not after the gate
    refuse_output_inside_edgegens("output", out)
    for label, tolerance in (("atol", atol), ("rtol", rtol)):   # refused before the export, not after it
        if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
                                      or not 0 <= tolerance < math.inf):
            raise ConfigError(f"{label} (--{label}): expected a tolerance of 0 or more, found {tolerance!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer (the gate's draws), found {seed!r}")
    if not isinstance(inputs, Mapping):
        raise ConfigError(f"inputs (--inputs): expected example arrays by input name (a dict), found {type(inputs).__name__}")
    example = {str(k): _numpy(v, f"inputs (--inputs) {k!r}") for k, v in dict(inputs).items()}
    if not example:
        raise ConfigError("inputs (--inputs): expected at least one named example input, found none")
    if slashed := [name for name in example if "/" in name]:   # read back as feed N's input NAME
        raise ConfigError(f"inputs (--inputs): expected names without '/' (an .npz of several feeds keys them N/NAME), "
                          f"found {slashed}")
    example = _in_forward_order(module, example)
    dynamic_given = dynamic is not None
    if dynamic is not None and not isinstance(dynamic, Mapping):
        raise ConfigError(f"dynamic (--dynamic): expected {{input name: {{axis: dim name}}}}, found a "
                          f"{type(dynamic).__name__}")
    dynamic = {k: {0: "batch"} for k, v in example.items() if v.ndim} if dynamic is None else dict(dynamic)
    specs = _input_specs(example, dynamic)
    traced = _traced_sizes(specs, example)
    limits = _dim_limits(dim_limits, traced)
    outputs = _output_names(output_names, _output_count(module, example, specs))
    clashes = sorted(set(outputs) & set(example))
    if clashes or len(set(outputs)) != len(outputs):
        raise ConfigError(f"output_names (--output-name): expected names unlike each other and the inputs' (ONNX names each value "
                          f"once), found {list(outputs)} with inputs {list(example)}")
    if dynamic_given and dynamic:   # said once the arguments are known good ({}: every shape fixed, as asked)
        _warn_of_fixed_rows(specs)
    rng = np.random.default_rng(seed)
    recorded = _held_out(held_out, specs, limits) if held_out is not None else _synthesized(specs, example, traced, limits, rng)
    # the gate's own feeds are drawn like the values the user gave: the example and any held-out feeds
    drawn_like = _values_given(example, recorded if held_out is not None else [])
    checked = recorded + (_synthesized(specs, drawn_like, traced, limits, rng) if held_out is not None else [])
    config = GenericConfig(graph=GRAPH, dim_limits=limits, example_dims=traced, source=source or type(module).__name__)
    problems = config.problems()
    if problems:
        raise ConfigError("dim_limits (--limit): " + "; ".join(problems))
    reads = [*reads, *([held_out] if isinstance(held_out, (str, os.PathLike)) else [])]
    with staged_directory(out, overwrite=overwrite, holds=MANIFEST_NAME, kind=PACKAGE_KIND, reads=reads,
                          owns=package_files) as stage:
        try:
            model, conditions = trace_module(module, GRAPH, specs, outputs, example, opset)
        except EdgegenError:
            raise
        except Exception as exc:  # noqa: BLE001 - a module torch.export cannot trace is the user's to change
            raise untraceable(exc, module, f"export of {config.source!r}", "docs/bring-your-own-model.md") from exc
        config.index_limits = embedding_rows(model)
        onnx.save(model, str(stage / f"{GRAPH}.onnx"))
        graph_outputs = tuple(value_spec(v) for v in model.graph.output)
        for spec in graph_outputs:   # before a session, whose refusal would name ONNX's type numbers
            if spec.dtype not in DTYPES:
                raise ConfigError(f"output {spec.name!r}: expected one of {', '.join(DTYPES)}, found {spec.dtype} "
                                  "(cast it in forward, e.g. .float())")
        atol, rtol = _tolerances(atol, rtol)
        _refuse_random_draws(model, config.source)
        _warn_of_integers_computed_in_float(model)
        try:
            session = OrtSession(GRAPH, stage / f"{GRAPH}.onnx", specs, graph_outputs, backend="ort-cpu")
        except PackageError as exc:   # without the staging folder's path it names, gone once this is raised
            said = str(exc).replace(f" at {str(stage / f'{GRAPH}.onnx')!r}", "")
            raise ValidationError(f"export of {config.source!r}: expected a graph ONNX Runtime runs, found: {said}") from None
        results = _gate_each(module, session, checked, len(recorded) if held_out is not None else 0, atol, rtol,
                             config.source)
        if failures := _gate_failures(results, tolerance_said(atol, rtol, graph_outputs), sizes_label(specs, traced)):
            raise ParityError(f"export of {config.source!r} does not reproduce PyTorch, package not written: "
                                  + failures)
        refuse_lost_epsilons(GRAPH, module, session, checked[0])
        # the feed of the most values: the most rows, each with a zero
        zeroed = gate_inputs_zeroed(module, session, max(checked, key=lambda f: sum(v.size for v in f.values())), atol, rtol)
        if failures := _gate_failures([r for each in zeroed.values() for r in each],
                                      tolerance_said(atol, rtol, graph_outputs), sizes_label(specs, traced)):
            raise ParityError(f"export of {config.source!r} does not reproduce PyTorch where an input holds exact zeros "
                              "(an op that the exporter writes otherwise at 0), package not written: " + failures)
        results += _gate_at_limits(module, session, specs, drawn_like, traced, limits, rng, atol, rtol, config.source,
                                   conditions)
        below, config.dim_minimums = _gate_below(module, session, specs, drawn_like, traced, _least_sizes(specs, checked),
                                                 rng, atol, rtol)
        results += below
        between, config.dim_multiples = _gate_between_steps(module, session, specs, drawn_like, traced, limits, rng, atol,
                                                            rtol)
        results += between
        for dim, step in config.dim_multiples.items():   # the least a multiple too: "4 to 128 in multiples of 4", not "1 to"
            config.dim_minimums[dim] = -(-config.dim_minimums[dim] // step) * step
        results += _gate_dims_equal(module, session, specs, drawn_like, traced, limits, config.dim_minimums,
                                    config.dim_multiples, rng, atol, rtol, config.source)
        results += _gate_against_conditions(module, session, specs, drawn_like, traced, limits, config.dim_minimums,
                                            config.dim_multiples, conditions, rng, atol, rtol, config.source)
        write_feeds(stage / HELD_OUT_FILE, recorded)
        config.held_out = {"file": HELD_OUT_FILE, "sha256": sha256_file(stage / HELD_OUT_FILE), "feeds": len(recorded)}
        # results: one comparison per output of each feed, in feed order; one label per feed
        validation = {"feeds": [r.batch for r in results[::len(graph_outputs)]], "atol": atol, "rtol": rtol, "passed": True,
                      "max_abs": max(r.max_abs for r in results), "max_rel": max(r.max_rel for r in results)}
        # each float input holding zeros in turn, its float outputs compared (gate_inputs_zeroed)
        validation["inputs_zeroed"] = list(zeroed)
        if renamed := _with_output_dims_named(model, session, specs, checked, stage / f"{GRAPH}.onnx"):
            graph_outputs = tuple(value_spec(v) for v in renamed.graph.output)
        if any(spec.dtype == "float16" for spec in graph_outputs):   # what the float16 outputs were held to
            validation["float16_tolerances"] = list(output_tolerances("float16", atol, rtol))
        entry = GraphEntry(f"{GRAPH}.onnx", sha256_file(stage / f"{GRAPH}.onnx"), specs, graph_outputs,
                           extra={"opset": opset, "validation": validation})
        manifest = Manifest(family=FAMILY.name, name=name or name_from_folder(Path(out).resolve().name), config=config.to_json(),
                            graphs={GRAPH: entry},
                            provenance=provenance(opset, {"module": config.source, "weights_sha256": weights_sha256(module)}))
        write_manifest(stage, manifest)
        Package(stage)
    return Path(out)


def _with_output_dims_named(model, session, specs, feeds: list[dict], path: Path):
    """Where the exporter declared an output dim of a fixed size and the graph gives other sizes at
    the gate's feeds (an LSTM's output: [batch, 7, 8] declared, [1, 10, 8] given at 10 steps), the
    graph with that dim dynamic, named as the input dim whose size it follows at every feed, else
    OUTPUT_dimAXIS (output_0_dim1: the name's other characters as _; the manifest, `edgegen info`
    and TensorRT read these); None where none varies.
    Its inner shape annotations (value_info), which hold the traced size too and from which ONNX
    Runtime would infer it again, go; the graph replaces the one at `path` only where a session
    opens it with the new outputs and gives the same outputs at every feed (else None: it stays as
    exported, which loads; review 186)."""
    by_sizes = {}   # one feed per set of dynamic sizes: what the dims can vary by
    for feed in feeds:
        by_sizes.setdefault(feed_label(specs, feed), feed)
    if len(by_sizes) < 2:
        return None
    runs = [(feed, session.run(feed)) for feed in by_sizes.values()]
    names = list(dict.fromkeys(d for spec in specs for d in spec.shape if isinstance(d, str)))   # batch first
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    changed = False
    for output in renamed.graph.output:
        for axis, dim in enumerate(output.type.tensor_type.shape.dim):
            sizes = [produced[output.name].shape[axis] for _, produced in runs]
            if dim.HasField("dim_param") or len(set(sizes)) == 1:
                continue
            follows = [d for d in names if [_dim_size(specs, feed, d) for feed, _ in runs] == sizes]
            dim.ClearField("dim_value")
            dim.dim_param = follows[0] if follows else f"{re.sub(r'[^A-Za-z0-9_]', '_', output.name)}_dim{axis}"
            changed = True
    if not changed:
        return None
    del renamed.graph.value_info[:]
    trial = path.with_name(f".{path.name}.renamed")
    onnx.save(renamed, str(trial))
    try:
        check = OrtSession(GRAPH, trial, specs, tuple(value_spec(v) for v in renamed.graph.output), backend="ort-cpu")
        same = all(np.array_equal(check.run(feed)[name], value) for feed, produced in runs
                   for name, value in produced.items())
    except EdgegenError:   # ONNX Runtime inferred another shape than the one named
        same = False
    if not same:
        trial.unlink()
        return None
    os.replace(trial, path)
    return renamed


def _dim_size(specs, feed: dict, dim: str) -> int:
    return next(feed[spec.name].shape[axis] for spec in specs for axis, d in enumerate(spec.shape) if d == dim)


def _in_forward_order(module: torch.nn.Module, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The example in the order forward takes it, where its names are forward's parameters: the
    graph and the check call forward positionally, so an .npz saved in another order would feed
    `b` to `a` and pass the check that calls PyTorch the same way. A name that forward takes by
    keyword only, or one after a parameter the example skips, is refused. Names of the user's own
    (or a forward of *args) keep the example's order; a mix of the two is refused (`gain` of
    forward(noisy, gain) saved first would be fed as `noisy`)."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return example
    by_name = {p.name: p for p in parameters if p.kind is not p.VAR_POSITIONAL and p.kind is not p.VAR_KEYWORD}
    if not set(example) <= set(by_name):
        named = [name for name in example if name in by_name]
        positional = [p.name for p in by_name.values() if p.kind is not p.KEYWORD_ONLY]
        if named and len(example) > len(positional) and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
            extra = [name for name in example if name not in by_name]
            raise ConfigError(f"inputs (--inputs): expected at most an array for each of forward's parameters "
                              f"({', '.join(positional)}), found {len(example)} arrays, {', '.join(extra)} not "
                              "among them (leave it out of the example)")
        if named and not any(p.kind is p.VAR_POSITIONAL for p in parameters):   # by name or by order: not both
            raise ConfigError(f"inputs (--inputs): expected names that are all forward's parameters ("
                              f"{', '.join(by_name)}) or none of them (then they go in the file's order), found "
                              f"{', '.join(named)} among them and {', '.join(n for n in example if n not in by_name)} "
                              "not: rename the arrays")
        return example
    keyword_only = [name for name in example if by_name[name].kind is inspect.Parameter.KEYWORD_ONLY]
    if keyword_only:
        raise ConfigError(f"inputs (--inputs): expected forward's positional parameters (the graph passes its inputs in order), "
                          f"found {', '.join(keyword_only)} keyword-only: make it positional")
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = positional[:len(example)]
    if set(taken) != set(example):
        skipped = [name for name in taken if name not in example]
        raise ConfigError(f"inputs (--inputs): expected forward's first {len(example)} parameters ({', '.join(taken)}), found "
                          f"{', '.join(example)}: {skipped[0]} would take the array named "
                          f"{next(n for n in positional if n in example and n not in taken)}; give {skipped[0]} too, "
                          "or reorder forward")
    return {name: example[name] for name in taken}


def _numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:   # numpy has no bfloat16: float32, as float64
        value = value.float()
    try:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (ValueError, TypeError) as exc:   # a ragged list: numpy's "setting an array element with a sequence"
        raise ConfigError(f"{what}: expected an array (numbers in a regular shape), found {type(value).__name__} numpy "
                          f"cannot make one of ({first_line(exc)})") from None
    if array.dtype == np.float64:   # PyTorch modules compute in float32; numpy's default would trace float64
        array = array.astype(np.float32)
    if array.dtype.name not in DTYPES:
        raise ConfigError(f"{what}: expected one of the dtypes {', '.join(DTYPES)}, found {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():   # the check would blame the graph for it
        raise ConfigError(f"{what}: expected finite numbers, found {int(np.size(array) - np.isfinite(array).sum())} "
                          "NaN or Inf value(s)")
    return np.asarray(array, order="C")   # a 0-d example stays one (ascontiguousarray makes it [1])


def _gate_each(module, session, feeds: list[dict], users_feeds: int, atol: float, rtol: float, source: str) -> list:
    """gate_feeds over `feeds`, the user's held-out ones first (`users_feeds` of them): a feed the
    module or its graph fails on is the gate's finding, named as the user's feed (its values may be
    what is wrong) or as one drawn at sizes the trace did not see."""
    results = []
    for i, feed in enumerate(feeds):
        check_feeds(session.graph_name, session.inputs, feed)   # a feed that does not fit the graph's inputs: the caller's
        try:
            found = gate_feeds(module, session, [feed], atol, rtol)
        except (InputError, BackendError) as exc:   # the module ran on it (it runs first): ONNX Runtime failed on the graph
            advice = ATTENTION_ADVICE if "running Attention node" in str(exc) else FIXED_SIZE_ADVICE
            raise ParityError(f"export of {source!r} does not reproduce PyTorch, package not written: the graph fails at "
                              f"{feed_label(session.inputs, feed)}, where the module runs ({first_line(exc, 1000)}); "
                              f"{advice}") from None
        except EdgegenError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's module failing on a feed is the gate's finding
            raise ValidationError(f"export of {source!r}: the module or its graph failed on "
                                  + (f"held-out feed {i} (held_out, --held-out) ({described(exc)}); check its "
                                     "values and sizes" if i < users_feeds else
                                     f"inputs at sizes the trace did not see ({described(exc)}); give dim_limits "
                                     "(--limit) or held_out (--held-out) inputs of sizes it takes")) from None
        if not all(r.reference_finite for r in found):
            where, advice = _feed_named(session, feed, i, users_feeds)
            raise ValidationError(f"export of {source!r}: expected finite outputs from the module to check the graph "
                                  f"against, found NaN or Inf from PyTorch itself (forward, not the export) on {where}, "
                                  f"package not written: {advice}")
        results += found
    return results


def _feed_named(session, feed: dict, index: int, users_feeds: int) -> tuple[str, str]:
    """(a gate feed as a user knows it, what to do where the module's own output is not finite on it)."""
    if index < users_feeds:
        return f"held-out feed {index} (held_out, --held-out)", "check its values"
    return (f"inputs drawn like the values given (their mean and spread, within their range) at "
            f"{feed_label(session.inputs, feed)}", "give held_out (--held-out) feeds of real inputs, which the drawn ones "
            "then follow, or an example whose values span what the module takes")


def _warn_of_fixed_rows(specs: tuple[TensorSpec, ...]) -> None:
    """A `dynamic` given replaces the default (axis 0 of every input is batch); where it names no
    input's axis 0 and the example's has several rows, the package takes exactly that many, which
    a user who named only a sequence dim rarely means: said, with the way to keep the batch."""
    rows = {s.name: s.shape[0] for s in specs if s.shape}
    if rows and all(isinstance(n, int) for n in rows.values()) and max(rows.values()) > 1:
        name = next(iter(rows))
        warn_caller(f"dynamic (--dynamic): no input's axis 0 is dynamic, so the package takes exactly the example's "
                    f"rows ({', '.join(f'{k} {n}' for k, n in rows.items())}); name it to keep a batch: --dynamic "
                    f"{name}:0=batch, dynamic={{{name!r}: {{0: 'batch', ...}}}}", EdgegenWarning)


def _input_specs(example: dict[str, np.ndarray], dynamic: dict) -> tuple[TensorSpec, ...]:
    unknown = sorted(set(dynamic) - set(example))
    if unknown:
        raise ConfigError(f"dynamic (--dynamic): expected input names among {sorted(example)}, found {unknown}")
    specs = []
    for name, array in example.items():
        axes = _named_axes(name, dynamic.get(name, {}))
        bad = [a for a in axes if not 0 <= a < array.ndim]
        if bad:
            raise ConfigError(f"dynamic (--dynamic) {name!r}: expected axes 0 to {array.ndim - 1}, found {bad}")
        named_badly = [d for d in axes.values() if not d.isidentifier()]   # torch.export.Dim takes identifiers only
        if named_badly:
            raise ConfigError(f"dynamic (--dynamic) {name!r}: expected dim names of letters, digits and _ (batch, "
                              f"height_2), found {named_badly}")
        specs.append(TensorSpec(name, array.dtype.name, tuple(axes.get(i, int(n)) for i, n in enumerate(array.shape))))
    return tuple(specs)


def _named_axes(name: str, given: Any) -> dict[int, str]:
    """{axis: dim name} of one input's `dynamic` entry; other forms (torch.export's list of dims,
    a set of axes, None for a static dim) refused as what they are."""
    form = f"{{axis: dim name}}, such as {{{name!r}: {{0: 'batch', 2: 'height'}}}}"
    if not isinstance(given, Mapping):
        raise ConfigError(f"dynamic (--dynamic) {name!r}: expected {form}, found a {type(given).__name__} ({given!r})")
    bad = {a: d for a, d in given.items() if isinstance(a, bool) or not isinstance(a, numbers.Integral)
           or not isinstance(d, str)}
    if bad:   # {0: None} would name a dim "None"; leave a static axis out instead
        raise ConfigError(f"dynamic (--dynamic) {name!r}: expected {form} (leave a static axis out), found "
                          f"{', '.join(f'{a!r}: {d!r}' for a, d in bad.items())}")
    return {int(a): d for a, d in given.items()}


def _traced_sizes(specs, example) -> dict[str, int]:
    """Each dynamic dim's size in the example; a dim named on two inputs must agree."""
    sizes: dict[str, int] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                size = int(example[spec.name].shape[axis])
                if sizes.setdefault(dim, size) != size:
                    raise ConfigError(f"dynamic dim {dim!r}: expected the same size on every input, found {sizes[dim]} "
                                      f"and {size} (input {spec.name!r})")
                if size < 2:
                    # the exporter specialises a dim of size 1: it would not stay dynamic
                    raise ConfigError(f"inputs (--inputs) {spec.name!r}: expected dynamic dim {dim!r} to be at least 2 in the "
                                      f"example, found {size} (a module that takes only this size: --dynamic none, "
                                      "dynamic={})")
    return sizes


def _dim_limits(given: Mapping[str, int] | None, traced: dict[str, int]) -> dict[str, int]:
    """Each dynamic dim's largest value: as given, else batch 16 (the example's where it is larger:
    an example of 32 was refused as past a limit nobody set) and other dims DEFAULT_LIMIT_FACTOR x
    their traced size. Refused before the export: a dim the inputs lack, a size that is not a
    whole number at least the traced one."""
    limits = {d: (max(DEFAULT_BATCH_PROFILE[2], s) if d == "batch" else DEFAULT_LIMIT_FACTOR * s) for d, s in traced.items()}
    if given is None:
        return limits
    if not isinstance(given, Mapping):
        raise ConfigError(f"dim_limits (--limit): expected {{dynamic dim: largest size}}, found {type(given).__name__}")
    unknown = sorted(str(d) for d in given if str(d) not in traced)
    if unknown:
        raise ConfigError(f"dim_limits (--limit): expected dynamic dims of the inputs ({', '.join(traced) or 'none'}), found {unknown}")
    for dim, size in given.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < traced[str(dim)]:
            raise ConfigError(f"dim_limits (--limit) {str(dim)!r}: expected a whole number of at least the traced size "
                              f"{traced[str(dim)]}, found {size!r}")
        limits[str(dim)] = int(size)
    return limits


def _returned(result) -> str:
    """What forward returned instead of tensors, in words that point at the fix."""
    if isinstance(result, dict):
        return (f"a dict ({', '.join(map(str, list(result)[:4]))}): return its tensors as a tuple and name them with "
                "output_names (--output-name)")
    if isinstance(result, (tuple, list)) and result:
        index, item = next((i, r) for i, r in enumerate(result) if not isinstance(r, torch.Tensor))
        return (f"a {type(result).__name__} with {type(item).__name__} at position {index} (return only tensors, "
                "and name them with output_names (--output-name))")
    return type(result).__name__


def _output_count(module, example, specs) -> int:
    """How many tensors forward returns on the example: run before the export, so that a module that
    fails on its own example, or returns something else, is said so at once. Run twice: a buffer
    the second call changes (a counter) is refused; one the first call fills (a lazy module's, a
    cache) is the module's to keep."""
    with _nested_tensor_fast_path_said(module):   # a first call may make what a lazy module or a cache fills once
        _run_on_example(module, example, specs)
    before = _buffer_copies(module)
    result = _run_on_example(module, example, specs)
    if changed := _changed_buffers(module, before):   # a counter, a running mean: each call another model
        raise ConfigError(f"module: expected a forward that leaves its buffers as they are (the graph holds them as "
                          f"constants, so it would part from the module after one call), found it changes "
                          f"{', '.join(changed)}: keep that state outside the module, or pass it in and return it")
    if not isinstance(result, torch.Tensor) and not (isinstance(result, (tuple, list)) and result
                                                     and all(isinstance(r, torch.Tensor) for r in result)):
        raise ConfigError(f"module: expected forward to return a tensor or a tuple of tensors, found "
                          f"{_returned(result)}")
    tensors = [result] if isinstance(result, torch.Tensor) else list(result)
    for index, tensor in enumerate(tensors):   # ONNX has no complex tensors: the gate said "max abs inf"
        if tensor.is_complex():
            raise ConfigError(f"module: expected real outputs, found output {index} {str(tensor.dtype)[6:]} (ONNX has "
                              "no complex tensors: return torch.view_as_real(...) in forward)")
    for index, tensor in enumerate(tensors):   # PyTorch's own NaN, not the graph's: said as such
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ConfigError(f"module: expected finite outputs on the example inputs, found NaN or Inf in output "
                              f"{index} from PyTorch itself (forward, not the export)")
    return len(tensors)


def _run_on_example(module, example, specs):
    try:
        with torch.inference_mode():
            return module(*torch_inputs(example, specs))
    except Exception as exc:  # noqa: BLE001 - the user's module failing on the user's example
        raise ConfigError(f"module: expected forward to run on the example inputs, found {described(exc)}"
                          + (_dtype_hint(module, example) if DTYPE_MISMATCH.search(str(exc)) else "")) from exc


# torch's words for operands of two float types ("mat1 and mat2 must have the same dtype, but got Float and
# Double", "expected scalar type Half but found Float"): a dtype hint is added to these only
DTYPE_MISMATCH = re.compile(r"same dtype|expected scalar type|Half|Double|BFloat16|dtype")


def _dtype_hint(module, example: dict) -> str:
    """Where the weights' float type is not the example's, which forward then fails on ("mat1 and mat2
    must have the same dtype"): bfloat16 or float64 weights meet float32 examples (numpy has no
    bfloat16; a float64 example is taken as float32, since edgegen's graphs are float32), and the fix is
    the module's; a float16 example meets float32 weights, and the fix is the example's."""
    weights = {str(p.dtype)[6:] for p in module.parameters() if p.is_floating_point()}
    if weights == {str(v.dtype) for v in example.values() if v.dtype.kind == "f"}:   # they agree: not the cause
        return ""
    if other := sorted(weights & {"bfloat16", "float16", "float64"}):
        then = (" 'edgegen optimize --precision fp16' then makes the half-precision variant, behind its gate"
                if set(other) & {"bfloat16", "float16"} else " edgegen's graphs compute in float32")
        return f" (its weights are {' and '.join(other)}, the example float32: export module.float();{then})"
    halves = [name for name, value in example.items() if value.dtype == np.float16]
    if halves and weights == {"float32"}:
        return (f" (the example's {', '.join(map(repr, halves))} float16, the weights float32: give a float32 example, "
                "or export module.half() for a half-precision graph)")
    return ""


def _output_names(given, count: int) -> tuple[str, ...]:
    """The graph's output names: as given (one per tensor forward returns), else output / output.i."""
    if given is None:
        return ("output",) if count == 1 else tuple(f"output.{i}" for i in range(count))
    if isinstance(given, str) or not isinstance(given, (list, tuple)) or not all(isinstance(n, str) for n in given):
        raise ConfigError(f"output_names (--output-name): expected a list of names, found {given!r:.80}")
    if len(given) != count:
        raise ConfigError(f"output_names (--output-name): expected {count} name(s), one per tensor forward returns, found "
                          f"{len(given)}: {list(given)}")
    if "" in given:   # the ONNX checker's refusal named neither the option nor the output
        raise ConfigError(f"output_names (--output-name): expected names of at least one character, found {list(given)}")
    return tuple(given)


# ONNX's operators that draw random numbers: a graph with one gives other values than PyTorch's draws
RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")


def _refuse_random_draws(model: onnx.ModelProto, source: str) -> None:
    """A forward that draws random numbers (torch.randn_like) makes a graph that draws its own: it
    cannot reproduce the module, and the gate would report a mismatch, or ONNX Runtime lack the
    op, instead of the cause."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if not t.dims}
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    drawn = [f"{n.op_type} {n.name!r}" for n in nodes if n.op_type in RANDOM_OPS]
    # F.dropout(x, p) drops in training mode whatever the module's mode: ONNX's Dropout with training_mode true
    dropped = [f"Dropout {n.name!r} in training mode" for n in nodes if n.op_type == "Dropout" and len(n.input) > 2
               and n.input[2] and bool(constants.get(n.input[2], True))]
    if drawn or dropped:
        hint = ("; F.dropout(x, p) drops in eval mode too: give it training=self.training, or use nn.Dropout"
                if dropped else "")
        raise ValidationError(f"export of {source!r}: expected outputs its inputs decide, found random numbers drawn in "
                              f"forward ({', '.join(drawn + dropped)}): take the noise as an input, drawn by the "
                              f"caller{hint}")


INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                 onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}
# float types whose 24-bit (or fewer) significand holds integers exactly only up to 2**24 (2**11 for half)
NARROW_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@contextlib.contextmanager
def _nested_tensor_fast_path_said(module):
    """Around a call of forward: an nn.TransformerEncoder with its nested-tensor fast path, called
    with a src_key_padding_mask and no mask (what the fast path takes), is warned of. Under no_grad
    PyTorch then leaves padded positions at zero, which the graph computes, but only where the
    padding is at the end of a row; the gate's masks are drawn at random, so it passed or failed by
    chance, and a package that passed differed from the module on real masks (helper 142)."""
    encoders = [(name or "(the module)", m) for name, m in module.named_modules()
                if isinstance(m, torch.nn.TransformerEncoder) and getattr(m, "use_nested_tensor", m.enable_nested_tensor)]
    fast = []

    def padding_seen(name):
        def hook(_encoder, args, kwargs):
            mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
            padding = kwargs.get("src_key_padding_mask", args[2] if len(args) > 2 else None)
            if padding is not None and mask is None:
                fast.append(name)
        return hook

    handles = [m.register_forward_pre_hook(padding_seen(name), with_kwargs=True) for name, m in encoders]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    if fast:
        warn_caller(f"module: its nn.TransformerEncoder {', '.join(dict.fromkeys(fast))} runs PyTorch's nested-tensor "
                    "fast path, which leaves a key-padding mask's padded positions at zero where the padding ends a row, and the graph "
                    "computes them: the gate's random masks may not show it; build it with enable_nested_tensor=False "
                    "before export", EdgegenWarning)


def _warn_of_integers_computed_in_float(model: onnx.ModelProto) -> None:
    """A graph that casts integers to float32, computes, and casts back (torch.onnx writes
    torch.div(a, b, rounding_mode="trunc") on integers so) gives PyTorch's integers only while they
    stay below 2**24: past it, another answer without a word. The gate draws integers within the
    example's range, where it holds, so the export says so instead."""
    # torch.onnx records each value's type (no shape inference: it would copy a large model's weights)
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    in_float, back = set(), []
    for node in model.graph.node:   # in topological order, as ONNX requires
        to = next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None
        if to in NARROW_FLOAT_TYPES and types.get(node.input[0]) in INTEGER_TYPES:
            in_float.update(node.output)
        elif to in INTEGER_TYPES and node.input[0] in in_float:
            back.append(node.name or node.output[0])
        elif node.op_type != "Cast" and in_float & set(node.input):   # its float results (not an ArgMax's ids)
            in_float.update(o for o in node.output if types.get(o) in NARROW_FLOAT_TYPES)
    if back:
        warn_caller(f"export: the graph computes integers in float32 and casts them back (at {', '.join(back[:3])}): "
                    f"exact only while they stay below 2**24 in magnitude (torch.onnx writes integer division with "
                    f"rounding_mode='trunc' so); the gate drew integers within the example's range", EdgegenWarning)


def _tolerances(atol, rtol) -> tuple[float, float]:
    """The gate's tolerances: as given, else FLOAT32_TOLERANCES (a float16 output is compared at
    its own, validate.output_tolerances); floats, a numpy one too, recorded in the manifest's JSON.
    One float16 output widened every output's: a float32 output 0.5% off passed beside one."""
    return (float(FLOAT32_TOLERANCES[0] if atol is None else atol), float(FLOAT32_TOLERANCES[1] if rtol is None else rtol))


FIXED_SIZE_ADVICE = ("the trace fixed something that depends on a size (a branch on x.shape, a size turned into a "
                     "constant), so give --dynamic only for dims the module takes at any size, or --limit below the "
                     "sizes it fails at")


# ONNX Runtime's CPU kernel of ONNX's Attention op (opset 23) is stricter than the op: it failed
# on a key-padding mask broadcast over the queries ("inconsistent q_sequence_length"), which the
# export now expands (translations.py), and may on other inputs; opset 18 has no Attention op
ATTENTION_ADVICE = ("ONNX Runtime's kernel of ONNX's Attention op (opset 23) failed on it, as it fails on some masks "
                    "ONNX allows: export with --opset 18 (opset=18), where attention is MatMul, Softmax and MatMul")


def _gate_failures(results: list, tolerance: str, traced: str) -> str:
    """The gate's failures, the worst of each output at each size (several feeds share a size),
    and where the graph holds at the traced size (labelled `traced`) and fails at others, what
    that points to; "" where it passed."""
    worst = {}
    for r in results:
        if not r.passed and ((r.output, r.batch) not in worst or r.max_abs > worst[r.output, r.batch].max_abs):
            worst[r.output, r.batch] = r
    if not worst:
        return ""
    lines = "; ".join(f"graph {GRAPH!r} {r.line()}" for r in worst.values()) + f" ({tolerance})"
    held = sorted({r.batch for r in results} - {r.batch for r in worst.values()})
    if traced in held:   # a wrong graph at the traced size itself is not the trace's fixing of a size
        lines += f"; it holds at {' and '.join(held)}: {FIXED_SIZE_ADVICE}"
    return lines


def _fresh_sizes(dim: str, traced: int, limit: int) -> list[int]:
    """Two sizes the trace did not see: a batch of 1 and one more; other dims a step up and a step
    down, the step the largest power of two dividing the traced size, at most half of it (a
    strided model needs sizes its strides divide)."""
    if dim == "batch":
        sizes = [1, traced + 1]
    else:
        step = min(traced & -traced, max(1, traced // 2))
        sizes = [traced + step, traced - step]
    return [min(s, limit) for s in sizes]


def _synthesized(specs, example, traced, limits, rng) -> list[dict[str, np.ndarray]]:
    """Feeds at the fresh sizes (and the traced one), each value drawn like the example's:
    floats from a normal with its mean and spread, kept within its range; integers within its range."""
    settings = [{d: _fresh_sizes(d, s, limits[d])[k] for d, s in traced.items()} for k in (0, 1)] + [dict(traced)]
    return [_feed_at(specs, example, settings[i % len(settings)], rng) for i in range(SYNTHESIZED_FEEDS)]


def _feed_at(specs, example, sizes: dict[str, int], rng) -> dict[str, np.ndarray]:
    """A feed with each dynamic dim at `sizes`, its values drawn like the example's."""
    return {spec.name: _draw_like(example[spec.name], tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape),
                                  rng) for spec in specs}


def _one_dim_at(dim: str, size: int, traced: dict[str, int]) -> dict[str, int]:
    """`dim` at `size`, the other dims as traced and the batch at 1: one dim moves at a time."""
    return {d: size if d == dim else (1 if d == "batch" else traced[d]) for d in traced}


def _tried(module, session, feed, atol, rtol) -> tuple[list | None, list[str]]:
    """(the gate's results at one feed, where the graph fails or differs from the module there):
    results None where the module itself fails on the feed, whose size it cannot take."""
    try:
        found = gate_feeds(module, session, [feed], atol, rtol)
    except (InputError, BackendError) as exc:   # the module ran (it runs first): ONNX Runtime failed on the graph
        return [], [f"the graph fails: {first_line(exc)}"]
    except EdgegenError:
        raise
    except Exception:  # noqa: BLE001 - the user's module failing at this size
        return None, []
    if not all(r.reference_finite for r in found):   # the module's own NaN (x.std(0) of one row): nor a size it takes
        return None, []
    return found, [r.line() for r in found if not r.passed]


def _gate_below(module, session, specs, example, traced, least, rng, atol, rtol) -> tuple[list, dict[str, int]]:
    """(the gate's results, each dynamic dim's smallest size checked) going down from the smallest
    size the gate tried (`least`), halving (a strided model takes the sizes its strides divide),
    one dim at a time, the others as traced and the batch at 1: the package claims the sizes from
    there to the limit, and the runtime refuses the others, where the trace may have fixed a branch
    on a size (`if x.shape[-1] < 8`) that no size the gate tried took. It stops where the module
    itself fails (its smallest size) and, with a warning, where the graph differs from it."""
    results, minimums = [], dict(least)
    for dim in (d for d in traced if d != "batch"):
        sizes_down = [least[dim] >> k for k in range(1, least[dim].bit_length())] + ([0] if may_be_empty(dim) else [])
        for size in sizes_down:
            found, failed = _tried(module, session, _feed_at(specs, example, _one_dim_at(dim, size, traced), rng),
                                   atol, rtol)
            if found is None:   # the module itself cannot take this size: the least is the last
                break
            if failed:
                warn_caller(f"export: the graph differs from the module at {dim} {size} ({'; '.join(failed)}): the trace "
                            f"fixed a branch on a size or a size turned into a constant there, so the package takes "
                            f"{dim} {minimums[dim]} and up, and the runtime refuses less", EdgegenWarning)
                break
            results += found
            minimums[dim] = size
    return results, minimums


def _gate_between_steps(module, session, specs, example, traced, limits, rng, atol, rtol) -> tuple[list, dict[str, int]]:
    """(the gate's results, {dim: step} for each dim whose sizes must be multiples of one): the
    sizes the gate tried step by the fresh sizes' step (a strided module takes the sizes its
    strides divide), and the package would claim every size from its least to its limit, so each
    dim is tried at the traced size plus 1, 2, 4, ... (minus, where that passes the limit), the
    others as traced and the batch at 1, up to the first the graph matches the module at: the
    step the runtime then holds a size to. Where the module ran and the graph did not match it
    there, the export warns, as _gate_below does."""
    results, steps = [], {}
    for dim in (d for d in traced if d != "batch"):
        fresh_step = abs(traced[dim] - _fresh_sizes(dim, traced[dim], limits[dim])[1])
        step, graph_failed = 1, []
        while step < fresh_step:
            size = traced[dim] + step if traced[dim] + step <= limits[dim] else traced[dim] - step
            found, failed = _tried(module, session, _feed_at(specs, example, _one_dim_at(dim, size, traced), rng),
                                   atol, rtol)
            if found is not None and not failed:
                results += found
                break
            if failed:   # the module ran there and the graph did not match it (a module that fails: nor can the graph)
                graph_failed.append(f"{size}: " + "; ".join(failed))
            step *= 2
        if step > 1:
            steps[dim] = step
        if graph_failed:
            warn_caller(f"export: the graph differs from the module at {dim} {'; '.join(graph_failed)}: the trace fixed "
                        f"a size there, so the package takes {dim} in multiples of {step}, and the runtime refuses the "
                        "others", EdgegenWarning)
    return results, steps


def _gate_at_limits(module, session, specs, example, traced, limits, rng, atol, rtol, source, conditions=()) -> list:
    """The gate at each dynamic dim's recorded limit, the other dims as traced (and the batch at 1
    beside another dim's limit, so that only one dim grows at a time): the manifest's limits are
    what TensorRT profiles are built to, and a size-dependent branch (`if x.shape[-1] > 100`) that
    the trace fixed, or a table a size outgrows, holds only below some size. Checked one dim at a
    time, so that a failure names the dim whose --limit to lower. The limit itself, as recorded: a
    strided model that cannot take it cannot take every size the profile claims either."""
    results = []
    for dim, size in limits.items():
        if size <= max(_fresh_sizes(dim, traced[dim], limits[dim])):   # the gate tried it already
            continue
        fix = f"give --limit {dim}=N (dim_limits) below {size}, up to where it holds"
        why = ("the trace fixes a branch on a size, or a size a table outgrows, where it holds only below some size: "
               + fix)
        at_limit = {**traced, dim: size}   # a condition the trace took that the limit does not meet names the bound
        if turned := [c for c in conditions if dim in c.dims.values() and c.turns(at_limit, traced)]:
            why = f"the trace took a branch on {turned[0].said(traced)}: {turned[0].advice(dim, traced)}"
        try:   # the feed inside: inputs at a limit of 10**12 rows are the memory the limit asks for
            found = gate_feeds(module, session, [_feed_at(specs, example, _one_dim_at(dim, size, traced), rng)], atol, rtol)
        except EdgegenError:
            raise
        except Exception as exc:  # noqa: BLE001 - the module failing at its recorded limit is the gate's finding
            raise ValidationError(f"export of {source!r}: the module or its graph failed at {dim} {size}, the largest "
                                  f"size recorded for {dim} (TensorRT profiles are built to it): {described(exc)}; "
                                  f"{fix}") from None
        if not all(r.reference_finite for r in found):
            raise ValidationError(f"export of {source!r}: expected finite outputs from the module at {dim} {size}, the "
                                  f"largest size recorded for {dim} (TensorRT profiles are built to it), found NaN or Inf "
                                  f"from PyTorch itself; {fix}")
        failures = [f"{r.line()} ({tolerance_said(atol, rtol, session.outputs)})" for r in found if not r.passed]
        if failures:
            raise ParityError(f"export of {source!r} does not reproduce PyTorch at {dim} {size}, the largest size "
                                  f"recorded for {dim}, package not written: " + "; ".join(failures) + f"; {why}")
        results += found
    return results


def _gate_dims_equal(module, session, specs, example, traced, limits, minimums, multiples, rng, atol, rtol,
                     source) -> list:
    """The gate where two dynamic dims traced at different sizes are equal, each pair at a size
    both take, the others as traced and the batch at 1: every other feed moves one dim at a time,
    so a branch the trace fixed on two sizes being equal (`if x.shape[2] == x.shape[3]`, a square
    picture) was never tried, and the package answered every square input wrongly (helper 142)."""
    results = []
    dims = list(traced)
    for i, a in enumerate(dims):
        for b in dims[i + 1:]:
            if traced[a] == traced[b]:   # the traced feed has them equal already
                continue
            size = _size_both_take(a, b, traced, limits, minimums, multiples)
            if size is None:
                continue
            sizes = {d: size if d in (a, b) else (1 if d == "batch" else traced[d]) for d in traced}
            found, failed = _tried(module, session, _feed_at(specs, example, sizes, rng), atol, rtol)
            if failed:
                raise ParityError(f"export of {source!r} does not reproduce PyTorch where {a} and {b} are both {size} "
                                  f"(traced at {traced[a]} and {traced[b]}), package not written: {'; '.join(failed)} "
                                  f"({tolerance_said(atol, rtol, session.outputs)}); the trace fixed a branch on the two "
                                  f"being equal (if x.shape[2] == x.shape[3]): take the branch out of forward, or give both "
                                  f"dims fixed sizes (--dynamic without them)")
            results += found or []
    return results


def _gate_against_conditions(module, session, specs, example, traced, limits, minimums, multiples, conditions, rng,
                             atol, rtol, source) -> list:
    """The gate at the sizes where a condition the trace took a branch on (`if x.shape[-1] == 50`,
    onnx_export.SizeCondition) is not as it was, one dim at a time, within the sizes the package
    claims (its least, limit and multiples): every other check moves by steps that may step over
    one size, and the package answered every width 50 wrongly (helper 142). Where the module runs
    there and the graph does not match it, the export is refused."""
    results, tried = [], set()
    for condition in conditions:
        for dim in sorted(set(condition.dims.values())):
            most = _batch_reach(specs, example, traced) if dim == "batch" else limits[dim]
            for size in condition.sizes_against(dim, traced, minimums.get(dim, 1), most, multiples.get(dim, 1)):
                if (dim, size) in tried:
                    continue
                tried.add((dim, size))
                found, failed = _tried(module, session, _feed_at(specs, example, _one_dim_at(dim, size, traced), rng),
                                       atol, rtol)
                if failed:
                    raise ParityError(f"export of {source!r} does not reproduce PyTorch at {dim} {size}, package not "
                                      f"written: {'; '.join(failed)} ({tolerance_said(atol, rtol, session.outputs)}); "
                                      f"the trace took a branch on {condition.said(traced)} (at {dim} {traced[dim]}), "
                                      f"which {dim} {size} does not meet: {condition.advice(dim, traced)}")
                results += found or []
    return results


# the runtime takes a batch past its recorded limit (rows are independent), so a condition on the batch
# is tried at any batch whose feed is at most this many bytes (a branch on batch == 32 answered batch 32
# wrongly, review 153; batch > 100, review 154)
BATCH_CONDITION_BYTES = 256 << 20


def _batch_reach(specs, example, traced) -> int:
    """The largest batch whose feed (the other dims as traced) stays within BATCH_CONDITION_BYTES."""
    row = sum(int(np.prod([traced[d] if isinstance(d, str) else d for d in spec.shape if d != "batch"]))
              * example[spec.name].dtype.itemsize for spec in specs)
    return max(1, BATCH_CONDITION_BYTES // max(row, 1))


def _size_both_take(a: str, b: str, traced, limits, minimums, multiples) -> int | None:
    """A size dims `a` and `b` both take (within their least sizes, limits and multiples), near
    the larger of their traced sizes; None where there is none."""
    step = math.lcm(multiples.get(a, 1), multiples.get(b, 1))
    least, most = max(minimums.get(a, 1), minimums.get(b, 1), 1), min(limits[a], limits[b])
    for wanted in (max(traced[a], traced[b]), min(traced[a], traced[b])):
        size = max(-(-wanted // step) * step, -(-least // step) * step)
        if size <= most:
            return size
    return None


# ops that pass an integer input's values through unchanged on their way to a Gather
VALUE_PRESERVING_OPS = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}


def embedding_rows(model: onnx.ModelProto) -> dict[str, int]:
    """{graph input: rows of the embedding table it indexes}, for each input that reaches an
    nn.Embedding lookup's indices (a Gather the exporter marks as aten.embedding). PyTorch's
    embedding refuses an index outside [0, rows), but ONNX's Gather takes a negative one as
    counted from the end, so the runtime checks these inputs' values (GenericPipeline). A plain
    `table[ids]` indexes as Python does, negatives included, and is left alone."""
    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    inputs = {i.name for i in model.graph.input}
    rows: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or not _marked_embedding(node) or not tables.get(node.input[0]):
            continue
        name = node.input[1]
        while name in producers and producers[name].op_type in VALUE_PRESERVING_OPS:
            name = producers[name].input[0]
        if name in inputs:
            rows[name] = min(rows.get(name, tables[node.input[0]][0]), tables[node.input[0]][0])
    return rows


def _marked_embedding(node: onnx.NodeProto) -> bool:
    """The torch.export exporter records each node's aten op in its metadata."""
    return any(p.key == "pkg.torch.onnx.class_hierarchy" and "aten.embedding" in p.value for p in node.metadata_props)


def _values_given(example: dict[str, np.ndarray], feeds: list[dict]) -> dict[str, np.ndarray]:
    """Each input's values in the example and the held-out `feeds`, flattened: what the gate's
    drawn feeds take their mean, spread and range from (a temperature held out from 0.5 to 1.0
    is drawn there, not around an example's one value). A mask (bool, 2 dims or more) keeps its
    rows along the last axis, those of the example's length: _mask_like draws by their kind (a
    flattened mask was one row, and every later feed's one-key row was masked whole: review 153)."""
    def given(name: str, value: np.ndarray) -> np.ndarray:
        if value.dtype == np.bool_ and value.ndim >= 2:
            width = value.shape[-1]
            return np.concatenate([value.reshape(-1, width), *(feed[name].reshape(-1, width) for feed in feeds
                                                               if feed[name].shape[-1] == width)])
        return np.concatenate([np.ravel(value), *(np.ravel(feed[name]) for feed in feeds)]).astype(value.dtype)

    return {name: given(name, value) for name, value in example.items()}


def _draw_like(array: np.ndarray, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    if array.dtype == np.bool_:
        return _mask_like(array, rng.random(shape) < array.mean(), rng)
    low, high = (array.min(), array.max()) if array.size else (0, 1)
    if array.dtype.kind in "iu":
        return rng.integers(int(low), int(high) + 1, size=shape).astype(array.dtype)
    if array.size and low == high:   # one value throughout (a temperature, a gain, zeros): near it, on its side of 0,
        near = (0.0, 1.0) if low == 0 else sorted((float(low) / 2, float(low) * 1.5))   # where sqrt and log are defined
        return rng.uniform(*near, size=shape).astype(array.dtype)
    spread = float(array.std()) or 1.0
    drawn = rng.normal(float(array.mean()), spread, size=shape)
    if high > low:   # within the example's range; redrawn there, not clipped: clipping makes ties at its ends,
        outside = (drawn < low) | (drawn > high)   # where sort and topk order equal values each its own way
        drawn[outside] = rng.uniform(float(low), float(high), size=int(outside.sum()))
    return drawn.astype(array.dtype)


def _mask_like(example: np.ndarray, drawn: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`drawn` booleans with no row along the last axis all True, nor all False, where the
    example has none: a key padding mask's rows keep a key to attend to (a row of all keys
    masked is NaN in PyTorch itself, and the gate was refused for it, with advice about limits).
    Where the example's rows read as a padding or causal mask's (each at most one run of each
    value), an end key of one value in every row (a right-padded mask's first key False, a causal
    mask's first key True, a left-padded mask's last) keeps it in every drawn row: two masks a
    module combines (nn.MultiheadAttention's attn_mask and key_padding_mask) then still leave that
    key to every query, as the example's do (drawn apart, their rows' one kept key each often
    differed, the combined row was masked whole, NaN in PyTorch, and a right module was refused:
    review 188). Rows of flags, not runs, keep every key drawn (review 190). A row of one, which
    cannot keep both, takes the first key's value where it is held, else the last's (a mask padded
    at its first key in every example row masks such a row whole: the package's least size is then
    2); without such a key the commoner value."""
    if example.ndim < 2 or not example.shape[-1] or drawn.ndim < 2 or not drawn.shape[-1]:   # a flag, not a mask
        return drawn
    rows, width = example.reshape(-1, example.shape[-1]), drawn.shape[-1]
    runs = (rows[:, 1:] != rows[:, :-1]).sum(axis=-1) <= 1   # F..FT..T, T..TF..F, or one value throughout
    held = [end for end in (-1, 0) if runs.all() and (rows[:, end] == rows[0, end]).all()]   # the first last: it wins a row of one
    for end in held:
        drawn[..., end] = rows[0, end]
    kept = bool(rows[0, held[-1]]) if held else bool(example.mean() >= 0.5)
    free = [key for key in range(width) if key not in {end % width for end in held}] or list(range(width))
    for value in (kept, not kept):   # rows all of the other value mended last: a row of one ends kept
        if not (example == value).all(axis=-1).any():
            whole = np.argwhere((drawn == value).all(axis=-1))   # the drawn rows all of `value`, one free key each flipped
            drawn[(*whole.T, rng.choice(free, len(whole)))] = not value
    return drawn


def _least_sizes(specs, feeds: list[dict[str, np.ndarray]]) -> dict[str, int]:
    """Each dynamic dim's smallest size among `feeds`."""
    least: dict[str, int] = {}
    for feed in feeds:
        for spec in specs:
            for dim, size in zip(spec.shape, feed[spec.name].shape):
                if isinstance(dim, str):
                    least[dim] = min(least.get(dim, size), int(size))
    return least


def _held_out(held_out, specs, limits: dict[str, int]) -> list[dict[str, np.ndarray]]:
    if isinstance(held_out, np.lib.npyio.NpzFile):   # np.load's result, itself a Mapping
        raise ConfigError("held_out (--held-out): expected the .npz file's path or a list of feeds, found an opened "
                          "NpzFile: give its path")
    if isinstance(held_out, Mapping):   # one feed given where a list of them is asked for
        raise ConfigError(f"held_out (--held-out): expected a list of feeds (each a dict of input name -> array), found "
                          f"one dict of {sorted(map(str, held_out))}: give [feed, feed, ...], at least 2")
    feeds = read_feeds(held_out) if isinstance(held_out, (str, os.PathLike)) else list(held_out)
    if not_feeds := sorted({type(f).__name__ for f in feeds if not isinstance(f, Mapping)}):
        raise ConfigError(f"held_out (--held-out): expected a list of feeds (each a dict of input name -> array), found "
                          f"items of type {', '.join(not_feeds)}")
    if len(feeds) < 2:   # recorded for optimize, which calibrates on half of them and gates on the others
        raise ConfigError(f"held_out (--held-out): expected at least 2 feeds of inputs (optimize calibrates on half of them and "
                          f"gates on the rest), found {len(feeds)}: give more (an .npz holds several as keys 0/NAME, "
                          "1/NAME, ...), or none, to have them drawn like the example")
    names = sorted(s.name for s in specs)
    checked = []
    for i, feed in enumerate(feeds):
        feed = {str(k): _numpy(v, f"held_out (--held-out) feed {i} input {k!r}") for k, v in dict(feed).items()}
        if sorted(feed) != names:
            raise ConfigError(f"held_out (--held-out) feed {i}: expected the inputs {names}, found {sorted(feed)}")
        for spec in specs:
            array, shape = feed[spec.name], spec.shape
            if array.dtype.name != spec.dtype or array.ndim != len(shape) or any(
                    isinstance(d, int) and d != n for d, n in zip(shape, array.shape)):
                raise ConfigError(f"held_out (--held-out) feed {i} input {spec.name!r}: expected {spec.describe()}, found "
                                  f"{array.dtype.name}{list(array.shape)}")
            # checked, but outside what the package claims and its TensorRT profiles hold (the batch
            # past its limit is taken, as the runtime takes it: rows are independent)
            limited = [d for d in shape if isinstance(d, str) and d != "batch"]
            if beyond := [f"{d} {n}" for d, n in zip(shape, array.shape) if d in limited and n > limits[d]]:
                raise ConfigError(f"held_out (--held-out) feed {i} input {spec.name!r}: expected sizes within the limits "
                                  f"({', '.join(f'{d} {limits[d]}' for d in limited)}), found {', '.join(beyond)}: give "
                                  "--limit (dim_limits) to take it")
        checked.append(feed)
    return checked


def _required_arguments(factory) -> list[str]:
    """The parameters a call without arguments would leave unfilled (none known for a callable
    whose signature Python cannot read: it is called and says so itself)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                                              p.KEYWORD_ONLY)]


def load_factory(reference: str, flag: str = "--module") -> torch.nn.Module:
    """`path/to/model.py:make_model` or `package.module:make_model` -> the module the factory returns;
    `flag` is the option that gave it, which every refusal names."""
    location, _, attribute = reference.rpartition(":")
    if not location or not attribute:
        raise ConfigError(f"{flag} {reference!r}: expected FILE.py:FACTORY or package.module:FACTORY")
    if location.endswith(".py"):
        path = Path(location).resolve()
        if not path.is_file():
            raise ConfigError(f"{flag} {reference!r}: expected a Python file at {location!r}, found nothing there")
        if str(path.parent) not in sys.path:   # the file's own imports of its neighbours
            sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(f"edgegen_user_module_{path.stem}", path)
        code = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = code
        with _users_code(flag, reference, "a Python file that imports"):
            spec.loader.exec_module(code)
    else:
        if os.getcwd() not in sys.path:   # as `python -m` finds them: modules in the working directory too
            sys.path.insert(0, os.getcwd())
        try:
            with _users_code(flag, reference, "a module that imports"):
                code = importlib.import_module(location)
        except ConfigError as refused:
            missing = refused.__cause__
            if isinstance(missing, ImportError) and missing.name in _packages_of(location):
                raise ConfigError(f"{flag} {reference!r}: expected an importable module {location!r}, found: "
                                  f"{missing}") from None
            raise
    factory = getattr(code, attribute, None)
    if isinstance(factory, torch.nn.Module):   # the module itself, where a factory was asked for: taken
        return factory
    if not callable(factory):
        raise ConfigError(f"{flag} {reference!r}: expected a callable {attribute!r} in {location!r}, found "
                          f"{type(factory).__name__ if factory is not None else 'nothing'}")
    needs = _required_arguments(factory)
    if needs:
        raise ConfigError(f"{flag} {reference!r}: expected a factory that takes no arguments, found {attribute!r} "
                          f"needing {', '.join(needs)}")
    with _users_code(flag, reference, "the factory to return a module"):
        module = factory()
    if isinstance(module, type) and issubclass(module, torch.nn.Module):   # `return Model`: "found type" said nothing
        raise ConfigError(f"{flag} {reference!r}: expected the factory to return a torch.nn.Module, found the class "
                          f"{module.__name__} itself: return an instance of it ({module.__name__}(...))")
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{flag} {reference!r}: expected the factory to return a torch.nn.Module, found "
                          f"{type(module).__name__}")
    return module


def _packages_of(location: str) -> list[str]:
    """"a.b.c" -> ["a", "a.b", "a.b.c"]: an ImportError naming one of them is the module missing,
    not a dependency of its."""
    parts = location.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@contextlib.contextmanager
def _users_code(flag: str, reference: str, expected: str):
    """Run the user's file, module or factory: what it raises is a ConfigError naming it (--debug
    shows where), and so is its exit. A script's module-level argparse or sys.exit runs on import:
    it sees the file's own name and no arguments, as `python model.py` would, not edgegen's."""
    argv = sys.argv
    sys.argv = [reference.rpartition(":")[0]]
    try:
        yield
    except SystemExit as exc:
        raise ConfigError(f"{flag} {reference!r}: expected {expected}, found it exiting (SystemExit {exc.code!r}): "
                          "put a script's argument parsing and sys.exit under if __name__ == '__main__':") from None
    except Exception as exc:  # noqa: BLE001 - the user's code failing is theirs to read (--debug shows where)
        raise ConfigError(f"{flag} {reference!r}: expected {expected}, found it raising "
                          f"{type(exc).__name__}: {exc}") from exc
    finally:
        sys.argv = argv


def parse_dynamic(specs: list[str] | None) -> dict[str, dict[int, str]] | None:
    """["image:0=batch", "image:2=height"] -> {"image": {0: "batch", 2: "height"}}; None: the default;
    ["none"]: {}, every shape as the example's (a streaming model's batch of one)."""
    if specs is None:
        return None
    if "none" in specs:
        if len(specs) > 1:
            raise ConfigError(f"--dynamic none: expected alone (every shape as the example's), found it with "
                              f"{', '.join(s for s in specs if s != 'none')}")
        return {}
    dynamic: dict[str, dict[int, str]] = {}
    for spec in specs:
        where, _, dim = spec.partition("=")
        name, _, axis = where.rpartition(":")
        if not name or not axis.isdigit() or not dim:
            raise ConfigError(f"--dynamic {spec!r}: expected INPUT:AXIS=NAME, e.g. image:0=batch")
        axes = dynamic.setdefault(name, {})
        if int(axis) in axes and axes[int(axis)] != dim:   # the later would silently win
            raise ConfigError(f"--dynamic {spec!r}: expected one name per axis, found {name}:{axis} named "
                              f"{axes[int(axis)]!r} already")
        axes[int(axis)] = dim
    return dynamic


def weights_sha256(module: torch.nn.Module) -> str:
    """A hash of the module's parameters and buffers, in state_dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")   # any dtype, bf16 too
    return digest.hexdigest()


def eager_modules(reference: str, package) -> dict[str, torch.nn.Module]:
    """`edgegen bench PKG --vs-torch FILE.py:FACTORY`: the module the package was exported from,
    refused when its weights are not the exported ones."""
    module = load_factory(str(reference), "--vs-torch").eval()
    expected = package.manifest.provenance.get("source_module", {}).get("weights_sha256")
    found = weights_sha256(module)
    if expected and expected != found:
        raise CheckpointError(f"--vs-torch {str(reference)!r}: expected the weights package {str(package.path)!r} was "
                              f"exported from (sha256 {expected[:12]}...), found {found[:12]}...")
    if not module.state_dict():   # no weights to tell modules apart by: any would pass, so its outputs are compared
        _refuse_other_outputs(str(reference), package, module)
    return {GRAPH: module}


def _refuse_other_outputs(reference: str, package, module: torch.nn.Module) -> None:
    """A module without weights against the package's graph on its first recorded feed, within the
    export's tolerances: another module would be timed as if it were the one exported."""
    from ...families import package_config

    _, config = package_config(package)
    entry = package.graphs[GRAPH]
    if getattr(config, "held_out", None) is None:   # nothing recorded to compare on
        return
    feed = recorded_feeds(package, config)[0]
    checked = entry.extra.get("validation", {})
    session = OrtSession(GRAPH, package.graph_path(GRAPH), entry.inputs, entry.outputs, backend="ort-cpu")
    try:
        found = gate_feeds(module, session, [feed], float(checked.get("atol", FLOAT32_TOLERANCES[0])),
                           float(checked.get("rtol", FLOAT32_TOLERANCES[1])))
    except EdgegenError:
        raise
    except Exception as exc:  # noqa: BLE001 - a module that cannot take the package's inputs is another module
        raise CheckpointError(f"--vs-torch {reference!r}: expected the module package {str(package.path)!r} was "
                              f"exported from, found one failing on its recorded inputs ({described(exc)})") from None
    if failed := [r.line() for r in found if not r.passed]:
        raise CheckpointError(f"--vs-torch {reference!r}: expected the module package {str(package.path)!r} was "
                              f"exported from (it has no weights to compare), found other outputs on its recorded "
                              f"inputs: {'; '.join(failed)}")
