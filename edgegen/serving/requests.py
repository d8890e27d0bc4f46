"""What a served request carries and how a pipeline answers it: the contract between the
Triton model repository (serving/triton.py), the Python-backend model that runs a pipeline
(serving/triton_model.py) and a family's pipeline.

A family declares its request in its folder (`Family.serving`), or one is derived from its
`edgegen generate` options: `n`, `seed`, and each option a request can carry, named by the
pipeline keyword it sets.

Runtime code: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError, EdgegenError, InputError

# the request inputs that size a pipeline's work (images, audio samples, new tokens), which
# `edgegen triton --max-count` caps per request
COUNT_INPUTS = ("n", "num_samples", "max_new_tokens")

# request dtypes -> Triton's config names and the numpy dtype a client sends
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
                "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
                "string": "TYPE_STRING"}


@dataclass(frozen=True)
class Field:
    """One tensor of a request or a response. dims: -1 is any length. `form`: how a request's
    tensor reaches the pipeline: "value", one plain Python number, string or bool; "list", a
    list of them; "value or list", a value when one is sent (one class label for every sample),
    else a list (one per sample); "array", the numpy array as sent (a picture)."""

    name: str
    dtype: str
    dims: tuple[int, ...] = (1,)
    required: bool = False
    form: str = "value"


@dataclass(frozen=True)
class Served:
    """A pipeline's request: its inputs, its outputs, and `answer(pipe, arguments)`, which
    yields one {output: array} per response (one for a plain model; one per piece when it
    `streams`, through Triton's decoupled mode). `answer_many(pipe, [arguments, ...])`, where
    the pipeline can merge several requests into one run, gives each one's outputs; Triton's
    dynamic batcher then hands it the requests it queued together. A request it runs alone may
    come back as the EdgegenError that refused it; an error it raises fails the merged run, and
    each request is then answered on its own."""

    inputs: tuple[Field, ...]
    outputs: tuple[Field, ...]
    answer: Callable[[Any, dict], Iterator[dict[str, np.ndarray]]]
    streams: bool = False
    answer_many: Callable[[Any, list[dict]], list[dict[str, np.ndarray] | EdgegenError]] | None = None


_OPTION_TYPES = {int: "int64", float: "float64", str: "string"}


def option_field(option) -> Field:
    """An `edgegen generate` option as a request field: ints as int64, floats as float64 (so
    that 0.7 reaches the pipeline as the same double a Python caller passes), other values as
    strings, a flag as a bool, a repeatable option as a list of strings. A class label is an id
    (int64: names are the command line's), one or one per sample."""
    action = option.kwargs.get("action")
    if action == "store_true":
        return Field(option.keyword, "bool")
    if action == "append":
        return Field(option.keyword, "string", (-1,), form="list")
    dtype = _OPTION_TYPES.get(option.kwargs.get("type", str))
    if dtype is None:
        raise ConfigError(f"option {option.flag}: expected type int, float or str to serve it, found {option.kwargs['type']!r}")
    if option.keyword == "labels":
        return Field("labels", "int64", (-1,), form="value or list")
    return Field(option.keyword, dtype, required=option.help.startswith("(required)"))


def derived(family, config) -> Served:
    """The request of a family that declares none: n and seed (for families that draw a batch),
    and each option a request can carry; the answer is `pipe(n, seed=..., **options)` as one
    output, `images` where the package's config has an image shape."""
    unserved = [o.flag for o in family.options if not o.served]
    if unserved:
        raise ConfigError(f"family {family.name!r}: expected a served request (Family.serving) for its {', '.join(unserved)}, "
                          "a file on the caller's disk, found none declared; embed it with edgegen.load")
    fields = [Field("n", "int64"), Field("seed", "int64")] if family.grid_flags else [Field("seed", "int64")]
    fields += [option_field(o) for o in family.options if o.served]
    shape = getattr(config, "image_shape", None)
    output = Field("images", "float32", (-1, *shape)) if shape else Field("samples", "float32", (-1, -1))

    def answer(pipe, arguments: dict) -> Iterator[dict[str, np.ndarray]]:
        arguments = dict(arguments)
        n = arguments.pop("n", 1)
        yield {output.name: np.asarray(pipe(n, **arguments) if family.grid_flags else pipe(**arguments))}

    def answer_many(pipe, calls: list[dict]) -> list[dict[str, np.ndarray]]:
        return [{output.name: result} for result in pipe.sample_batched(calls)]

    merges = family.grid_flags and getattr(family.pipeline, "merges_calls", False)
    return Served(tuple(fields), (output,), answer, answer_many=answer_many if merges else None)


def served(family, config) -> Served:
    """The family's declared request, or the derived one."""
    declare = family.serving_function()
    return declare(config) if declare is not None else derived(family, config)


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"request input {name!r}: expected UTF-8 text, found a byte that is not UTF-8 at offset {exc.start}") from None


def arguments(fields: tuple[Field, ...], values: dict[str, np.ndarray]) -> dict[str, Any]:
    """Request tensors {name: array} -> the pipeline's keyword arguments: scalars as Python
    values, lists as lists; a missing optional input is left to the pipeline's default."""
    out = {}
    for field in fields:
        value = values.get(field.name)
        if value is None:
            if field.required:
                raise InputError(f"request input {field.name!r}: expected it, found none (it is required)")
            continue
        if field.form == "array":
            out[field.name] = np.asarray(value)
            continue
        items = [_text(v, field.name) if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v
                 for v in np.asarray(value).reshape(-1)]
        if field.form == "value" or (field.form == "value or list" and len(items) == 1):
            if len(items) != 1:
                raise InputError(f"request input {field.name!r}: expected one value, found {len(items)}")
            out[field.name] = items[0]
        else:
            out[field.name] = items
    return out
