"""Declarative export specs: per family, which graphs, their inputs, realistic inputs for
the validation gate, tolerances, and the config the runtime needs. No per-model scripts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import DataError, UnknownFamilyError
from ..models.checkpoint import Checkpoint
from ..models import flow
from ..models.data import ImageData, load_images
from ..models.gan import ImageGenerator
from ..package import TensorSpec

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


def _training_images(ckpt: Checkpoint, source: str) -> ImageData:
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
    load_data: Callable[[Checkpoint, str], ImageData] = _training_images


def _image_shape(config) -> list[int]:
    return [config.image_channels, config.image_size, config.image_size]


def _held_out_images(data: ImageData | None, batch: int, rng: np.random.Generator) -> np.ndarray:
    return data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]


def _vae_encoder_inputs(ckpt, batch, rng, data):
    return {"image": _held_out_images(data, batch, rng)}


def _vae_decoder_inputs(ckpt, batch, rng, data):
    # Half posterior means of held-out images, half prior samples: both regions the decoder serves.
    with torch.no_grad():
        mu, _ = ckpt.model.encoder(torch.from_numpy(_held_out_images(data, batch, rng)))
    prior = rng.standard_normal(mu.shape).astype(np.float32)
    take_prior = np.arange(batch) % 2 == 1
    return {"z": np.where(take_prior[:, None], prior, mu.numpy()).astype(np.float32)}


def _latent_inputs(ckpt, batch, rng, data):
    return {"z": rng.standard_normal((batch, ckpt.config.latent_dim)).astype(np.float32)}


def _image_config(ckpt: Checkpoint) -> dict:
    return {"image_shape": _image_shape(ckpt.config), "latent_dim": ckpt.config.latent_dim, "data": ckpt.data}


VAE = ExportSpec(
    family="vae",
    graphs=(
        GraphSpec("encoder", lambda m: m.encoder,
                  lambda c: (TensorSpec("image", "float32", ("batch", *_image_shape(c))),),
                  ("mu", "logvar"), _vae_encoder_inputs),
        GraphSpec("decoder", lambda m: m.decoder,
                  lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)),),
                  ("image",), _vae_decoder_inputs),
    ),
    runtime_config=_image_config,
)

GAN = ExportSpec(
    family="gan",
    graphs=(
        GraphSpec("generator", lambda m: ImageGenerator(m.generator_ema),
                  lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)),),
                  ("image",), _latent_inputs),
    ),
    runtime_config=_image_config,
    needs_data=False,
)

# Fractions of the schedule the gate visits: both ends, and fractional timesteps (Euler's).
GATE_TIMESTEPS = (1.0, 0.0, 0.5, 0.25, 0.7513, 0.0421, 0.9, 0.333)


def _denoiser_inputs(ckpt, batch, rng, data):
    """Held-out images noised to several timesteps across the schedule (a different run of
    GATE_TIMESTEPS at each call), with real labels and the "no label" index mixed in."""
    c = ckpt.config
    x0 = _held_out_images(data, batch, rng) * 2 - 1
    first = int(rng.integers(len(GATE_TIMESTEPS)))
    fractions = np.array([GATE_TIMESTEPS[(first + i) % len(GATE_TIMESTEPS)] for i in range(batch)])
    t = fractions * (c.num_train_timesteps - 1)
    alphas = ckpt.model.alphas_cumprod.numpy().astype(np.float64)
    a = np.interp(t, np.arange(len(alphas)), alphas)[:, None, None, None]
    noisy = np.sqrt(a) * x0 + np.sqrt(1 - a) * rng.standard_normal(x0.shape)
    labels = rng.integers(0, c.num_classes + 1, size=batch)
    return {"sample": noisy.astype(np.float32), "timestep": t.astype(np.float32), "class_labels": labels.astype(np.int64)}


def _diffusion_config(ckpt: Checkpoint) -> dict:
    c = ckpt.config
    return {"image_shape": _image_shape(c), "num_classes": c.num_classes, "null_label": c.null_label,
            "num_train_timesteps": c.num_train_timesteps, "beta_schedule": c.beta_schedule,
            "beta_start": c.beta_start, "beta_end": c.beta_end, "prediction_type": c.prediction_type,
            "data": ckpt.data}


DIFFUSION = ExportSpec(
    family="diffusion",
    graphs=(
        GraphSpec("unet", lambda m: m.unet_ema,
                  lambda c: (TensorSpec("sample", "float32", ("batch", *_image_shape(c))),
                             TensorSpec("timestep", "float32", ("batch",)),
                             TensorSpec("class_labels", "int64", ("batch",))),
                  ("prediction",), _denoiser_inputs),
    ),
    runtime_config=_diffusion_config,
)

def _flow_data(ckpt: Checkpoint, source: str) -> ImageData:
    points = ckpt.config.kind == "realnvp"
    if (source in flow.POINT_DATA) != points:
        raise DataError(f"data {source!r}: expected {'2-D points (' + ', '.join(flow.POINT_DATA) + ')' if points else 'images'} "
                        f"for this {ckpt.config.kind} checkpoint, found {'points' if source in flow.POINT_DATA else 'images'}")
    data, _ = flow.prepare_data(source, ckpt.config.image_size, ckpt.config.image_channels, ckpt.data.get("seed", 0))
    return data


def _flow_input_spec(c) -> tuple[TensorSpec, ...]:
    shape = (c.dim,) if c.kind == "realnvp" else tuple(_image_shape(c))
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
    shape = [c.dim] if c.kind == "realnvp" else _image_shape(c)
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
    (empty past); at other batches a call of 1-3 new tokens after a past that PyTorch
    computed from a prompt whose odd rows are left-padded."""
    from ..models.gpt import GPT

    model: GPT = ckpt.model
    prompt_call = batch == 1
    past_len = 0 if prompt_call else int(rng.integers(4, 24))
    new = int(rng.integers(3, 9)) if prompt_call else int(rng.integers(1, 4))
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

EXPORT_SPECS = {s.family: s for s in (VAE, GAN, DIFFUSION, FLOW, GPT)}


def export_spec(family: str) -> ExportSpec:
    if family not in EXPORT_SPECS:
        raise UnknownFamilyError(f"family {family!r}: expected one with an export spec ({', '.join(EXPORT_SPECS)}), found none")
    return EXPORT_SPECS[family]
