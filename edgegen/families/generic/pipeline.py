"""A user's own PyTorch module, exported by `edgegen.export_pytorch` (or `edgegen export --module`):
named numpy arrays in, named numpy arrays out, through the same checked session as every family.

The package records inputs held out from the export's trace (the user's, or drawn like the
example's) so that `edgegen optimize` can calibrate and gate variants without the module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError, NonFiniteError, PackageError
from ...families import RuntimeConfig
from ...package import TensorSpec, least_size, may_be_empty, sizes_missed
from ...runtimes.feeds import recorded_feeds
from ...runtimes.pipeline import Pipeline, input_array


@dataclass(kw_only=True)
class GenericConfig(RuntimeConfig):
    """The one graph's name, the smallest and largest value of each dynamic dim, the sizes it was
    traced at, and the held-out inputs recorded beside it."""
    graph: str
    dim_limits: dict      # dynamic dim -> its largest value (TensorRT profiles)
    example_dims: dict    # dynamic dim -> the size it was traced at (bench's default)
    # dynamic dim -> the smallest size the export checked against PyTorch (one made before edgegen
    # recorded it: package.least_size's default, 1, or 0 for a past cache)
    dim_minimums: dict = field(default_factory=dict)
    # dynamic dim -> the step its sizes take (a strided module's: 8 for three stride-2 layers), where
    # the export found the graph to match the module only at multiples of one (a package made before
    # edgegen recorded it: none, and ONNX Runtime's own error at a size the graph cannot take)
    dim_multiples: dict = field(default_factory=dict)
    held_out: dict | None = None                        # {"file": "held_out.npz", "sha256": ..., "feeds": n}
    index_limits: dict = field(default_factory=dict)    # input -> rows of the embedding table it indexes
    source: str = ""                                    # where the module came from, for the reader

    def problems(self) -> list[str]:
        problems = []
        for what, dims in (("dim_limits", self.dim_limits), ("example_dims", self.example_dims),
                           ("dim_minimums", self.dim_minimums)):   # a past cache's least may be 0
            bad = {k: v for k, v in dims.items() if isinstance(v, bool) or not isinstance(v, int)
                   or v < (0 if what == "dim_minimums" and may_be_empty(k) else 1)}
            if bad:
                problems.append(f"{what} expected positive integer sizes" + (" (0 for a past cache)" if what ==
                                                                             "dim_minimums" else "") + f", found {bad}")
        bad = {k: v for k, v in self.dim_multiples.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            problems.append(f"dim_multiples expected positive integer steps, found {bad}")
        for what, dims in (("example_dims", self.example_dims), ("dim_minimums", self.dim_minimums)):
            over = {d: (v, self.dim_limits[d]) for d, v in dims.items() if d in self.dim_limits
                    and isinstance(v, int) and isinstance(self.dim_limits[d], int) and v > self.dim_limits[d]}
            if over:
                problems.append(f"{what} expected within dim_limits, found (size, limit) {over}")
        bad = {k: v for k, v in self.index_limits.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            problems.append(f"index_limits expected positive integer table sizes, found {bad}")
        if self.held_out is not None and not {"file", "sha256"} <= set(self.held_out):
            problems.append(f"held_out expected file and sha256, found keys {sorted(self.held_out)}")
        return problems


def refuse_indices_past_their_tables(index_limits: dict[str, int], feeds: dict[str, np.ndarray]) -> None:
    """An embedding's index outside its table ({input: rows}) is PyTorch's IndexError; ONNX's Gather
    would take a negative one as counted from the end, and give a row the module never would. A
    call and optimize --inputs (whose variants would be judged on rows the runtime refuses) check."""
    for name, rows in index_limits.items():
        values = feeds.get(name)
        if values is None or not values.size:
            continue
        indices = np.trunc(values) if values.dtype.kind == "f" else values   # a float cast to long is truncated
        if indices.min() < 0 or indices.max() >= rows:
            raise InputError(f"input {name!r}: expected indices into an embedding of {rows} rows (0 to {rows - 1}), "
                             f"found {values.min():g}..{values.max():g}")


class GenericPipeline(Pipeline):
    """`pipe(name=array, ...)` or `pipe({name: array})` -> {output name: array}."""

    family = "generic"

    def __init__(self, package, sessions, config: GenericConfig):
        super().__init__(package, sessions, config)
        if config.graph not in sessions:
            raise PackageError(f"package {str(package.path)!r}: config.graph expected one of {sorted(sessions)}, "
                               f"found {config.graph!r}")
        self.session = sessions[config.graph]
        # (input, axis, dim, least, most, step) of each dim other than the batch: the sizes its export checked
        self._checked_sizes = [(spec.name, axis, dim, least_size(dim, config.dim_minimums), config.dim_limits[dim],
                                config.dim_multiples.get(dim, 1))
                               for spec in self.inputs for axis, dim in enumerate(spec.shape)
                               if isinstance(dim, str) and dim != "batch" and dim in config.dim_limits]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.session.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.session.outputs

    # positional-only: a graph input may be named `self` or `feeds` and still be given by keyword
    def __call__(self, feeds: dict | Any = None, /, *more, **named) -> dict[str, np.ndarray]:
        if more:   # pipe(x, t): Python's TypeError named neither the inputs nor their order
            names = [s.name for s in self.inputs]
            raise InputError(f"inputs: expected a dict of {names} or names as keywords "
                             f"(pipe({', '.join(f'{n}=...' for n in names)})), found {1 + len(more)} positional arguments")
        if feeds is not None and not isinstance(feeds, dict):   # one array, for a graph of one input
            if len(self.inputs) != 1:
                raise InputError(f"inputs: expected a dict of {[s.name for s in self.inputs]} (or names as keywords), "
                                 f"found one {type(feeds).__name__}")
            feeds = {self.inputs[0].name: feeds}
        if twice := sorted(set(feeds or {}) & set(named)):   # the keyword would win without a word
            raise InputError(f"input {twice[0]!r}: expected once, found it both in the dict and as a keyword")
        given = {**(feeds or {}), **named}
        if set(given) == {s.name for s in self.inputs}:
            given = {spec.name: input_array(given[spec.name], spec) for spec in self.inputs}
            refuse_indices_past_their_tables(self.config.index_limits, given)
            self._refuse_sizes_never_checked(given)
        outputs = self.session.run(given)
        for name, value in outputs.items():   # a NaN result is an error, never an array written out
            if value.dtype.kind == "f" and np.isnan(value).any():
                # said without blaming the graph: the module itself gives NaN at such inputs (review 169)
                infinite = [k for k, v in given.items() if np.asarray(v).dtype.kind == "f" and np.isinf(v).any()]
                held = f" (input {infinite[0]!r} holds Inf)" if infinite else ""
                raise NonFiniteError(f"output {name!r}: expected numbers, found NaN in the result, from inputs without "
                                     f"NaN{held}: the module itself may give NaN there (a root of a negative, the "
                                     "spread of one value, inf - inf); call it on these inputs to see")
        return outputs

    run = __call__

    def _refuse_sizes_never_checked(self, feeds: dict[str, np.ndarray]) -> None:
        """A dim outside the sizes the export checked against PyTorch, from its smallest to its
        limit: there the trace may have fixed a branch on a size (`if x.shape[-1] < 8`) and the
        graph gives another result than the module, so it is refused, as a TensorRT engine refuses
        a size outside its profile. The batch past its limit is taken: rows are independent."""
        for name, axis, dim, least, most, step in self._checked_sizes:
            array = feeds[name]
            size = array.shape[axis] if array.ndim > axis else None   # a wrong rank: the session's check says so
            if size is None or not (wanted := sizes_missed(dim, size, least, most, step)):
                continue
            if size > most:
                again = f"export again with --limit {dim}={size} (dim_limits), and its check runs there"
            elif size < least:
                again = (f"below {least} the export saw the module or its graph fail, or tried no size; held-out inputs "
                         f"(--held-out) of {dim} {size} have it checked")
            else:
                again = "between those steps the graph did not match the module (a strided module: pad or crop to one)"
            raise InputError(f"input {name!r}: expected {wanted}, the sizes its export checked against PyTorch, found "
                             f"{size}: {again}")

    def held_out_inputs(self) -> list[dict[str, np.ndarray]]:
        """The inputs recorded at export (held out from the trace), as a list of feeds."""
        return recorded_feeds(self.package, self.config)
