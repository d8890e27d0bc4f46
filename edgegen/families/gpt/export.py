"""The GPT decoder's export: one graph for the prompt and every new token, with the KV cache as
inputs and outputs, gated on held-out text through both kinds of call."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DataError, ValidationError
from ...export.graph_rewrites import fuse_sibling_matmuls
from ...export.spec import TRACE_BATCH, ExportSpec, GraphSpec
from ...package import TensorSpec, sha256_file
from ...serving.genai import write_genai_config
from ...training.checkpoint import IMPORTED_SOURCES, Checkpoint
from ...training.data import ImageData
from .pipeline import LOGITS_TO_KEEP, GPTConfig


def _gpt_data(ckpt: Checkpoint, source: str):
    """Held-out text as token windows: the corpus the model was trained on, or for an imported
    model --data's text (default: the standard library's source) through the model's own tokenizer."""
    from ...training.text import HELD_OUT_EVERY, load_text, read_corpus, windows

    context = min(64, ckpt.config.block_size - 1)
    if ckpt.data.get("tokenizer", "bytes") == "bytes":
        return load_text(source, context)
    given = source not in IMPORTED_SOURCES   # --data: it was read as stdlib whatever it named
    if "tokenizer.json" not in ckpt.files:  # an imported model without a tokenizer: token ids are all there is
        if given:
            raise DataError(f"--data {source!r}: expected a model with a tokenizer to encode text with, found one "
                            "imported without tokenizer files (its gate draws random token ids; leave --data out)")
        ids = np.random.default_rng(0).integers(0, ckpt.config.vocab_size, 20 * (context + 1))
        return ImageData("random token ids", windows(ids, context), windows(ids, context))
    from tokenizers import Tokenizer

    corpus = source if given else "stdlib"
    _, held_out = read_corpus(corpus)
    text = held_out[:200_000].decode("utf-8", errors="ignore")   # a cut through a character drops it
    ids = np.array(Tokenizer.from_file(str(ckpt.files["tokenizer.json"])).encode(text).ids)
    ids = ids[ids < ckpt.config.vocab_size]  # a tokenizer may know more tokens than the model embeds
    if len(ids) < 2 * (context + 1):
        raise DataError(f"--data {source!r}: expected text of at least {2 * (context + 1)} tokens in the part held out "
                        f"for the gate (its last {100 // HELD_OUT_EVERY}%), found {len(ids)}")
    return ImageData(corpus, windows(ids, context), windows(ids, context))


def gpt_graph_inputs(c) -> tuple[TensorSpec, ...]:
    cache = ("batch", c.kv_heads, "past_sequence_length", c.head_dim)
    return (TensorSpec("input_ids", "int64", ("batch", "sequence")),
            TensorSpec("position_ids", "int64", ("batch", "sequence")),
            TensorSpec("attention_mask", "int64", ("batch", "total_sequence_length")),
            *(TensorSpec(f"past_key_values.{i}.{kv}", "float32", cache) for i in range(c.n_layer) for kv in ("key", "value")))


def _gpt_outputs(n_layer: int) -> tuple[str, ...]:
    return ("logits", *(f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")))


def _decoder_inputs(ckpt, batch, rng, data):
    """Held-out text through the decoder's two kinds of call. At batch 1 the prompt call
    (empty past); at other batches a call of one new token (2-3 at the traced batch, so that
    the sequence dim stays dynamic) after a past that PyTorch computed from a prompt whose
    odd rows are left-padded."""
    model = ckpt.model
    prompt_call = batch == 1
    past_len = 0 if prompt_call else int(rng.integers(4, 24))
    new = int(rng.integers(3, 9)) if prompt_call else (int(rng.integers(2, 4)) if batch == TRACE_BATCH else 1)
    context = ckpt.config.block_size   # a model of a short context (a small sliding window) stays inside it
    new = min(new, context)
    past_len = min(past_len, context - new)
    total = past_len + new
    ids = data.test[rng.choice(len(data.test), size=batch)][:, :total]
    mask = np.ones((batch, total), np.int64)
    if past_len > 1:
        mask[1::2, :int(rng.integers(1, past_len))] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    feeds = {"input_ids": ids[:, past_len:], "position_ids": positions[:, past_len:], "attention_mask": mask}
    with torch.inference_mode():
        past = model(*(torch.from_numpy(a[:, :past_len]) for a in (ids, positions, mask)), *model.empty_past(batch))[1:]
    names = [s.name for s in gpt_graph_inputs(ckpt.config)[3:]]
    return {**{k: np.ascontiguousarray(v) for k, v in feeds.items()}, **{n: p.numpy() for n, p in zip(names, past)}}


def with_logits_to_keep(model):
    """The decoder graph with the optional input logits_to_keep (int64 [1], an initializer that a
    feed overrides; default 0): the output head runs on the last that many positions, 0 meaning
    all of them. A prompt's call needs only its last position's logits, and the head's MatMul over
    every position is the largest single cost of a long prompt (1,024 tokens through a 32,000-token
    vocabulary: 25 G multiply-adds). GenAI, TensorRT and the teacher-forced gates, which feed nothing, keep
    every position's logits."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    index, head = next(((i, n) for i, n in enumerate(graph.node) if "logits" in n.output), (None, None))
    if head is None or head.op_type != "MatMul":
        raise ValidationError(f"decoder graph: expected the logits from a MatMul (the output head), found "
                              f"{head.op_type if head is not None else 'no node that writes them'}")
    logits = next(o for o in graph.output if o.name == "logits")
    if len(logits.type.tensor_type.shape.dim) != 3:   # the slice is along the tokens: [batch, tokens, vocab]
        raise ValidationError(f"decoder graph: expected logits [batch, tokens, vocab] from the head's MatMul, found "
                              f"{len(logits.type.tensor_type.shape.dim)} dims")
    kept = f"{head.input[0]}.kept"
    constants = {f"{LOGITS_TO_KEEP}.ends": np.array([np.iinfo(np.int64).max], np.int64),
                 f"{LOGITS_TO_KEEP}.axes": np.array([1], np.int64), LOGITS_TO_KEEP: np.array([0], np.int64)}
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    graph.input.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, TensorProto.INT64, [1]))
    nodes = [helper.make_node("Neg", [LOGITS_TO_KEEP], [f"{LOGITS_TO_KEEP}.starts"], name=f"{LOGITS_TO_KEEP}.neg"),
             helper.make_node("Slice", [head.input[0], f"{LOGITS_TO_KEEP}.starts", f"{LOGITS_TO_KEEP}.ends",
                                        f"{LOGITS_TO_KEEP}.axes"], [kept], name=f"{LOGITS_TO_KEEP}.slice")]
    head.input[0] = kept
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    logits.type.tensor_type.shape.dim[1].dim_param = "logits_sequence"
    return model


def _last_logits_gate(module, session, feeds, atol, rtol) -> list:
    """with_logits_to_keep's slice against PyTorch: logits_to_keep 1 gives the module's last row."""
    from ...export.validate import compare, torch_inputs

    with torch.inference_mode():
        reference = module(*torch_inputs(feeds, session.inputs))[0][:, -1:].numpy()
    ours = session.inference_session.run(["logits"], {**feeds, LOGITS_TO_KEEP: np.array([1], np.int64)})[0]
    return [compare(f"logits ({LOGITS_TO_KEEP} 1)", len(reference), ours, reference, atol, rtol)]


def _gpt_config(ckpt: Checkpoint) -> GPTConfig:
    c = ckpt.config
    tokenizer = {"kind": ckpt.data.get("tokenizer", "bytes")}
    if "tokenizer.json" in ckpt.files:
        tokenizer = {"kind": "bpe", "file": "tokenizer.json", "sha256": sha256_file(ckpt.files["tokenizer.json"])}
    chat = dict(ckpt.data.get("chat_templates") or {})
    if chat:   # each template file hashed like the tokenizer
        chat["templates"] = {name: {"file": file, "sha256": sha256_file(ckpt.files[file])}
                             for name, file in chat["templates"].items()}
    data = {key: value for key, value in ckpt.data.items() if key != "chat_templates"}   # recorded above, not twice
    return GPTConfig(vocab_size=c.vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                     head_dim=c.head_dim, n_embd=c.n_embd, tokenizer=tokenizer, architecture=c.architecture,
                     n_kv_head=c.n_kv_head,
                     eos_token_id=ckpt.data.get("eos_token_id"), pad_token_id=ckpt.data.get("pad_token_id"), data=data,
                     more_eos_token_ids=list(ckpt.data.get("more_eos_token_ids", [])),
                     generation_defaults=dict(ckpt.data.get("generation_defaults", {})), chat_templates=chat)


SPEC = ExportSpec(
    family="gpt",
    graphs=(GraphSpec("decoder", lambda m: m, gpt_graph_inputs, lambda c: _gpt_outputs(c.n_layer), _decoder_inputs,
                      rewrite=lambda model: with_logits_to_keep(fuse_sibling_matmuls(model)),
                      also_gate=_last_logits_gate),),
    runtime_config=_gpt_config,
    load_data=_gpt_data,
    companions=lambda folder, config, graphs: write_genai_config(folder, config, graphs["decoder"].file),
)
