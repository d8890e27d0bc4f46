"""The external-data files an ONNX graph reads, found without onnx (runtime code).

A graph over 2 GB keeps its weights in files beside it (TensorProto.data_location = EXTERNAL,
the file named by its external_data "location" entry). ONNX Runtime reads them when it loads
the graph, so a package must hash them like the graph itself. This walks the protobuf wire
format of the graph file (memory-mapped: the weights are skipped, not read) through every
place a tensor can sit: the graph's initializers and sparse initializers, and node attributes
(tensors and subgraphs, recursively).
"""

from __future__ import annotations

import mmap
import os

from .errors import PackageError

# field numbers of onnx.proto3
MODEL_GRAPH, MODEL_FUNCTIONS, FUNCTION_NODE = 7, 25, 7
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_SPARSE_INITIALIZER = 1, 5, 15
NODE_ATTRIBUTE = 5
ATTRIBUTE_T, ATTRIBUTE_G, ATTRIBUTE_TENSORS, ATTRIBUTE_GRAPHS, ATTRIBUTE_SPARSE_TENSOR, ATTRIBUTE_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
SPARSE_VALUES, SPARSE_INDICES = 1, 2
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 13, 14
ENTRY_KEY, ENTRY_VALUE = 1, 2
EXTERNAL = 1


def external_data_files(path: str | os.PathLike) -> list[str]:
    """The external-data locations (relative paths, as the graph names them) that the ONNX
    graph at `path` reads, sorted; [] for a graph that holds its weights itself."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                locations: set[str] = set()
                for number, value in _fields(data, 0, len(data)):
                    if number == MODEL_GRAPH and isinstance(value, tuple):
                        _graph(data, *value, locations)
                    elif number == MODEL_FUNCTIONS and isinstance(value, tuple):   # their nodes' constants
                        _graph(data, *value, locations, node_field=FUNCTION_NODE)
                return sorted(locations)
            except (IndexError, KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise unparsable(path, len(data), exc) from None


class FieldPastEnd(ValueError):
    def __init__(self, position: int):
        super().__init__(f"a field runs past its message's end at byte {position}")
        self.position = position


def unparsable(path, size: int, exc: Exception) -> PackageError:
    """The refusal of a graph file of `size` bytes whose parse raised `exc`: one whose last field runs
    past the file's end (a read past it, or a length past it) is said cut short, which a copy
    interrupted makes, rather than in the parser's words."""
    if isinstance(exc, IndexError) or (isinstance(exc, FieldPastEnd) and exc.position > size):
        return PackageError(f"graph {str(path)!r}: expected an ONNX protobuf, found a file that ends inside a field at "
                            f"byte {size} (likely cut short, as an interrupted copy leaves it, or bytes added at its "
                            "end)")
    return PackageError(f"graph {str(path)!r}: expected an ONNX protobuf, found bytes that do not parse ({exc})")


def _graph(data, start: int, end: int, locations: set[str], node_field: int = GRAPH_NODE) -> None:
    """A GraphProto (or a FunctionProto, whose nodes are field 7 and which has no initializers)."""
    for number, value in _fields(data, start, end):
        if not isinstance(value, tuple):
            continue
        if number == node_field:
            for field, span in _fields(data, *value):
                if field == NODE_ATTRIBUTE and isinstance(span, tuple):
                    _attribute(data, *span, locations)
        elif node_field != GRAPH_NODE:
            continue
        elif number == GRAPH_INITIALIZER:
            _tensor(data, *value, locations)
        elif number == GRAPH_SPARSE_INITIALIZER:
            _sparse(data, *value, locations)


def _attribute(data, start: int, end: int, locations: set[str]) -> None:
    for number, value in _fields(data, start, end):
        if not isinstance(value, tuple):
            continue
        if number in (ATTRIBUTE_T, ATTRIBUTE_TENSORS):
            _tensor(data, *value, locations)
        elif number in (ATTRIBUTE_G, ATTRIBUTE_GRAPHS):
            _graph(data, *value, locations)
        elif number in (ATTRIBUTE_SPARSE_TENSOR, ATTRIBUTE_SPARSE_TENSORS):
            _sparse(data, *value, locations)


def _sparse(data, start: int, end: int, locations: set[str]) -> None:
    for number, value in _fields(data, start, end):
        if number in (SPARSE_VALUES, SPARSE_INDICES) and isinstance(value, tuple):
            _tensor(data, *value, locations)


def _tensor(data, start: int, end: int, locations: set[str]) -> None:
    external, location = False, None
    for number, value in _fields(data, start, end):
        if number == TENSOR_DATA_LOCATION and value == EXTERNAL:
            external = True
        elif number == TENSOR_EXTERNAL_DATA and isinstance(value, tuple):
            entry = dict(_fields(data, *value))
            if isinstance(entry.get(ENTRY_KEY), tuple) and bytes(data[slice(*entry[ENTRY_KEY])]) == b"location":
                location = bytes(data[slice(*entry[ENTRY_VALUE])]).decode("utf-8")
    if external and location is not None:
        locations.add(location)


def _fields(data, start: int, end: int):
    """(field number, value) of each field in data[start:end]: an int for varints, (start, end)
    of the bytes for length-delimited fields, None for fixed-size ones (skipped)."""
    position = start
    while position < end:
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value = (position, position + length)
            position += length
        elif wire == 1:
            value, position = None, position + 8
        elif wire == 5:
            value, position = None, position + 4
        else:
            raise ValueError(f"wire type {wire} at byte {position}")
        if position > end:
            raise FieldPastEnd(position)
        yield number, value


def _varint(data, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError(f"a varint longer than 10 bytes at byte {position}")
