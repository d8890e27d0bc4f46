"""The GAN pipeline: latent vectors in, images out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...runtimes.pipeline import LatentImageConfig, Pipeline, as_float_array, check_count, standard_normal


@dataclass(kw_only=True)
class GANConfig(LatentImageConfig):
    """The GAN's runtime config: the image shape and the latent size."""


class GANPipeline(Pipeline):
    family = "gan"

    def generate(self, z) -> np.ndarray:
        """Latents [n, latent_dim] -> images [n, C, H, W] in [0, 1]."""
        z = as_float_array(z, "z", (None, self.latent_dim))
        return self.run_finite("generator", {"z": z})["image"]  # the graph maps tanh to [0, 1]

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        return self.generate(standard_normal(check_count(n), self.latent_dim, seed))
