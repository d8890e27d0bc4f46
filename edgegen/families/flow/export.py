"""The flows' export: the forward graph (x -> z, log-determinant) and the inverse graph, gated on
held-out data (dequantized pixels for Glow) and on a mix of its latents and prior samples."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DataError
from ...export.spec import ExportSpec, GraphSpec, image_shape
from ...package import TensorSpec
from ...training.checkpoint import Checkpoint
from ...training.data import ImageData
from . import model as flow
from .pipeline import FlowConfig


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
    # half the latents of held-out data, half draws from the prior itself (sampling's default
    # temperature, 1: a variant must decode its tails; judged at 0.8, flow-moons' int8 passed at 32 dB
    # and gave 29 at 1: review 174)
    with torch.no_grad():
        z, _ = ckpt.model.net(torch.from_numpy(_flow_x(ckpt, batch, rng, data)["x"]))
    prior = rng.standard_normal(z.shape)
    take_prior = (np.arange(batch) % 2 == 1)[:, None]
    return {"z": np.where(take_prior, prior, z.numpy()).astype(np.float32)}


def _flow_config(ckpt: Checkpoint) -> FlowConfig:
    c = ckpt.config
    shape = [c.dim] if c.kind == "realnvp" else image_shape(c)
    return FlowConfig(kind=c.kind, data_shape=shape, event_dim=c.event_dim, dequant_levels=c.dequant_levels,
                      image_shape=shape if c.kind == "glow" else None, data=ckpt.data)


SPEC = ExportSpec(
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
