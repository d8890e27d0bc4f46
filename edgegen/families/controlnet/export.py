"""ControlNet's export: the base UNet and the control copy fused in one graph, with the hint
and the conditioning scale as inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...export.spec import ExportSpec, GraphSpec, held_out_images, image_shape
from ...package import TensorSpec
from ..diffusion.export import denoiser_inputs, noised, schedule
from .pipeline import ControlNetConfig, coarse_hint


def _controlled_denoiser_inputs(ckpt, batch, rng, data):
    """The denoiser's inputs, each image's hint made from its clean version, and
    conditioning scales from 0 (off) to beyond 1."""
    images = held_out_images(data, batch, rng)
    scales = rng.choice([0.0, 0.5, 1.0, 1.5], size=batch).astype(np.float32)
    return {**noised(ckpt, images * 2 - 1, rng), "control": coarse_hint(images, ckpt.config.hint_factor),
            "conditioning_scale": scales}


SPEC = ExportSpec(
    family="controlnet",
    graphs=(
        GraphSpec("unet", lambda m: m.exported(),
                  lambda c: (*denoiser_inputs(c), TensorSpec("control", "float32", ("batch", *image_shape(c))),
                             TensorSpec("conditioning_scale", "float32", ("batch",))),
                  ("prediction",), _controlled_denoiser_inputs),
    ),
    # the base by name: the manifest travels to devices, the training machine's paths do not matter there
    runtime_config=lambda ckpt: ControlNetConfig(**schedule(ckpt), hint_factor=ckpt.config.hint_factor,
                                                 base=Path(ckpt.config.base_checkpoint).name),
)
