"""The VAE pipeline: encode, decode, sample, reconstruct, anomaly score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...runtimes.pipeline import LatentImageConfig, Pipeline, as_float_array, check_count, check_range, standard_normal


@dataclass(kw_only=True)
class VAEConfig(LatentImageConfig):
    """The VAE's (and the VAE-GAN's) runtime config: the image shape and the latent size."""


class VAEPipeline(Pipeline):
    family = "vae"

    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Images [n, C, H, W] in [0, 1] -> (mu, logvar), each [n, latent_dim]."""
        x = self._images(x)
        out = self.run_finite("encoder", {"image": x})
        return out["mu"], out["logvar"]

    def _images(self, x) -> np.ndarray:
        """Pictures as the encoder was trained on them: [n, C, H, W] in [0, 1] (0-255 ones would be
        encoded as something else, and score as infinitely unlike the data)."""
        return check_range(as_float_array(x, "images", (None, *self.image_shape)), "images", 0, 1)

    def decode(self, z) -> np.ndarray:
        """Latents [n, latent_dim] -> images [n, C, H, W] in [0, 1]."""
        z = as_float_array(z, "z", (None, self.latent_dim))
        return self.run_finite("decoder", {"z": z})["image"]

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        return self.decode(standard_normal(check_count(n), self.latent_dim, seed))

    def reconstruct(self, x) -> np.ndarray:
        mu, _ = self.encode(x)
        return self.decode(mu)

    def anomaly_score(self, x) -> np.ndarray:
        """Negative evidence lower bound per image, in nats, at the posterior mean:
        Bernoulli reconstruction error plus the KL term. Higher means less like the
        training data."""
        x = self._images(x)
        mu, logvar = self.encode(x)
        recon = np.clip(self.decode(mu), 1e-6, 1 - 1e-6)
        bce = -(x * np.log(recon) + (1 - x) * np.log1p(-recon)).reshape(len(x), -1).sum(axis=1)
        kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(axis=1)
        return (bce + kl).astype(np.float32)
