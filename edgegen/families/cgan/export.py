"""The class-conditional GAN's export: the EMA generator with a class per row."""

from __future__ import annotations

import numpy as np

from ...export.spec import ExportSpec, GraphSpec, latent_image_config
from ...package import TensorSpec
from .model import ImageGenerator
from .pipeline import ConditionalGANConfig


def _conditional_latent_inputs(ckpt, batch, rng, data):
    return {"z": rng.standard_normal((batch, ckpt.config.latent_dim)).astype(np.float32),
            "labels": rng.integers(0, ckpt.config.num_classes, size=batch).astype(np.int64)}


SPEC = ExportSpec(
    family="cgan",
    graphs=(
        GraphSpec("generator", lambda m: ImageGenerator(m.generator_ema),
                  lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)), TensorSpec("labels", "int64", ("batch",))),
                  ("image",), _conditional_latent_inputs),
    ),
    runtime_config=lambda ckpt: latent_image_config(ConditionalGANConfig, ckpt, num_classes=ckpt.config.num_classes),
    needs_data=False,
)
