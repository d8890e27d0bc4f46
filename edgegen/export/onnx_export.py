"""torch.nn.Module -> checked ONNX ModelProto, with named dynamic axes."""

from __future__ import annotations

import contextvars

import contextlib
import copy
import inspect
import logging
import math
import operator
import re
import sys
import threading
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import onnx
import torch

from ..errors import ConfigError, ValidationError, described
from ..package import TensorSpec
from ..targets import DEFAULT_OPSET
from .graph_rewrites import stable_log_sigmoid
from .translations import translation_table
from .validate import torch_inputs
_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


def value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = tuple(d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in tensor.shape.dim)
    return TensorSpec(value.name, _ONNX_DTYPES.get(tensor.elem_type) or _numpy_name(tensor.elem_type), dims)


def _numpy_name(elem_type: int) -> str:
    """A dtype edgegen's packages do not hold, by numpy's name (float64), for the refusal that names it."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return f"ONNX type {elem_type}"


_EXPORT_OPSET: contextvars.ContextVar[int | None] = contextvars.ContextVar("edgegen_export_opset", default=None)


def export_opset() -> int | None:
    """The opset of the export being traced (None outside one): a module whose fused ONNX ops exist
    only from some opset (RotaryEmbedding: 23) computes them from simpler ops below it."""
    return _EXPORT_OPSET.get()


# torch.export takes a dynamic dim as at least 2, so x.squeeze(0) on the batch removes nothing in its
# trace, while ONNX's Squeeze removes the axis whatever its size: the ranks disagree
RANK_HINT = ("; an op whose result's rank depends on a dynamic dim's size, such as x.squeeze(0) where axis 0 is the "
             "batch (the trace takes a dynamic dim as at least 2, so it squeezes nothing, and ONNX's Squeeze removes it): "
             "export that dim fixed (--dynamic without it; dynamic={} in Python fixes them all), or squeeze a dim "
             "that is always 1")


@dataclass(frozen=True)
class SizeCondition:
    """A condition on dynamic dims' sizes that the trace took a branch on (`if x.shape[-1] == 50`:
    torch.export's guard width != 50, deferred into its program as a runtime assert, which ONNX
    does not keep): the graph is the module's only where the condition is as it was at the trace."""
    relation: Any   # a sympy relation over the dims' symbols
    dims: dict      # {sympy symbol: dim name}

    def holds(self, sizes: dict[str, int]) -> bool:
        return bool(self.relation.subs({symbol: sizes[dim] for symbol, dim in self.dims.items()}))

    def turns(self, sizes: dict[str, int], traced: dict[str, int]) -> bool:
        """Whether the condition is otherwise at `sizes` than at the trace; False where sympy
        cannot tell (a relation it does not reduce to true or false)."""
        try:
            return self.holds(sizes) != self.holds(traced)
        except TypeError:
            return False

    def said(self, sizes: dict[str, int]) -> str:
        """The condition as it holds at `sizes`, in dim names (width != 50)."""
        import sympy

        relation = self.relation if self.holds(sizes) else self.relation.negated
        named = relation.subs({symbol: sympy.Symbol(dim) for symbol, dim in self.dims.items()})
        return f"{_said(named.lhs)} {named.rel_op} {_said(named.rhs)}"

    def sizes_against(self, dim: str, traced: dict[str, int], least: int, most: int, step: int = 1) -> list[int]:
        """The sizes of `dim` nearest its traced one, below it and above it, within [least, most] in
        multiples of `step`, the other dims as traced, at which the condition is not as at the trace:
        where the module takes another branch. Every size there is judged where there are at most
        SCANNED_SIZES of them (width // 8 == 5 turns at 40 to 47, far from its constants), else an even
        spread of them, those beside the condition's constants and the SCANNED_SIZES nearest the
        traced one; none where the condition cannot be judged (sympy does not reduce it)."""
        import sympy

        holds = self._holds_at(dim, traced)
        try:
            at_trace = holds(traced[dim])
        except TypeError:
            return []
        first = -(-max(least, 0) // step) * step
        sizes = range(first, most + 1, step)
        if len(sizes) > SCANNED_SIZES:
            spread = sizes[::-(-len(sizes) // SCANNED_SIZES)]
            centre = traced[dim] - traced[dim] % step
            window = range(max(first, centre - SCANNED_SIZES // 2 * step), min(most, centre + SCANNED_SIZES // 2 * step) + 1,
                           step)
            near = {int(c) + d for c in self.relation.atoms(sympy.Integer) for d in (-1, 0, 1)}
            sizes = sorted({*spread, *window, *(s for s in near if first <= s <= most and s % step == 0)})

        def turned_at(size: int) -> bool:
            try:
                return holds(size) != at_trace
            except TypeError:
                return False

        turned = [s for s in sizes if s != traced[dim] and turned_at(s)]
        below = [s for s in turned if s < traced[dim]]
        above = [s for s in turned if s > traced[dim]]
        return ([below[-1]] if below else []) + ([above[0]] if above else [])

    def _holds_at(self, dim: str, traced: dict[str, int]):
        """size -> whether the condition holds with `dim` at it, the other dims as traced: the
        relation made a Python function (microseconds a size), else sympy's substitution (a
        TypeError where it does not reduce to true or false)."""
        import sympy

        size = sympy.Symbol("size", integer=True, nonnegative=True)
        relation = self.relation.subs({symbol: size if named == dim else traced[named]
                                       for symbol, named in self.dims.items()})
        by_sympy = lambda value: bool(relation.subs(size, value))   # noqa: E731
        try:
            function = sympy.lambdify(size, relation, modules=[INTEGER_FUNCTIONS, "math"])
            if all(bool(function(v)) == by_sympy(v) for v in (traced[dim], 1, traced[dim] * 2 + 1)):
                return lambda value: bool(function(value))
        except Exception:  # noqa: BLE001 - a function of torch's sympy the printer does not know: substituted instead
            pass
        return by_sympy

    def advice(self, dim: str, traced: dict[str, int]) -> str:
        """What to do where the graph differs beyond the condition: a bound from above (T <= 100) is
        a --limit; any other branch is the module's to drop, or the dim's to fix."""
        relation = self.relation if self.holds(traced) else self.relation.negated
        symbols = [s for s, named in self.dims.items() if named == dim]
        # a bound on the batch is no limit the runtime holds to (it takes any batch, rows being independent)
        if dim != "batch" and relation.rel_op in ("<=", "<") and relation.lhs in symbols and relation.rhs.is_Integer:
            bound = int(relation.rhs) - (relation.rel_op == "<")
            return f"give --limit {dim}={bound} (dim_limits), below which the trace's branch holds"
        return f"take the branch out of forward, or give {dim} a fixed size (--dynamic without it)"


def _said(expression) -> str:
    """A size expression as Python writes it: torch's sympy functions (PythonMod(width, 7),
    CeilToInt(IntTrueDiv(width, 8)), ToFloat(width)) as the operators they stand for."""
    from sympy.printing.str import StrPrinter

    infix = {"PythonMod": "%", "Mod": "%", "IntTrueDiv": "/", "FloatTrueDiv": "/", "FloorDiv": "//", "CleanDiv": "//"}
    calls = {"CeilToInt": "ceil", "FloorToInt": "floor", "TruncToInt": "trunc", "RoundToInt": "round", "Min": "min",
             "Max": "max"}

    class Printer(StrPrinter):
        def _print_Function(self, expr):
            name, args = type(expr).__name__, [self._print(a) for a in expr.args]
            if name in infix and len(args) == 2:
                return f"({args[0]} {infix[name]} {args[1]})"
            if name == "ToFloat" and len(args) == 1:
                return args[0]
            return f"{calls.get(name, name)}({', '.join(args)})"

        _print_Min = _print_Max = _print_Function

    return Printer().doprint(expression)


SCANNED_SIZES = 4096   # a dim's sizes judged one by one against a condition, at most
# torch's sympy functions in the trace's conditions, as Python computes them on integers
INTEGER_FUNCTIONS = {"FloorDiv": operator.floordiv, "PythonMod": operator.mod, "Mod": operator.mod, "Min": min,
                     "Max": max, "CleanDiv": operator.floordiv, "FloorToInt": math.floor, "CeilToInt": math.ceil,
                     "TruncToInt": math.trunc, "IntTrueDiv": operator.truediv, "FloatTrueDiv": operator.truediv,
                     "ToFloat": float, "RoundToInt": round, "RoundDecimal": round,
                     "BitwiseFn_bitwise_and": operator.and_, "BitwiseFn_bitwise_or": operator.or_}


class Traced(NamedTuple):
    model: onnx.ModelProto
    size_conditions: list[SizeCondition]   # the branches on dynamic sizes the trace took


def export_module(module: torch.nn.Module, part: str, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
                  example: dict[str, np.ndarray], opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Export with the dynamo exporter, every string dim dynamic, then run onnx's full checker
    and confirm the graph's signature is the one asked for."""
    return trace_module(module, part, inputs, outputs, example, opset).model


def trace_module(module: torch.nn.Module, part: str, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
                 example: dict[str, np.ndarray], opset: int = DEFAULT_OPSET) -> Traced:
    """export_module's graph, and the conditions on dynamic sizes its trace took (for a gate to try
    the sizes where they do not hold)."""
    refuse_folders_named_like_packages()
    dims = {d: torch.export.Dim(d) for spec in inputs for d in spec.shape if isinstance(d, str)}
    per_input = [{i: dims[d] for i, d in enumerate(spec.shape) if isinstance(d, str)} for spec in inputs]
    args = tuple(torch_inputs(example, inputs))
    module = _clear_of_graph_module_names(module.eval())
    dynamic_shapes = _by_signature(module, per_input)
    _build_torchlib_registries_once()
    token = _EXPORT_OPSET.set(opset)
    try:
        with _ONE_TRACE_AT_A_TIME, _quiet(), distributions_unchecked():
            program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, verbose=False,
                                        input_names=[s.name for s in inputs], output_names=list(outputs),
                                        dynamic_shapes=dynamic_shapes, custom_translation_table=translation_table(opset))
    finally:
        _EXPORT_OPSET.reset(token)
    model = stable_log_sigmoid(program.model_proto)
    conditions = _size_conditions(getattr(program, "exported_program", None), inputs)
    _drop_stack_traces(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ValidationError(f"graph {part!r}: expected a valid ONNX model, onnx.checker found: {str(exc).strip()}"
                              + (RANK_HINT if "existing shape differ in rank" in str(exc) else "")) from None
    found_inputs = tuple(value_spec(v) for v in model.graph.input)
    if found_inputs != tuple(inputs):
        # (input, axis, dim name, the size the trace fixed it at)
        fixed = [(spec.name, axis, want, got)
                 for spec, made in zip(inputs, found_inputs) if spec.name == made.name and len(spec.shape) == len(made.shape)
                 for axis, (want, got) in enumerate(zip(spec.shape, made.shape)) if isinstance(want, str) and isinstance(got, int)]
        said = ", ".join(f"dim {dim!r} of input {name!r} (axis {axis}) at {size}" for name, axis, dim, size in fixed)
        why = (f": the module fixed {said} (a layer that takes one size there, such as a convolution's channels, or "
               "another input it meets that keeps that size static" + _static_partners(inputs, fixed)
               + "): make only dims it takes at any size dynamic") if fixed else _equal_dims(inputs, found_inputs)
        raise ValidationError(f"graph {part!r}: expected inputs {[s.describe() for s in inputs]}, "
                              f"the exporter produced {[s.describe() for s in found_inputs]}{why}")
    found_outputs = [v.name for v in model.graph.output]
    if found_outputs != list(outputs):
        raise ValidationError(f"graph {part!r}: expected outputs {list(outputs)}, the exporter produced {found_outputs}")
    return Traced(model, conditions)


# packages torch imports where it finds them, which a folder of that name on Python's path passes for
# (`edgegen triton --out triton`, then an export in the same folder: torch took it for triton and
# failed in its own code, said as the module's fault: helper 155)
OPTIONAL_TORCH_PACKAGES = ("triton",)


def refuse_folders_named_like_packages() -> None:
    """A folder without __init__.py on Python's path (the working directory under `python -m`,
    a --module file's own folder) named like a package torch looks for, refused by name."""
    import importlib.util

    for name in OPTIONAL_TORCH_PACKAGES:
        spec = importlib.util.find_spec(name) if name not in sys.modules else None
        if spec is not None and spec.origin is None and spec.submodule_search_locations:
            folder = next(iter(spec.submodule_search_locations))
            raise ConfigError(f"folder {folder!r}: expected no folder named {name!r} on Python's path (the working "
                              f"directory, or a --module file's), found one, which torch takes for the {name} package "
                              "and fails in: rename it, or run edgegen from another folder")


def _size_conditions(program: torch.export.ExportedProgram | None, inputs: tuple[TensorSpec, ...]) -> list[SizeCondition]:
    """The relations on dynamic dims' symbols that the traced program holds as booleans (the
    guards it asserts, and the comparisons they came from): the user inputs' placeholders, in
    forward's order as `inputs`, name each symbol's dim; none where torch.onnx kept no program."""
    if program is None:
        return []
    user = set(program.graph_signature.user_inputs)
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder" and node.name in user]
    symbols = {}
    for node, spec in zip(placeholders, inputs):
        for size, dim in zip(getattr(node.meta.get("val"), "shape", ()), spec.shape):
            if isinstance(dim, str) and isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                symbols[size.node.expr] = dim
    conditions = {}
    for relation in [*_range_bounds(program, symbols), *_asserted(program)]:
        if (getattr(relation, "is_Relational", False) and relation.free_symbols
                and relation.free_symbols <= symbols.keys()):
            conditions.setdefault(relation, SizeCondition(relation, {s: symbols[s] for s in relation.free_symbols}))
    return list(conditions.values())


def _asserted(program: torch.export.ExportedProgram) -> list:
    """The relations the program computes as booleans: its deferred guards and their comparisons."""
    values = (node.meta.get("val") for node in program.graph.nodes)
    return [value.node.expr for value in values if isinstance(value, torch.SymBool)]


def _range_bounds(program: torch.export.ExportedProgram, symbols: dict) -> list:
    """The bounds torch.export keeps as a dim's range, not as a guard (`if T > 100: crop` traced
    at 64: T <= 100; `if n < 400: pad` traced at 1600: n >= 400), as relations; a dynamic dim's own
    range (from 0 or 2, without end) is none."""
    import sympy

    bounds = []
    for symbol in symbols:
        held = program.range_constraints.get(symbol)
        if held is None:
            continue
        if held.lower.is_Integer and int(held.lower) > 2:
            bounds.append(sympy.Ge(symbol, int(held.lower)))
        if held.upper.is_Integer and held.upper.is_finite:
            bounds.append(sympy.Le(symbol, int(held.upper)))
    return bounds


def _equal_dims(asked: tuple[TensorSpec, ...], found: tuple[TensorSpec, ...]) -> str:
    """Why the exporter named a dynamic dim after another (x + x.transpose(2, 3) needs h equal to w):
    said with the name to give both, or "" where none was."""
    merged = {(want, got) for spec, made in zip(asked, found) if spec.name == made.name
              for want, got in zip(spec.shape, made.shape) if isinstance(want, str) and isinstance(got, str) and want != got}
    if not merged:
        return ""
    said = ", ".join(f"{want!r} equal to {got!r}" for want, got in sorted(merged))
    return (f": the module needs dim {said} (it meets one with the other), so give those axes one dim name "
            f"(--dynamic INPUT:AXIS={sorted(merged)[0][1]})")


def _static_partners(asked: tuple[TensorSpec, ...], fixed: list[tuple]) -> str:
    """For the dynamic dims the trace fixed ((input, axis, dim, size)): the other inputs with a static
    dim of that size on the same axis (a batch named on `x` alone, where `cond`'s rows meet it), as
    the names to give it."""
    by_place = {(axis, size): dim for _, axis, dim, size in fixed}
    partners = [(spec.name, axis, by_place[axis, size]) for spec in asked for axis, size in enumerate(spec.shape)
                if isinstance(size, int) and (axis, size) in by_place]
    if not partners:
        return ""
    flags = " ".join(f"{name}:{axis}={dim}" for name, axis, dim in partners)
    mapping = ", ".join(f"{name!r}: {{{axis}: {dim!r}}}" for name, axis, dim in partners)
    return f"; name it there too: --dynamic {flags}, dynamic={{{mapping}, ...}}"


# torch.onnx records each node's Python stack, with the paths of this machine's install: one
# checkpoint's graphs differed by where edgegen lay, and a package carried the paths of the
# machine that made it. The other metadata (module scopes, the FX node) stays, for debugging.
STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(model: onnx.ModelProto) -> None:
    def nodes(graph):
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    yield from nodes(subgraph)

    for node in [*nodes(model.graph), *(n for function in model.functions for n in nodes(function))]:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)


class _Holder(torch.nn.Module):
    """A module one level down, called with what it is called with (its forward's signature is
    set per module: torch.export reads the parameters' names from it)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.held = module


def _clear_of_graph_module_names(module: torch.nn.Module) -> torch.nn.Module:
    """The module, or where one of its own parameters, buffers, submodules or tensors is named like an
    attribute of torch.fx.GraphModule (`code`, `graph`, `meta`: a VQ-VAE's codebook, a GNN's
    graph), the module held one level down: torch.export sets each at that name on the graph
    module it builds, and failed ("attribute 'code' already exists"). The graph's initializers are
    then named `held.code`."""
    graph_module = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph())
    names = [*module._parameters, *module._buffers, *module._modules,   # and tensors set as plain attributes (review 193)
             *(name for name, value in vars(module).items() if isinstance(value, torch.Tensor))]
    if not any(hasattr(graph_module, name) for name in names):
        return module
    signature = inspect.signature(module.forward)

    def forward(self, *args, **kwargs):
        return self.held(*args, **kwargs)

    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = signature.replace(parameters=[self_parameter, *signature.parameters.values()])
    return type(type(module).__name__, (_Holder,), {"forward": forward})(module).eval()


_UNCHECKED_LOCK = threading.Lock()
_unchecked = {"exports": 0, "checked before": True}


@contextlib.contextmanager
def distributions_unchecked():
    """torch.distributions' argument checks off by default while an export runs: `Normal(mu,
    sigma).log_prob(x)` checks sigma > 0 and x's support on their values, which a trace cannot branch
    on ("Could not guard on data-dependent expression"), and the gate's drawn feeds leave a discrete
    support (Bernoulli's 0 and 1: review 193); a graph has no such checks to keep. A distribution
    made with validate_args=True keeps its own. Counted across threads: the process's setting
    comes back when the last export running ends."""
    with _UNCHECKED_LOCK:
        if _unchecked["exports"] == 0:
            _unchecked["checked before"] = torch.distributions.Distribution._validate_args
            torch.distributions.Distribution.set_default_validate_args(False)
        _unchecked["exports"] += 1
    try:
        yield
    finally:
        with _UNCHECKED_LOCK:
            _unchecked["exports"] -= 1
            if _unchecked["exports"] == 0:
                torch.distributions.Distribution.set_default_validate_args(_unchecked["checked before"])


def _by_signature(module: torch.nn.Module, per_input: list[dict]) -> tuple:
    """torch.export matches dynamic shapes to forward's parameters: the inputs that land in
    a *args parameter (a KV cache's past tensors) go in as one nested tuple."""
    params = list(inspect.signature(module.forward).parameters.values())
    for i, param in enumerate(params):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return (*per_input[:i], tuple(per_input[i:]))
    return tuple(per_input)


# exports from several threads of a process (a thread pool, a server) trace one at a time: torch.export
# is not thread-safe (two traces at once failed inside it: "Error while creating guard", "Trying to
# override a python impl"), and _quiet's redirects are the process's (overlapped, the one that ended
# last put back another's, and stdout and stderr stayed swallowed after every export had ended)
_ONE_TRACE_AT_A_TIME = threading.Lock()


@contextlib.contextmanager
def _quiet():
    """The exporter narrates each stage on stdout, warns about optional packages, and prints the
    graph it traced so far on stderr when tracing fails; keep the user's terminal for edgegen's
    own messages (errors still raise, and the export's error names the line that stopped it).
    What the process's other threads print goes where it went (a server's log: review 191); their
    warnings and log records below ERROR are hidden while a trace runs, as Python's warnings and
    logging switches are the process's."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)   # torch's loggers hold their own handlers on the real stderr
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_OtherThreadsOnly(stream) for stream in streams)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout, sys.stderr = streams
        logging.disable(disabled)


class _OtherThreadsOnly:
    """sys.stdout or sys.stderr while a trace runs: the tracing thread's writes are dropped, every
    other thread's go to the stream they went to (whose other attributes it passes on)."""

    def __init__(self, stream):
        self._stream, self._tracing = stream, threading.get_ident()

    def write(self, text: str) -> int:
        return len(text) if threading.get_ident() == self._tracing else self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


# torch.onnx's tables of ATen translations by what they were built from: the opset, and the
# operators torch knew then (a library loaded later adds translations: torch.ao's quantized_decomposed;
# one dropped takes them away; a process's first export loads some of torch's own, so its second
# builds again)
_TORCHLIB_REGISTRIES: dict = {}
_INSTALLING = threading.Lock()


def _build_torchlib_registries_once() -> None:
    """torch.onnx.export builds its table of ATen translations (ONNXRegistry.from_torchlib) anew on
    every call, inferring the signatures of some 500 functions: two thirds of a small module's
    export, measured. Put once in its place, this builds each table once a process and gives every
    export a copy, whose lists the export's custom translations extend without reaching the next
    one's. It does so only within edgegen's exports (export_opset() is set, per thread): other
    torch.onnx.export calls build as torch does. A torch without that method builds as it did."""
    try:
        from torch.onnx._internal.exporter import _registration
        registry_class = _registration.ONNXRegistry
    except (ImportError, AttributeError):
        return
    with _INSTALLING:
        build = registry_class.__dict__.get("from_torchlib")
        if isinstance(build, classmethod) and not hasattr(build.__func__, "edgegen_original"):
            registry_class.from_torchlib = classmethod(_cached_from_torchlib(build.__func__))


def _cached_from_torchlib(original):
    """ONNXRegistry.from_torchlib, each table built once (_build_torchlib_registries_once)."""
    def from_torchlib(cls, *args, **kwargs):
        operators = getattr(torch._C, "_dispatch_get_all_op_names", None)
        if export_opset() is None or operators is None:
            return original(cls, *args, **kwargs)
        # the names, not their count: a library of 19 operators dropped and another of 19 loaded (review 189)
        key = (cls, args, tuple(sorted(kwargs.items())), frozenset(operators()))
        try:
            built = _TORCHLIB_REGISTRIES.get(key)
        except TypeError:   # an argument no dict takes as a key: a torch whose method this is not written for
            return original(cls, *args, **kwargs)
        if built is None:
            built = _TORCHLIB_REGISTRIES[key] = original(cls, *args, **kwargs)
        if not isinstance(getattr(built, "functions", None), dict):   # not the registry this is written for
            return original(cls, *args, **kwargs)
        registry = copy.copy(built)
        registry.functions = {target: list(entries) for target, entries in built.functions.items()}
        return registry

    from_torchlib.edgegen_original = original
    return from_torchlib


def untraceable(exc: BaseException, module: torch.nn.Module, what: str, docs: str) -> ValidationError:
    """A module's export that failed in torch (export_module's trace, not its checks) as its
    author's to change, said in one line: a random draw, an operator without an ONNX form, else
    torch.export's innermost cause at the module's own line. `what`: "export of 'Net'"; `docs`:
    the page that says what traces."""
    if drawn := _random_op_failed(exc):   # torch.onnx fails on some draws (torch.normal) before the graph is made
        return ValidationError(f"{what}: expected outputs its inputs decide, found random numbers drawn in forward "
                               f"({drawn}, which torch.onnx failed on): take the noise as an input, drawn by the caller")
    if op := _op_without_onnx(exc):   # traced, but one of its ops has no ONNX form in torch.onnx
        return ValidationError(f"{what}: expected operators torch.onnx writes as ONNX, found {op}, which it has no "
                               "ONNX function for (torch.export traced the module; compute that step from other "
                               "operators, or outside the module)")
    if op := _op_onnx_failed_on(exc):   # traced; torch.onnx's function for one op failed on its arguments
        return ValidationError(f"{what}: expected operators torch.onnx writes as ONNX, found {op}, whose translation "
                               f"failed on its arguments ({_innermost(exc, module)}; torch.export traced the module: "
                               "compute that step from other operators, or with other arguments: one computed from an "
                               "input's size, as torch.roll's shift, is a common cause)")
    return ValidationError(f"{what}: expected a module torch.export can trace, found {_innermost(exc, module)} "
                           f"({docs} says what traces)")


def _random_op_failed(exc: BaseException) -> str | None:
    """The random draw ("aten_normal_tensor_float") whose ONNX translation stopped the export, or None."""
    return _in_chain(exc, r"\baten[._](?:normal|rand|bernoulli|multinomial|uniform|exponential|poisson)\w*")


def _op_without_onnx(exc: BaseException) -> str | None:
    """The ATen operator ("aten.linalg_inv_ex") torch.onnx found no ONNX function for, where that
    stopped the export (its DispatchError), or None."""
    return _in_chain(exc, r"No ONNX function found for <OpOverload\(op='([^']+)'")


def _op_onnx_failed_on(exc: BaseException) -> str | None:
    """The ATen operator ("aten.roll.default") whose ONNX translation failed ("Error when translating
    node": torch.roll with a shift computed from a size), or None."""
    return _in_chain(exc, r"Error when translating node .*?target=torch\.ops\.(aten\.[\w.]+)")


def _in_chain(exc: BaseException | None, pattern: str) -> str | None:
    """What `pattern` finds (its group, else its whole match) in an exception or what caused it."""
    while exc is not None:
        if found := re.search(pattern, str(exc)):
            return found.group(1) if found.re.groups else found.group(0)
        exc = exc.__cause__ or exc.__context__
    return None


def _innermost(exc: BaseException, module: torch.nn.Module) -> str:
    """torch.export's failure in one line: its innermost cause, and the line of the module's own
    source where it stopped, where one can be found (torch's "Caused by" may point into torch
    itself, and cuts the file's path to its last characters)."""
    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    where = _line_in_source(chain, module)
    return described(chain[-1]) + (f" at {where}" if where else "")


def _line_in_source(chain: list[BaseException], module: torch.nn.Module) -> str | None:
    """"FILE:LINE in FUNCTION" of the first place in the module's source file that the failure
    names: a "Caused by" line of its messages, else a frame of its tracebacks."""
    try:
        source = inspect.getsourcefile(type(module))
    except (TypeError, OSError):   # a class defined in a notebook or `python -c`: no file to point to
        return None
    if not source:
        return None
    for exc in reversed(chain):
        for line in str(exc).splitlines():
            line = line.strip()
            if line.startswith("Caused by:"):
                where = line[len("Caused by:"):].strip().strip("()")
                cut = where.split(":")[0]
                if cut and source.endswith(cut):
                    return source + where[len(cut):]
    for exc in reversed(chain):
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == source]
        if frames:
            return f"{source}:{frames[-1].lineno} in {frames[-1].name}"
    return None
