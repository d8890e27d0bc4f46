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

def gate_size(batch: int, low: int) -> tuple[int, int] | None:
    """Input height x width for the trace (batch 2) and the gate (batches 1 and 3), within the
    held-out crops' low-resolution side `low` (at least 8): all different, none square, odd ones
    among them, so the graph cannot specialise on any; None (whole crops) for other batches."""
    return {1: (low - 3, low - 1), 2: (low, low - 2), 3: (low - 1, low - 4)}.get(batch)


def held_out_low_resolution(ckpt, batch, rng, data):
    """Degraded held-out crops, cut to gate_size for the trace's and the gate's batches, whole
    otherwise (optimize's calibration and gate)."""
    c = ckpt.config
    images = data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]
    low = degraded_batch(images, c, rng)
    size = gate_size(batch, low.shape[-1])
    if size is not None:
        low = low[:, :, :size[0], :size[1]]
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
