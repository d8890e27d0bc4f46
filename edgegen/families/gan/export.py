"""The GAN's export: the EMA generator, its tanh mapped to [0, 1] inside the graph."""

from __future__ import annotations

from ...export.spec import ExportSpec, GraphSpec, latent_image_config, latent_inputs
from ...package import TensorSpec
from .model import ImageGenerator
from .pipeline import GANConfig

SPEC = ExportSpec(
    family="gan",
    graphs=(
        GraphSpec("generator", lambda m: ImageGenerator(m.generator_ema),
                  lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)),),
                  ("image",), latent_inputs),
    ),
    runtime_config=lambda ckpt: latent_image_config(GANConfig, ckpt),
    needs_data=False,
)
