"""Rewrites of an exported ONNX graph that keep what it computes: applied before the gate, which
checks the rewritten graph against PyTorch like any other (GraphSpec.rewrite); and the forms a
family's graph takes for one kind of target, made by `edgegen optimize` (GraphForm)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass(frozen=True)
class GraphForm:
    """A form of a family's graph that ONNX Runtime runs faster than the exported one, with a
    contract of its own: `edgegen optimize` rewrites each variant it makes for an ONNX Runtime
    target into it (Family.ort_form), checks it against the variant it came from, and keeps the
    exported form where either step fails. The family's pipeline reads the form from the graph."""

    name: str                                              # what the variant's record says of it
    rewrite: Callable[[onnx.ModelProto], onnx.ModelProto]  # raises ValidationError where the graph does not fit
    # (session before, session after, feeds of the exported form) -> comparisons (export.validate.Comparison)
    check: Callable[[Any, Any, list[dict]], list]
    feed: Callable[[dict], dict]                           # a feed of the exported form as the form takes it
    # (session of either form, feed of the exported form) -> one call as the family's pipeline makes
    # it, bound once: what the variant's speed is timed on
    timed_call: Callable[[Any, dict], Callable[[], None]]


def fuse_sibling_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """MatMuls that read the same input with constant 2-D weights (a Llama layer's q, k and v
    projections; its gate and up projections) become one MatMul over the weights side by side and
    a Split back into their outputs. A decode step reads the same bytes in fewer, larger calls:
    on a 124M Llama it ran 7% faster in fp32 and 10% in int4 (MatMulNBits blocks run along the
    input dim, so the quantized weights are the same). Changes `model` in place and returns it."""
    graph = model.graph
    overridable = {i.name for i in graph.input}   # an initializer a feed may replace is not a constant
    weights = {i.name: i for i in graph.initializer if len(i.dims) == 2 and i.name not in overridable}
    readers = defaultdict(int)   # how many nodes read each name, subgraphs' nodes included
    for node in all_nodes(graph):
        for name in node.input:
            readers[name] += 1
    for output in graph.output:
        readers[output.name] += 1
    siblings = defaultdict(list)
    for node in graph.node:
        # a weight read by one MatMul only: one that other nodes share stays as it is
        if node.op_type == "MatMul" and node.input[1] in weights and readers[node.input[1]] == 1:
            siblings[node.input[0]].append(node)
    taken = {o for node in all_nodes(graph) for o in node.output} | {n.name for n in all_nodes(graph)} | set(weights)
    replaced = set()
    for shared, nodes in siblings.items():
        if len(nodes) < 2 or len({weights[n.input[1]].data_type for n in nodes}) != 1:
            continue
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        name = fresh_name(f"{nodes[0].input[1]}.fused", taken)
        split, out = fresh_name(f"{name}.split", taken), fresh_name(f"{name}.out", taken)
        graph.initializer.extend([numpy_helper.from_array(np.concatenate(arrays, axis=1), name),
                                  numpy_helper.from_array(np.array([a.shape[1] for a in arrays], np.int64), split)])
        fused = [helper.make_node("MatMul", [shared, name], [out], name=fresh_name(f"{name}.matmul", taken)),
                 helper.make_node("Split", [out, split], [n.output[0] for n in nodes], axis=-1,
                                  name=fresh_name(f"{name}.split_node", taken))]
        # where the first of them stood: the shared input is made before it, their readers after it
        position = min(list(graph.node).index(n) for n in nodes)
        for node in nodes:
            graph.node.remove(node)
            replaced.add(node.input[1])
        for offset, node in enumerate(fused):
            graph.node.insert(position + offset, node)
    for initializer in [i for i in graph.initializer if i.name in replaced]:   # each was read by its MatMul alone
        graph.initializer.remove(initializer)
    return model


def stable_log_sigmoid(model: onnx.ModelProto) -> onnx.ModelProto:
    """Log(Sigmoid(x)), as torch.onnx writes F.logsigmoid, is -inf below x = -88 in float32 (the
    sigmoid underflows to 0) where PyTorch gives x (a log-likelihood's terms): written as
    -Softplus(-x), exact there and the same elsewhere, in the graph and its subgraphs (If, Loop
    bodies). A Sigmoid read by nothing else goes with it. The model is changed in place and returned."""
    graphs = list(all_graphs(model.graph))
    readers = defaultdict(int)
    for node in all_nodes(model.graph):
        for name in node.input:
            readers[name] += 1
    for graph in graphs:   # a graph's outputs, a subgraph's too, are read by what runs it
        for output in graph.output:
            readers[output.name] += 1
    taken = ({name for node in all_nodes(model.graph) for name in (*node.input, *node.output, node.name)}
             | {v.name for graph in graphs for v in (*graph.input, *graph.initializer, *graph.output)})
    for graph in reversed(graphs):   # subgraphs first: rewriting a graph's nodes copies the subgraphs they hold
        _log_sigmoid_as_softplus(graph, readers, taken)
    return model


def _log_sigmoid_as_softplus(graph: onnx.GraphProto, readers: dict, taken: set) -> None:
    """stable_log_sigmoid in one graph, whose Sigmoids a Log in it reads."""
    producers = {out: node for node in graph.node for out in node.output}
    nodes = []
    for node in graph.node:
        sigmoid = producers.get(node.input[0]) if node.op_type == "Log" and node.input else None
        if sigmoid is None or sigmoid.op_type != "Sigmoid" or sigmoid.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        negated, softplus = fresh_name(f"{node.name}.negated", taken), fresh_name(f"{node.name}.softplus", taken)
        nodes += [helper.make_node("Neg", [sigmoid.input[0]], [negated], name=fresh_name(f"{node.name}.neg_in", taken)),
                  helper.make_node("Softplus", [negated], [softplus], name=fresh_name(f"{node.name}.softplus_op", taken)),
                  helper.make_node("Neg", [softplus], [node.output[0]], name=fresh_name(f"{node.name}.neg_out", taken))]
        readers[sigmoid.output[0]] -= 1
    kept = [n for n in nodes if not (n.op_type == "Sigmoid" and readers[n.output[0]] == 0)]
    del graph.node[:]
    graph.node.extend(kept)


def all_graphs(graph: onnx.GraphProto):
    """The graph and its subgraphs (If, Loop, Scan bodies), nested ones too."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from all_graphs(sub)


def all_nodes(graph: onnx.GraphProto):
    """The graph's nodes and those of its subgraphs (If, Loop, Scan bodies)."""
    for each in all_graphs(graph):
        yield from each.node


def fresh_name(name: str, taken: set) -> str:
    """`name`, or with a counter where the graph already uses it; then taken."""
    candidate, count = name, 1
    while candidate in taken:
        candidate, count = f"{name}.{count}", count + 1
    taken.add(candidate)
    return candidate
