"""The session interface: one graph, numpy in, numpy out, inputs checked before anything runs."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import InputError
from ..package import TensorSpec

# Rows of the batch dim per call where a pipeline runs many samples through a graph (run_rows): an
# image model's activations grow with the batch, and 100,000 samples of the shipped diffusion-digits
# through its UNet in one call were killed for memory at about 22 GB. Per-call overhead is spent
# long before 256 rows of any image graph here.
ROWS_PER_CALL = 256
BATCH_DIM = "batch"


class Session:
    """Runs one graph. Subclasses implement `_run`; `run` checks the feeds first, the same way
    for every backend (as Polygraphy's runners check a feed before `infer_impl`).

    profile: for engines built for a range of shapes (TensorRT), ((input, min shape, opt
    shape, max shape), ...): a feed outside it is refused before anything is copied to the
    device, naming the dim and the range."""

    backend: str = ""

    def __init__(self, graph_name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 profile: tuple | None = None):
        self.graph_name = graph_name
        self.inputs = inputs
        self.outputs = outputs
        self._accepts = FeedChecker(inputs)
        self.profile = profile
        self._ranges = [(name, low, high) for name, low, _opt, high in profile] if profile else []
        # run_rows' split, fixed by the signature: the inputs cut by rows, and whether the outputs join back
        self._batched = frozenset(s.name for s in inputs if s.shape[:1] == (BATCH_DIM,))
        self._rows_join = all(s.shape[:1] == (BATCH_DIM,) for s in outputs)
        batch_ranges = [(low[0], high[0]) for name, low, _opt, high in profile or () if name in self._batched]
        self._profile_rows = min((high for _, high in batch_ranges), default=None)
        self.min_rows = max((low for low, _ in batch_ranges), default=1)   # the fewest rows a call takes

    @property
    def max_rows(self) -> int:
        """The most rows of the batch dim run_rows puts in one call: the engine profile's largest
        batch (a TensorRT engine takes no more), else ROWS_PER_CALL."""
        return ROWS_PER_CALL if self._profile_rows is None else self._profile_rows

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._accepts(feeds):
            check_feeds(self.graph_name, self.inputs, feeds)  # raises InputError saying what is wrong
        if self._ranges:
            self._check_profile(feeds)
        return self._run(feeds)

    def run_rows(self, feeds: Mapping[str, np.ndarray], keep=None) -> dict[str, np.ndarray]:
        """run() in calls of at most max_rows rows of the batch dim, the outputs joined: for a
        pipeline's graphs whose rows are independent samples, so that a large n needs the memory
        of max_rows, and a TensorRT engine built for 16 takes any n. A call of fewer rows than
        min_rows (an engine built with --profile batch=4:8:16, the last call of 18 rows) is padded
        with copies of its last row, whose outputs are dropped. Inputs without the batch dim
        go whole to every call. keep(outputs) -> outputs: the part of each call's outputs the
        caller uses, taken before the next call, so that only that part is held for every row."""
        keep = keep or (lambda outputs: outputs)
        rows = self._batch_rows(feeds)
        step = self.max_rows
        if rows <= step:   # one call, as most are: no slicing on the way (a pipeline call's few microseconds)
            return keep(self._run_padded(feeds, rows))
        parts = [keep(self._run_padded({name: value[start:start + step] if name in self._batched else value
                                        for name, value in feeds.items()}, min(step, rows - start)))
                 for start in range(0, rows, step)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _run_padded(self, feeds: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        short = self.min_rows - rows if rows else 0   # rows 0: a graph whose rows cannot be split
        if short <= 0:
            return self.run(feeds)
        padded = {name: np.concatenate([value, np.repeat(value[-1:], short, axis=0)]) if name in self._batched else value
                  for name, value in feeds.items()}
        return {name: value[:rows] for name, value in self.run(padded).items()}

    def _batch_rows(self, feeds: Mapping[str, np.ndarray]) -> int:
        """The batch dim's size in `feeds`, or 0 where a graph's rows cannot be split: no input
        has the batch dim, or an output lacks it (the rows would not join back)."""
        if not self._rows_join:
            return 0
        sizes = {np.shape(feeds[name])[:1] for name in self._batched if name in feeds}
        return sizes.pop()[0] if len(sizes) == 1 and () not in sizes else 0

    def _check_profile(self, feeds: Mapping[str, np.ndarray]) -> None:
        dims = {s.name: s.shape for s in self.inputs}
        for name, low, high in self._ranges:
            shape = feeds[name].shape
            for axis, (size, lo, hi) in enumerate(zip(shape, low, high)):
                if not lo <= size <= hi:
                    dim = dims[name][axis]
                    label = f"dim {dim!r}" if isinstance(dim, str) else f"axis {axis}"
                    fix = f" (build the engine with --profile {dim}=MIN:OPT:MAX covering {size})" if isinstance(dim, str) else ""
                    raise InputError(f"graph {self.graph_name!r} input {name!r}: expected {label} within the engine's "
                                     f"profile {lo} to {hi}, found {size}{fix}")

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class FeedChecker:
    """The per-call check, compiled once from the manifest: a few comparisons per input, so
    the runtime adds microseconds, not a share of a small graph's latency. It only answers
    yes or no; `check_feeds` explains a no."""

    def __init__(self, specs: tuple[TensorSpec, ...]):
        self.count = len(specs)
        self.expected = [(s.name, np.dtype(s.dtype), len(s.shape),
                          tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int))) for s in specs]
        # named dynamic dims shared by several inputs: (input, axis) pairs that must agree
        places: dict[str, list[tuple[str, int]]] = {}
        for s in specs:
            for i, d in enumerate(s.shape):
                if isinstance(d, str):
                    places.setdefault(d, []).append((s.name, i))
        self.shared = [p for p in places.values() if len(p) > 1]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> bool:
        if len(feeds) != self.count:
            return False
        for name, dtype, ndim, static in self.expected:
            value = feeds.get(name)
            if type(value) is not np.ndarray or value.dtype != dtype or value.ndim != ndim:
                return False
            shape = value.shape
            for axis, size in static:
                if shape[axis] != size:
                    return False
        for (first, axis), *others in self.shared:
            size = feeds[first].shape[axis]
            if any(feeds[name].shape[a] != size for name, a in others):
                return False
        return True


def check_feeds(graph_name: str, specs: tuple[TensorSpec, ...], feeds: Mapping[str, np.ndarray]) -> None:
    """Raise InputError unless `feeds` has exactly the inputs in `specs`, each a numpy array
    of the right dtype and rank, static dims equal, and named dynamic dims consistent."""
    if len(feeds) != len(specs) or any(s.name not in feeds for s in specs):
        expected = sorted(s.name for s in specs)
        raise InputError(f"graph {graph_name!r}: expected inputs {expected}, found {sorted(feeds)}")
    axes: dict[str, tuple[str, int]] = {}
    for spec in specs:
        value = feeds[spec.name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"graph {graph_name!r} input {spec.name!r}: expected a numpy array {spec.describe()}, found {type(value).__name__}")
        if value.dtype.name != spec.dtype:
            raise InputError(f"graph {graph_name!r} input {spec.name!r}: expected dtype {spec.dtype}, found {value.dtype.name}")
        if value.ndim != len(spec.shape):
            raise InputError(f"graph {graph_name!r} input {spec.name!r}: expected {spec.describe()} (rank {len(spec.shape)}), found shape {list(value.shape)}")
        for dim, size in zip(spec.shape, value.shape):
            if isinstance(dim, int):
                if size != dim:
                    raise InputError(f"graph {graph_name!r} input {spec.name!r}: expected {spec.describe()}, found shape {list(value.shape)}")
            elif dim in axes and axes[dim][1] != size:
                other, other_size = axes[dim]
                raise InputError(
                    f"graph {graph_name!r} input {spec.name!r}: expected dim {dim!r} = {other_size} as in input {other!r}, found {size}"
                )
            else:
                axes[dim] = (spec.name, size)
