"""The session interface: one graph, numpy in, numpy out, inputs checked before anything runs."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import InputError
from ..package import TensorSpec


class Session:
    """Runs one graph. Subclasses implement `_run`; `run` checks the feeds first."""

    backend: str = ""

    def __init__(self, graph_name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]):
        self.graph_name = graph_name
        self.inputs = inputs
        self.outputs = outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(self.graph_name, self.inputs, feeds)
        return self._run(feeds)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


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
