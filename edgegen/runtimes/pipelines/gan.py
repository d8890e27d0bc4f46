"""The GAN pipeline: latent vectors in, images out."""

from __future__ import annotations

import numpy as np

from .base import Pipeline, as_float_array, check_count, standard_normal


class GANPipeline(Pipeline):
    family = "gan"

    def generate(self, z) -> np.ndarray:
        """Latents [n, latent_dim] -> images [n, C, H, W] in [0, 1]."""
        z = as_float_array(z, "latents", (None, self.latent_dim))
        image = self.sessions["generator"].run({"z": z})["image"]
        # The generator ends in tanh: map [-1, 1] to [0, 1] in place, no extra copy.
        image += 1.0
        image *= 0.5
        return np.clip(image, 0.0, 1.0, out=image)

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        return self.generate(standard_normal(check_count(n), self.latent_dim, seed))
