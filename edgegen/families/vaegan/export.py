"""The VAE-GAN's export: served like the VAE, the same graphs and the same realistic inputs."""

from __future__ import annotations

from ...export.spec import ExportSpec, latent_image_config
from ..vae.export import GRAPHS
from ..vae.pipeline import VAEConfig

SPEC = ExportSpec(family="vaegan", graphs=GRAPHS, runtime_config=lambda ckpt: latent_image_config(VAEConfig, ckpt))
