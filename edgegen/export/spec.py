"""Declarative export specs: per family, which graphs, their inputs, realistic inputs for
the validation gate, tolerances, and the config the runtime needs. No per-model scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from ..models.checkpoint import Checkpoint
from ..models import flow, pixelcnn, wavenet
from ..models.data import ImageData, load_images
from ..package import TensorSpec

TRACE_BATCH = 2   # the batch the exporter traces at (any dim of size 1 would be specialised)

# realistic_inputs(checkpoint, batch, rng, data) -> feeds for the graph, as numpy arrays.
InputMaker = Callable[[Checkpoint, int, np.random.Generator, "ImageData | None"], dict[str, np.ndarray]]


@dataclass(frozen=True)
class GraphSpec:
    part: str                                            # the graph's name in the package
    submodule: Callable[[torch.nn.Module], torch.nn.Module]
    inputs: Callable[[object], tuple[TensorSpec, ...]]   # from the family's Config; "batch" is dynamic
    outputs: tuple[str, ...] | Callable[[object], tuple[str, ...]]   # names, or from the Config
    realistic_inputs: InputMaker
    atol: float = 1e-4
    rtol: float = 1e-3

    def output_names(self, config) -> tuple[str, ...]:
        return self.outputs(config) if callable(self.outputs) else self.outputs


def training_images(ckpt: Checkpoint, source: str) -> ImageData:
    # the training seed: a folder's held-out split depends on it
    return load_images(source, image_size=ckpt.config.image_size, channels=ckpt.config.image_channels,
                       seed=ckpt.data.get("seed", 0))


@dataclass(frozen=True)
class ExportSpec:
    family: str
    graphs: tuple[GraphSpec, ...]
    runtime_config: Callable[[Checkpoint], dict]
    needs_data: bool = True   # whether the gate's realistic inputs come from the training data
    # (checkpoint, data source) -> the data the gate draws from
    load_data: Callable[[Checkpoint, str], ImageData] = training_images


def image_shape(config) -> list[int]:
    return [config.image_channels, config.image_size, config.image_size]


def held_out_images(data: ImageData | None, batch: int, rng: np.random.Generator) -> np.ndarray:
    return data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]


def held_out_image_inputs(ckpt, batch, rng, data):
    return {"image": held_out_images(data, batch, rng)}


def latent_inputs(ckpt, batch, rng, data):
    return {"z": rng.standard_normal((batch, ckpt.config.latent_dim)).astype(np.float32)}


def latent_image_config(config_class, ckpt: Checkpoint, **more):
    """The runtime config of an image family that samples from a latent vector."""
    return config_class(image_shape=image_shape(ckpt.config), latent_dim=ckpt.config.latent_dim, data=ckpt.data, **more)


def _flow_data(ckpt: Checkpoint, source: str) -> ImageData:
    points = ckpt.config.kind == "realnvp"
    if (source in flow.POINT_DATA) != points:
        raise DataError(f"data {source!r}: expected {'2-D points (' + ', '.join(flow.POINT_DATA) + ')' if points else 'images'} "
                        f"for this {ckpt.config.kind} checkpoint, found {'points' if source in flow.POINT_DATA else 'images'}")
    data, _ = flow.prepare_data(source, ckpt.config.image_size, ckpt.config.image_channels, ckpt.data.get("seed", 0))
    return data


def _flow_input_spec(c) -> tuple[TensorSpec, ...]:
    shape = (c.dim,) if c.kind == "realnvp" else tuple(image_shape(c))
    return (TensorSpec("x", "float32", ("batch", *shape)),)


def _flow_x(ckpt, batch, rng, data):
    x = data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]
    if ckpt.config.kind == "glow":  # dequantized pixels, as in training
        levels = ckpt.config.dequant_levels
        x = (np.round(x * (levels - 1)) + rng.random(x.shape)) / levels
    return {"x": x.astype(np.float32)}


def _flow_z(ckpt, batch, rng, data):
    # half the latents of held-out data, half prior samples at temperature 0.8
    with torch.no_grad():
        z, _ = ckpt.model.net(torch.from_numpy(_flow_x(ckpt, batch, rng, data)["x"]))
    prior = 0.8 * rng.standard_normal(z.shape)
    take_prior = (np.arange(batch) % 2 == 1)[:, None]
    return {"z": np.where(take_prior, prior, z.numpy()).astype(np.float32)}


def _flow_config(ckpt: Checkpoint) -> dict:
    c = ckpt.config
    shape = [c.dim] if c.kind == "realnvp" else image_shape(c)
    images = {"image_shape": shape} if c.kind == "glow" else {}
    return {"kind": c.kind, "data_shape": shape, **images, "event_dim": c.event_dim,
            "dequant_levels": c.dequant_levels, "data": ckpt.data}


FLOW = ExportSpec(
    family="flow",
    graphs=(
        GraphSpec("forward", lambda m: flow.FlowForward(m.freeze()), _flow_input_spec, ("z", "logdet"), _flow_x,
                  atol=1e-4, rtol=1e-4),
        GraphSpec("inverse", lambda m: flow.FlowInverse(m.freeze()),
                  lambda c: (TensorSpec("z", "float32", ("batch", c.event_dim)),), ("x",), _flow_z, atol=1e-4, rtol=1e-3),
    ),
    runtime_config=_flow_config,
    load_data=_flow_data,
)

def _gpt_data(ckpt: Checkpoint, source: str):
    """Held-out text as token windows: the corpus the model was trained on, or for an
    imported model the standard library's source through the model's own tokenizer."""
    from ..models.text import load_text, read_corpus, windows

    context = min(64, ckpt.config.block_size - 1)
    if ckpt.data.get("tokenizer", "bytes") == "bytes":
        return load_text(source, context)
    if "tokenizer.json" not in ckpt.files:  # an imported model without a tokenizer: token ids are all there is
        ids = np.random.default_rng(0).integers(0, ckpt.config.vocab_size, 20 * (context + 1))
        return ImageData("random token ids", windows(ids, context), windows(ids, context))
    from tokenizers import Tokenizer

    _, held_out = read_corpus("stdlib")
    ids = np.array(Tokenizer.from_file(str(ckpt.files["tokenizer.json"])).encode(held_out[:200_000].decode()).ids)
    ids = ids[ids < ckpt.config.vocab_size]  # a tokenizer may know more tokens than the model embeds
    return ImageData("stdlib", windows(ids, context), windows(ids, context))


def gpt_graph_inputs(c) -> tuple[TensorSpec, ...]:
    cache = ("batch", c.n_head, "past_sequence_length", c.head_dim)
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
    from ..models.gpt import GPT

    model: GPT = ckpt.model
    prompt_call = batch == 1
    past_len = 0 if prompt_call else int(rng.integers(4, 24))
    new = int(rng.integers(3, 9)) if prompt_call else (int(rng.integers(2, 4)) if batch == TRACE_BATCH else 1)
    total = past_len + new
    ids = data.test[rng.choice(len(data.test), size=batch)][:, :total]
    mask = np.ones((batch, total), np.int64)
    if past_len:
        mask[1::2, :int(rng.integers(1, past_len))] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    feeds = {"input_ids": ids[:, past_len:], "position_ids": positions[:, past_len:], "attention_mask": mask}
    with torch.inference_mode():
        past = model(*(torch.from_numpy(a[:, :past_len]) for a in (ids, positions, mask)), *model.empty_past(batch))[1:]
    names = [s.name for s in gpt_graph_inputs(ckpt.config)[3:]]
    return {**{k: np.ascontiguousarray(v) for k, v in feeds.items()}, **{n: p.numpy() for n, p in zip(names, past)}}


def _gpt_config(ckpt: Checkpoint) -> dict:
    c = ckpt.config
    tokenizer = {"kind": ckpt.data.get("tokenizer", "bytes")}
    if "tokenizer.json" in ckpt.files:
        from ..package import sha256_file

        tokenizer = {"kind": "bpe", "file": "tokenizer.json", "sha256": sha256_file(ckpt.files["tokenizer.json"])}
    return {"vocab_size": c.vocab_size, "block_size": c.block_size, "n_layer": c.n_layer, "n_head": c.n_head,
            "head_dim": c.head_dim, "n_embd": c.n_embd, "tokenizer": tokenizer,
            "eos_token_id": ckpt.data.get("eos_token_id"), "pad_token_id": ckpt.data.get("pad_token_id"),
            "data": ckpt.data}


GPT = ExportSpec(
    family="gpt",
    graphs=(GraphSpec("decoder", lambda m: m, gpt_graph_inputs, lambda c: _gpt_outputs(c.n_layer), _decoder_inputs),),
    runtime_config=_gpt_config,
    load_data=_gpt_data,
)

def mixed_labels(ckpt, batch, rng):
    """Real class ids and the "no label" index, mixed."""
    return rng.integers(0, ckpt.config.num_classes + 1, size=batch).astype(np.int64)


def _quantized_images(ckpt, batch, rng, data):
    levels = ckpt.config.levels
    return (np.round(held_out_images(data, batch, rng) * (levels - 1)) / (levels - 1)).astype(np.float32)


def _pixelcnn_network_inputs(ckpt, batch, rng, data):
    return {"image": _quantized_images(ckpt, batch, rng, data), "labels": mixed_labels(ckpt, batch, rng)}


def _pixelcnn_links_inputs(ckpt, batch, rng, data):
    rows = int(rng.integers(2, ckpt.config.image_size + 1))  # the first rows, as the sampler crops them
    return {"image": np.ascontiguousarray(_quantized_images(ckpt, batch, rng, data)[:, :, :rows]),
            "labels": mixed_labels(ckpt, batch, rng)}


def _pixelcnn_row_inputs(ckpt, batch, rng, data):
    image, labels = _quantized_images(ckpt, batch, rng, data), mixed_labels(ckpt, batch, rng)
    r = int(rng.integers(0, ckpt.config.image_size))
    with torch.inference_mode():
        links = ckpt.model.links(torch.from_numpy(image), torch.from_numpy(labels))[:, :, :, r:r + 1]
    return {"row": np.ascontiguousarray(image[:, :, r:r + 1]), "links": np.ascontiguousarray(links.numpy()),
            "labels": labels}


def _pixelcnn_config(ckpt: Checkpoint) -> dict:
    c = ckpt.config
    return {"image_shape": image_shape(c), "levels": c.levels, "num_classes": c.num_classes,
            "null_label": c.null_label, "layers": c.layers, "width": c.width, "data": ckpt.data}


def _pixelcnn_image(c, rows="rows"):
    return TensorSpec("image", "float32", ("batch", 1, rows, c.image_size))


PIXELCNN = ExportSpec(
    family="pixelcnn",
    graphs=(
        GraphSpec("network", lambda m: m,
                  lambda c: (_pixelcnn_image(c, c.image_size), TensorSpec("labels", "int64", ("batch",))),
                  ("logits",), _pixelcnn_network_inputs),
        GraphSpec("links", lambda m: pixelcnn.Links(m),
                  lambda c: (_pixelcnn_image(c), TensorSpec("labels", "int64", ("batch",))),
                  ("links",), _pixelcnn_links_inputs),
        GraphSpec("row", lambda m: pixelcnn.RowStep(m),
                  lambda c: (TensorSpec("row", "float32", ("batch", 1, 1, c.image_size)),
                             TensorSpec("links", "float32", ("batch", c.layers, 2 * c.width, 1, c.image_size)),
                             TensorSpec("labels", "int64", ("batch",))),
                  ("logits",), _pixelcnn_row_inputs),
    ),
    runtime_config=_pixelcnn_config,
)


def _wavenet_data(ckpt: Checkpoint, source: str):
    c = ckpt.config
    options = {"sample_rate": c.sample_rate, "train_samples": c.train_samples, "quantization": c.quantization}
    data, _ = wavenet.prepare_data(source, 0, None, ckpt.data.get("seed", 0), options)
    return data


def _held_out_codes(data, batch, rng, length):
    rows = data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]
    start = int(rng.integers(0, rows.shape[1] - length + 1))
    return np.ascontiguousarray(rows[:, start:start + length])


def _wavenet_network_inputs(ckpt, batch, rng, data):
    length = int(rng.integers(200, min(800, data.test.shape[1]) + 1))
    return {"codes": _held_out_codes(data, batch, rng, length), "labels": mixed_labels(ckpt, batch, rng)}


def _wavenet_step_inputs(ckpt, batch, rng, data):
    """The queues after PyTorch has stepped through a held-out prefix, and the next code."""
    t = int(rng.integers(20, min(600, data.test.shape[1] - 1)))
    codes, labels = _held_out_codes(data, batch, rng, t + 1), mixed_labels(ckpt, batch, rng)
    model = ckpt.model
    with torch.inference_mode():
        queues, labels_t = model.empty_queues(batch), torch.from_numpy(labels)
        for i in range(t):
            queues = model.step(torch.from_numpy(codes[:, i]), labels_t, *queues)[1:]
    return {"code": np.ascontiguousarray(codes[:, t]), "labels": labels,
            **{f"state.{i}": q.numpy() for i, q in enumerate(queues)}}


def _wavenet_step_specs(c) -> tuple[TensorSpec, ...]:
    return (TensorSpec("code", "int64", ("batch",)), TensorSpec("labels", "int64", ("batch",)),
            *(TensorSpec(f"state.{i}", "float32", ("batch", c.residual_channels, n)) for i, n in enumerate(c.queue_lengths)))


def _wavenet_config(ckpt: Checkpoint) -> dict:
    c = ckpt.config
    return {"sample_rate": c.sample_rate, "quantization": c.quantization, "num_classes": c.num_classes,
            "null_label": c.null_label, "residual_channels": c.residual_channels, "queue_lengths": c.queue_lengths,
            "receptive_field": c.receptive_field, "data": ckpt.data}


WAVENET = ExportSpec(
    family="wavenet",
    graphs=(
        GraphSpec("network", lambda m: m,
                  lambda c: (TensorSpec("codes", "int64", ("batch", "samples")), TensorSpec("labels", "int64", ("batch",))),
                  ("logits",), _wavenet_network_inputs),
        GraphSpec("step", lambda m: wavenet.Step(m), _wavenet_step_specs,
                  lambda c: ("logits", *(f"next_state.{i}" for i in range(len(c.queue_lengths)))), _wavenet_step_inputs),
    ),
    runtime_config=_wavenet_config,
    load_data=_wavenet_data,
)

