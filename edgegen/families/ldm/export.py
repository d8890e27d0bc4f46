"""Latent diffusion's export: the encoder (images -> scaled latents), the UNet over latents and
the decoder (latents -> images), each gated on latents of held-out images."""

from __future__ import annotations

import numpy as np
import torch

from ...export.spec import ExportSpec, GraphSpec, held_out_image_inputs, held_out_images, image_shape
from ...package import TensorSpec
from ..diffusion.export import denoiser_inputs, noised, schedule
from .model import ImageDecoder, ImageEncoder
from .pipeline import LatentDiffusionConfig


def _encoded(ckpt, batch, rng, data) -> np.ndarray:
    """Scaled latents of held-out images, as the encoder graph makes them."""
    with torch.no_grad():
        return ImageEncoder(ckpt.model.autoencoder)(torch.from_numpy(held_out_images(data, batch, rng))).numpy()


def _decoder_inputs(ckpt, batch, rng, data):
    """Latents of held-out images, every other one moved by unit noise (a sampler's output is
    near the data's latents, not on them)."""
    latent = _encoded(ckpt, batch, rng, data)
    moved = (np.arange(batch) % 2 == 1)[:, None, None, None]
    return {"latent": np.where(moved, latent + rng.standard_normal(latent.shape), latent).astype(np.float32)}


def _config(ckpt) -> LatentDiffusionConfig:
    c = ckpt.config
    return LatentDiffusionConfig(**schedule(ckpt), latent_shape=[c.latent_channels, c.latent_size, c.latent_size],
                                 scale_factor=float(ckpt.model.autoencoder.scale_factor))


def _latent_shape(c) -> tuple:
    return ("batch", c.latent_channels, c.latent_size, c.latent_size)


SPEC = ExportSpec(
    family="ldm",
    graphs=(
        GraphSpec("encoder", lambda m: ImageEncoder(m.autoencoder),
                  lambda c: (TensorSpec("image", "float32", ("batch", *image_shape(c))),), ("latent",),
                  held_out_image_inputs),
        GraphSpec("unet", lambda m: m.unet_ema,
                  lambda c: (TensorSpec("sample", "float32", _latent_shape(c)), *denoiser_inputs(c)[1:]),
                  ("prediction",), lambda ckpt, batch, rng, data: noised(ckpt, _encoded(ckpt, batch, rng, data), rng)),
        GraphSpec("decoder", lambda m: ImageDecoder(m.autoencoder),
                  lambda c: (TensorSpec("latent", "float32", _latent_shape(c)),), ("image",), _decoder_inputs),
    ),
    runtime_config=_config,
)
