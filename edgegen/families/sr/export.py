"""The super-resolution export: one graph over images of any height and width.

The gate checks it at low-resolution sizes the trace did not see, odd ones among them, on
held-out crops degraded as in training."""

from __future__ import annotations

import numpy as np

from ...export.spec import ExportSpec, GraphSpec
from ...package import TensorSpec
from ...training.data import ImageData
from .data import held_out_crops
from .model import Upscaler, degraded_batch
from .pipeline import GRAPH, INPUT, OUTPUT, SRConfig

# input height x width per batch size: the trace (batch 2) and the gate (1, 3) see different
# sizes, none square, so the graph cannot specialise on any of them
GATE_SIZES = {1: (15, 21), 2: (16, 20), 3: (19, 23)}


def held_out_low_resolution(ckpt, batch, rng, data):
    """Degraded held-out crops, cut to GATE_SIZES for the gate's batches, whole otherwise
    (optimize's calibration and gate)."""
    c = ckpt.config
    images = data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]
    low = degraded_batch(images, c, rng)
    if batch in GATE_SIZES:
        height, width = GATE_SIZES[batch]
        low = low[:, :, :height, :width]
    return {INPUT: np.ascontiguousarray(low)}


def runtime_config(ckpt) -> SRConfig:
    c = ckpt.config
    return SRConfig(scale=c.scale, receptive_radius=c.receptive_radius, overlap=2 * c.receptive_radius, data=ckpt.data)


def held_out_data(ckpt, source) -> ImageData:
    """The held-out crops only: the gate and optimize need no training crops."""
    empty = np.zeros((0, 3, ckpt.config.image_size, ckpt.config.image_size), np.float32)
    return ImageData(source, empty, held_out_crops(source, ckpt.config.image_size, ckpt.data.get("seed", 0)))


SPEC = ExportSpec(
    family="sr",
    graphs=(
        GraphSpec(GRAPH, lambda m: Upscaler(m.generator_ema),
                  lambda c: (TensorSpec(INPUT, "float32", ("batch", c.image_channels, "height", "width")),),
                  (OUTPUT,), held_out_low_resolution),
    ),
    runtime_config=runtime_config,
    load_data=held_out_data,
)
