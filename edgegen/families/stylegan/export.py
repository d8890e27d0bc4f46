"""StyleGAN's export: the mapping graph (z -> w) and the synthesis graph (a w per layer and
noise -> image), gated on what the runtime feeds (plain, mixed and truncated styles)."""

from __future__ import annotations

import numpy as np
import torch

from ...export.spec import ExportSpec, GraphSpec, image_shape, latent_inputs
from ...package import TensorSpec
from .model import ImageSynthesis
from .pipeline import StyleGANConfig


def _synthesis_inputs(ckpt, batch, rng, data):
    """What the runtime feeds: styles from the mapping of random latents, each row either one
    latent's, mixed from two at a random crossover, or truncated toward the average w; and
    random noise."""
    c = ckpt.config
    with torch.no_grad():
        mapping = ckpt.model.generator_ema.mapping
        w = mapping(torch.from_numpy(rng.standard_normal((2 * batch, c.latent_dim)).astype(np.float32))).numpy()
    ws = np.repeat(w[:batch, None], c.num_ws, axis=1)
    average = ckpt.model.average_w(2000).numpy()
    for i in range(batch):
        kind = i % 3
        if kind == 1:
            ws[i, int(rng.integers(1, c.num_ws)):] = w[batch + i]
        elif kind == 2:
            ws[i] = average + 0.6 * (ws[i] - average)
    noise = {f"noise.{i}": rng.standard_normal((batch, 1, r, r)).astype(np.float32) for i, r in enumerate(c.noise_shapes)}
    return {"ws": ws.astype(np.float32), **noise}


def _synthesis_specs(c) -> tuple[TensorSpec, ...]:
    return (TensorSpec("ws", "float32", ("batch", c.num_ws, c.w_dim)),
            *(TensorSpec(f"noise.{i}", "float32", ("batch", 1, r, r)) for i, r in enumerate(c.noise_shapes)))


def _config(ckpt) -> StyleGANConfig:
    c = ckpt.config
    return StyleGANConfig(image_shape=image_shape(c), latent_dim=c.latent_dim, w_dim=c.w_dim, num_ws=c.num_ws,
                          noise_shapes=list(c.noise_shapes), noise_seed=c.noise_seed,
                          w_avg=[round(float(v), 7) for v in ckpt.model.average_w()], data=ckpt.data)


SPEC = ExportSpec(
    family="stylegan",
    graphs=(
        GraphSpec("mapping", lambda m: m.generator_ema.mapping,
                  lambda c: (TensorSpec("z", "float32", ("batch", c.latent_dim)),), ("w",), latent_inputs),
        GraphSpec("synthesis", lambda m: ImageSynthesis(m.generator_ema.synthesis), _synthesis_specs,
                  ("image",), _synthesis_inputs),
    ),
    runtime_config=_config,
    needs_data=False,
)
