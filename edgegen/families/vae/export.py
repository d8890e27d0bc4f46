"""The VAE's export: the encoder and the decoder, gated on held-out digits and on a mix of
posterior means and prior samples."""

from __future__ import annotations

import numpy as np
import torch

from ...export.spec import (
    ExportSpec,
    GraphSpec,
    held_out_image_inputs,
    held_out_images,
    image_shape,
    latent_image_config,
)
from ...package import TensorSpec
from .pipeline import VAEConfig


def _decoder_inputs(ckpt, batch, rng, data):
    # Half posterior means of held-out images, half prior samples: both regions the decoder serves.
    with torch.no_grad():
        mu, _ = ckpt.model.encoder(torch.from_numpy(held_out_images(data, batch, rng)))
    prior = rng.standard_normal(mu.shape).astype(np.float32)
    take_prior = np.arange(batch) % 2 == 1
    return {"z": np.where(take_prior[:, None], prior, mu.numpy()).astype(np.float32)}


GRAPHS = (
    GraphSpec("encoder", lambda m: m.encoder,
              lambda c: (TensorSpec("image", "float32", ("batch", *image_shape(c))),),
              ("mu", "logvar"), held_out_image_inputs),
    GraphSpec("decoder", lambda m: m.decoder,
              lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)),),
              ("image",), _decoder_inputs),
)

SPEC = ExportSpec(family="vae", graphs=GRAPHS, runtime_config=lambda ckpt: latent_image_config(VAEConfig, ckpt))
