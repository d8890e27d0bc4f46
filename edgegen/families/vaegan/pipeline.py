"""The VAE-GAN pipeline: a VAE whose decoder was also trained adversarially, served with the VAE's API."""

from __future__ import annotations

from ..vae.pipeline import VAEPipeline


class VAEGANPipeline(VAEPipeline):
    """A VAE whose decoder was also trained adversarially: the same API."""

    family = "vaegan"
