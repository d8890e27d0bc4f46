"""What `edgegen check` and `edgegen bench` read from an ONNX graph, found without onnx (runtime
code, so that a device with only onnxruntime can check its packages): the opsets the model
imports, each top-level node's op type, domain, name, inputs and int or string attributes, which
initializers hold only
zeros, and each initializer's size.

It walks the protobuf wire format with the reader in external_data.py; the weights are
memory-mapped and scanned only for the small constants a check asks about (zero points).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

from .errors import PackageError
from .external_data import MODEL_GRAPH, _fields, _varint, unparsable

# field numbers of onnx.proto3
MODEL_OPSET_IMPORT, OPSET_DOMAIN, OPSET_VERSION = 8, 1, 2
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 1, 5, 11, 12
VALUE_INFO_NAME = 1
NODE_INPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 1, 3, 4, 5, 7
ATTRIBUTE_NAME, ATTRIBUTE_INT, ATTRIBUTE_STRING = 1, 3, 4
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_STRING_DATA, TENSOR_NAME, TENSOR_RAW_DATA = 1, 2, 6, 8, 9
TENSOR_STRING = 8   # its size is its strings' bytes
# bits per element of each onnx.TensorProto.DataType with a fixed size (not UNDEFINED, 0, or
# STRING, 8); the types below a byte are packed (two 4-bit values to a byte, four 6-bit ones to 3)
ELEMENT_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64, 14: 64,
                15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2, 27: 6, 28: 6}
# (op type, domain) -> the inputs it reads only rows of, one per token position, when a call is
# one token: an embedding table, and rotary caches indexed by position ids (the ONNX op has them
# at 1 and 2 when its fourth input, the position ids, is given; ONNX Runtime's own at 2 and 3)
ROW_LOOKUPS = {("Gather", ""): (0,), ("GatherBlockQuantized", "com.microsoft"): (0, 2, 3),   # and its scales
               ("RotaryEmbedding", ""): (1, 2), ("RotaryEmbedding", "com.microsoft"): (2, 3),
               ("GroupQueryAttention", "com.microsoft"): (7, 8)}
TENSOR_NUMBERS = (4, 5, 7, 10, 11)   # float_data, int32_data, int64_data, double_data, uint64_data
SMALL_CONSTANT_BYTES = 4096   # zero points and scales; larger initializers are weights, not scanned


@dataclass(frozen=True)
class Node:
    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    # its int and string attributes by name (Resize's mode, antialias); a default is not stored
    attributes: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class GraphSummary:
    opsets: dict[str, int] = field(default_factory=dict)      # domain ("" for ai.onnx) -> version
    nodes: list[Node] = field(default_factory=list)
    nonzero_constants: set[str] = field(default_factory=set)  # small initializers with a nonzero value
    # as stored, external data included; None for a data type this reader does not know
    initializer_bytes: dict[str, int | None] = field(default_factory=dict)
    path: str = ""   # the graph file read
    declared_inputs: list[str] = field(default_factory=list)   # GraphProto.input, initializers too in old IR versions
    outputs: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[str]:
        """The graph's inputs a caller feeds: its declared ones that no initializer holds."""
        return [name for name in self.declared_inputs if name not in self.initializer_bytes]

    @property
    def opset(self) -> int:
        return self.opsets.get("", self.opsets.get("ai.onnx", 0))

    def weight_bytes_per_token(self) -> int:
        """The bytes of initializers one decoding call of one token reads, as the graph stores
        them: all of them, except a table that nodes only look rows up in (an untied embedding,
        rotary caches: ROW_LOOKUPS), which gives a row a token and is left out. What the
        memory-bandwidth bound of decoding counts. Top-level initializers only: edgegen's
        exports hold their weights there, not in Constant nodes or subgraphs."""
        looked_up, read_whole = set(), set()
        for node in self.nodes:
            rows = ROW_LOOKUPS.get((node.op_type, "" if node.domain == "ai.onnx" else node.domain), ())
            if node.op_type == "RotaryEmbedding" and node.domain in ("", "ai.onnx") and not any(node.inputs[3:4]):
                rows = ()   # no position ids: its caches are per token of the call, read whole
            for position, name in enumerate(node.inputs):
                (looked_up if position in rows else read_whole).add(name)
        read = {name: size for name, size in self.initializer_bytes.items() if name in read_whole or name not in looked_up}
        unsized = sorted(name for name, size in read.items() if size is None)
        if unsized:
            raise PackageError(f"graph {self.path!r}: expected initializers of data types with a known size, found {unsized[:3]} "
                               "of a type this edgegen does not know (update edgegen)")
        return sum(read.values())


def read_graph_summary(path: str | os.PathLike) -> GraphSummary:
    summary = GraphSummary(path=str(path))
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise PackageError(f"graph {str(path)!r}: expected an ONNX protobuf, found an empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                for number, value in _fields(data, 0, len(data)):
                    if number == MODEL_OPSET_IMPORT and isinstance(value, tuple):
                        entry = dict(_fields(data, *value))
                        summary.opsets[_text(data, entry.get(OPSET_DOMAIN))] = int(entry.get(OPSET_VERSION, 0))
                    elif number == MODEL_GRAPH and isinstance(value, tuple):
                        _graph(data, *value, summary)
            except (IndexError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
                raise unparsable(path, len(data), exc) from None
    return summary


def _graph(data, start: int, end: int, summary: GraphSummary) -> None:
    for number, value in _fields(data, start, end):
        if number == GRAPH_NODE and isinstance(value, tuple):
            summary.nodes.append(_node(data, *value))
        elif number in (GRAPH_INPUT, GRAPH_OUTPUT) and isinstance(value, tuple):
            name = _text(data, dict(_fields(data, *value)).get(VALUE_INFO_NAME))
            (summary.declared_inputs if number == GRAPH_INPUT else summary.outputs).append(name)
        elif number == GRAPH_INITIALIZER and isinstance(value, tuple):
            name, size = _tensor_size(data, *value)
            summary.initializer_bytes[name] = size
            if value[1] - value[0] <= SMALL_CONSTANT_BYTES and _constant(data, *value)[1]:
                summary.nonzero_constants.add(name)


def _node(data, start: int, end: int) -> Node:
    inputs, name, op_type, domain, attributes = [], "", "", "", {}
    for number, value in _fields(data, start, end):
        if number == NODE_INPUT:
            inputs.append(_text(data, value))
        elif number == NODE_NAME:
            name = _text(data, value)
        elif number == NODE_OP_TYPE:
            op_type = _text(data, value)
        elif number == NODE_DOMAIN:
            domain = _text(data, value)
        elif number == NODE_ATTRIBUTE and isinstance(value, tuple):
            attributes.update(_attribute(data, *value))
    return Node(op_type, domain, name, tuple(inputs), attributes)


def _attribute(data, start: int, end: int) -> dict:
    """{name: value} of an AttributeProto holding an int or a string; {} for other kinds (floats,
    tensors, graphs), which no check reads."""
    name, found = "", None
    for number, value in _fields(data, start, end):
        if number == ATTRIBUTE_NAME:
            name = _text(data, value)
        elif number == ATTRIBUTE_INT:
            found = value
        elif number == ATTRIBUTE_STRING:
            found = _text(data, value)
    return {name: found} if name and found is not None else {}


def _tensor_size(data, start: int, end: int) -> tuple[str, int | None]:
    """(name, bytes of its values) of a TensorProto, from its dims and data type: the same whether
    the values sit in the graph or in an external-data file."""
    name, dims, data_type, strings = "", [], 0, 0
    for number, value in _fields(data, start, end):
        if number == TENSOR_NAME:
            name = _text(data, value)
        elif number == TENSOR_STRING_DATA and isinstance(value, tuple):
            strings += value[1] - value[0]
        elif number == TENSOR_DATA_TYPE:
            data_type = value
        elif number == TENSOR_DIMS and isinstance(value, tuple):   # packed: legal, though onnx writes them one by one
            position = value[0]
            while position < value[1]:
                dim, position = _varint(data, position)
                dims.append(dim)
        elif number == TENSOR_DIMS:
            dims.append(value)
    if data_type == TENSOR_STRING:
        return name, strings
    if data_type not in ELEMENT_BITS:
        return name, None   # a type newer than this table: weight_bytes_per_token says so
    count = 1
    for dim in dims:
        count *= dim
    return name, -(-count * ELEMENT_BITS[data_type] // 8)


def _constant(data, start: int, end: int) -> tuple[str, bool]:
    """(name, whether any stored value is nonzero): the bytes of raw_data or of a packed number
    field (zero in every dtype is all zero bytes); an unpacked fixed-width number, which the
    reader skips, counts as nonzero."""
    name, nonzero = "", False
    for number, value in _fields(data, start, end):
        if number == TENSOR_NAME:
            name = _text(data, value)
        elif number == TENSOR_RAW_DATA and isinstance(value, tuple):
            nonzero |= any(data[value[0]:value[1]])
        elif number in TENSOR_NUMBERS:
            nonzero |= any(data[value[0]:value[1]]) if isinstance(value, tuple) else value != 0
    return name, nonzero


def _text(data, span) -> str:
    return bytes(data[span[0]:span[1]]).decode("utf-8") if isinstance(span, tuple) else ""
