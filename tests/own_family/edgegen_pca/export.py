"""The export spec: two graphs, their realistic inputs for the gate, and the runtime config."""

import torch

from edgegen.export.spec import ExportSpec, GraphSpec, held_out_image_inputs, image_shape, latent_image_config
from edgegen.package import TensorSpec

from .pipeline import PCAConfig


def _codes(ckpt, batch, rng, data):
    """Codes of held-out images: what the decoder serves."""
    with torch.no_grad():
        return {"z": ckpt.model.encoder(torch.from_numpy(held_out_image_inputs(ckpt, batch, rng, data)["image"])).numpy()}


SPEC = ExportSpec(
    family="pca",
    graphs=(
        GraphSpec("encoder", lambda m: m.encoder, lambda c: (TensorSpec("image", "float32", ("batch", *image_shape(c))),),
                  ("z",), held_out_image_inputs),
        GraphSpec("decoder", lambda m: m.decoder, lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)),),
                  ("image",), _codes),
    ),
    runtime_config=lambda ckpt: latent_image_config(PCAConfig, ckpt),
)
