"""The decoder graph's ONNX Runtime form: the KV cache written in place.

The exported decoder grows its cache by Concat(past, new) -> present, so every call copies the
whole cache: read once, written once, besides attention's own read. On a 124M Llama after a
1,024-token prompt that copy took a fifth of an int4 decode step (benchmarks/kv_cache_forms.py).
In this form each cache tensor is one buffer, bound by the loop as both the past input and the
present output (at a capacity the loop grows, pipeline._InPlaceCache); a TensorScatter node
(ONNX opset 24) writes the call's new keys and values into it at position total - new (ONNX
Runtime writes in place when the output is the input's own memory), and attention reads the
buffer's whole capacity, its mask padded over the positions not written yet.

The contract beside that is the exported graph's: attention_mask covers the tokens so far
(past + new), and a call's new tokens go where the mask ends. A feed of the exported form runs
unchanged once each past has room for the new tokens (`with_room`). `edgegen optimize` makes
this form of a token package's variants for ONNX Runtime targets (TensorRT keeps the exported
form: whether its engines write in place where an input and an output share memory is
unmeasured; JetPack 6's parser has no TensorScatter) and checks it against the graph it came
from; the pipeline reads the form from the graph's metadata (pipeline.writes_cache_in_place).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ValidationError
from ...export.graph_rewrites import GraphForm
from ...runtimes.ort import OrtBinding
from .pipeline import KV_CACHE_IN_PLACE, KV_CACHE_METADATA, writes_cache_in_place

PAST, PRESENT = "past_key_values.", "present."
SCATTER_OPSET = 24          # TensorScatter's first opset
PREFIX = "kv_cache_in_place"
CHECK_SPARE = 3             # room beyond the new tokens in the check's second pass: the padded mask at work
ATOL, RTOL = 1e-5, 1e-4     # the same arithmetic on the same values; only the padded softmax terms differ


def write_cache_in_place(model: onnx.ModelProto) -> onnx.ModelProto:
    """The in-place form of a decoder graph of the family's contract (module docstring). Refuses
    a graph where the cache is not grown by one Concat per tensor into the present output, or
    whose attention is not ONNX's Attention op with a mask (an export below opset 23 spells it
    out in MatMuls). Changes `model` in place and returns it."""
    graph = model.graph
    pasts = [i for i in graph.input if i.name.startswith(PAST)]
    concats = {n.input[0]: n for n in graph.node if n.op_type == "Concat" and n.input and n.input[0].startswith(PAST)}
    presents = {o.name for o in graph.output}
    for past in pasts:
        node = concats.get(past.name)
        present = PRESENT + past.name[len(PAST):]
        if node is None or len(node.input) != 2 or _axis(node) != 2 or list(node.output) != [present] \
                or present not in presents:
            raise ValidationError(f"decoder graph: expected {past.name!r} grown by one Concat along axis 2 into "
                                  f"{present!r}, found {_describe(node)}")
    attentions = [n for n in graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
    if not attentions or any(len(n.input) < 4 or not n.input[3] or n.input[1] not in presents for n in attentions):
        raise ValidationError("decoder graph: expected ONNX Attention nodes (opset 23 or later) that read the present "
                              "cache with a mask, found " + (f"{len(attentions)} without" if attentions else "none"))
    if not pasts:
        raise ValidationError(f"decoder graph: expected {PAST}N.key/value inputs, found none")

    graph.initializer.extend([numpy_helper.from_array(np.zeros(7, np.int64), f"{PREFIX}.zeros"),
                              numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), f"{PREFIX}.lowest")])
    write_at, pads = f"{PREFIX}.write_indices", f"{PREFIX}.pads"
    head = [
        # where this call's tokens go, per row: the tokens so far (the mask) less this call's
        helper.make_node("Shape", ["attention_mask"], [f"{PREFIX}.total"], start=1, end=2),
        helper.make_node("Shape", ["input_ids"], [f"{PREFIX}.new"], start=1, end=2),
        helper.make_node("Shape", ["input_ids"], [f"{PREFIX}.batch"], start=0, end=1),
        helper.make_node("Sub", [f"{PREFIX}.total", f"{PREFIX}.new"], [f"{PREFIX}.start"]),
        helper.make_node("Expand", [f"{PREFIX}.start", f"{PREFIX}.batch"], [write_at]),
        # the mask's last dim padded from the tokens so far to the buffer's capacity
        helper.make_node("Shape", [pasts[0].name], [f"{PREFIX}.capacity"], start=2, end=3),
        helper.make_node("Sub", [f"{PREFIX}.capacity", f"{PREFIX}.total"], [f"{PREFIX}.spare"]),
        helper.make_node("Concat", [f"{PREFIX}.zeros", f"{PREFIX}.spare"], [pads], axis=0),
    ]
    for past in pasts:
        node = concats[past.name]
        scatter = helper.make_node("TensorScatter", [past.name, node.input[1], write_at], list(node.output),
                                   name=f"{PREFIX}.{past.name[len(PAST):]}", axis=2)
        graph.node.insert(list(graph.node).index(node), scatter)
        graph.node.remove(node)
    padded = {}
    for attention in attentions:
        mask = attention.input[3]
        if mask not in padded:
            padded[mask] = f"{mask}.{PREFIX}"
            pad = helper.make_node("Pad", [mask, pads, f"{PREFIX}.lowest"], [padded[mask]],
                                   name=f"{PREFIX}.pad.{len(padded)}", mode="constant")
            graph.node.insert(list(graph.node).index(attention), pad)
        attention.input[3] = padded[mask]
    for offset, node in enumerate(head):
        node.name = f"{PREFIX}.{node.output[0].rsplit('.', 1)[1]}"
        graph.node.insert(offset, node)
    # the present is the past's buffer: the same shape
    types = {p.name: p.type for p in pasts}
    for output in graph.output:
        if output.name.startswith(PRESENT):
            output.type.CopyFrom(types[PAST + output.name[len(PRESENT):]])
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, SCATTER_OPSET)
    kept = [p for p in model.metadata_props if p.key != KV_CACHE_METADATA]
    del model.metadata_props[:]
    model.metadata_props.extend([*kept, onnx.StringStringEntryProto(key=KV_CACHE_METADATA, value=KV_CACHE_IN_PLACE)])
    return model


def with_room(feed: dict, spare: int = 0) -> dict:
    """A feed of the exported form as the in-place form takes it: each past grown by the call's
    new tokens (and `spare` more positions), zeros where nothing is written yet."""
    new = feed["input_ids"].shape[1] + spare
    grown = {}
    for name, value in feed.items():
        if name.startswith(PAST):
            b, h, _, d = value.shape
            value = np.concatenate([value, np.zeros((b, h, new, d), value.dtype)], axis=2)
        grown[name] = value
    return grown


def check_in_place(before, after, feeds: list[dict]) -> list:
    """The in-place graph (session `after`) against the graph it was made from (`before`) on
    feeds of the exported form: every output, once with exactly the room the call needs and once
    with CHECK_SPARE positions more (the mask's padding at work). A prompt call (the feeds' own,
    or one made from their token ids where they are all decode steps) is also checked as the
    loop's later chunks run it: its second half after the first half's cache, with odd rows
    left-padded. Returns the comparisons."""
    from ...export.validate import compare

    prompts = [f for f in feeds if _is_long_prompt(f)]
    if not prompts:
        prompts = [_prompt_from(feeds[0])]
        feeds = [*feeds, *prompts]
    results = []
    for feed in [*feeds, *(_second_chunk(before, f) for f in prompts)]:
        reference = before.run(feed)
        total = feed["attention_mask"].shape[1]
        for spare in (0, CHECK_SPARE):
            ours = after.run(with_room(feed, spare))
            label = f"{feed['input_ids'].shape[0]}, {total - feed['input_ids'].shape[1]} past, room +{spare}"
            results += [compare(name, label, ours[name][:, :, :total] if name.startswith(PRESENT) else ours[name],
                                value, ATOL, RTOL) for name, value in reference.items()]
    return results


def _is_long_prompt(feed: dict) -> bool:
    return feed["input_ids"].shape[1] >= 4 and all(v.shape[2] == 0 for n, v in feed.items() if n.startswith(PAST))


def _prompt_from(feed: dict, length: int = 8) -> dict:
    """A prompt call of `length` tokens, the feed's token ids repeated, with nothing cached."""
    ids = np.resize(feed["input_ids"], (feed["input_ids"].shape[0], length))
    rows = len(ids)
    return {"input_ids": ids, "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (rows, length)).copy(),
            "attention_mask": np.ones((rows, length), np.int64),
            **{name: np.ascontiguousarray(value[:, :, :0]) for name, value in feed.items() if name.startswith(PAST)}}


def _second_chunk(session, feed: dict) -> dict:
    """A prompt call split as chunked prefill splits it: the feed of its second half, the past
    being what `session` makes of the first half, two padding positions on odd rows."""
    half = feed["input_ids"].shape[1] // 2
    mask = feed["attention_mask"].copy()
    mask[1::2, :2] = 0
    first = {name: (value[:, :half] if name in ("input_ids", "position_ids", "attention_mask") else value)
             for name, value in {**feed, "attention_mask": mask}.items()}
    cache = session.run(first)
    return {**{name: value[:, half:] for name, value in feed.items() if name in ("input_ids", "position_ids")},
            "attention_mask": mask, **{PAST + name[len(PRESENT):]: value for name, value in cache.items()
                                       if name.startswith(PRESENT)}}


def timed_call(session, feed: dict):
    """One call of either form as the pipeline makes it, bound once by address: the exported form
    reads the past and writes the grown cache into a buffer of its own; the in-place form writes
    the call's tokens into the past's own buffer (the same positions on every call)."""
    in_place = writes_cache_in_place(session)
    feed = {name: np.ascontiguousarray(value) for name, value in (with_room(feed) if in_place else feed).items()}
    outputs = session.run(feed)   # their shapes, and buffers to bind
    binding = OrtBinding(session)
    for name, value in feed.items():
        binding.input(name, value)
    for name, value in outputs.items():
        own = in_place and name.startswith(PRESENT)
        binding.output(name, feed[PAST + name[len(PRESENT):]] if own else value)

    def call(_bound=(feed, outputs)) -> None:   # the bound memory lives as long as the call
        binding.run()
    return call


FORM = GraphForm(name="KV cache written in place (TensorScatter, opset 24)", rewrite=write_cache_in_place,
                 check=check_in_place, feed=with_room, timed_call=timed_call)


def _axis(node) -> int | None:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), None)


def _describe(node) -> str:
    if node is None:
        return "no Concat that reads it first"
    return f"{node.op_type} {list(node.input)} -> {list(node.output)} (axis {_axis(node)})"

