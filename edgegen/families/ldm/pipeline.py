"""The latent diffusion pipeline: the diffusion pipeline's loops over the UNet in latent
space, the encoder graph into that space (img2img, inpainting) and the decoder graph out of
it. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...runtimes.pipeline import as_float_array
from .. import positive
from ..diffusion.pipeline import DiffusionConfig, DiffusionPipeline


@dataclass(kw_only=True)
class LatentDiffusionConfig(DiffusionConfig):
    """The diffusion config, over the autoencoder's latent space."""
    latent_shape: list[int]   # [channels, height, width] the UNet denoises
    scale_factor: float            # baked into the encoder and decoder graphs; kept for reference
    denoised_space = "latent_shape"

    def problems(self) -> list[str]:
        problems = super().problems()
        if len(self.latent_shape) != 3:
            return problems + [f"latent_shape expected [channels, height, width], found {self.latent_shape!r}"]
        problems += positive(self, "latent_shape")
        if not problems and any(s % l for s, l in zip(self.image_shape[1:], self.latent_shape[1:])):
            problems.append(f"latent_shape expected to divide image_shape {self.image_shape}, found {self.latent_shape}")
        return problems


class LatentDiffusionPipeline(DiffusionPipeline):
    family = "ldm"

    @property
    def space_shape(self) -> tuple[int, ...]:
        return tuple(self.config.latent_shape)

    def to_space(self, images: np.ndarray) -> np.ndarray:
        """Images in [0, 1] -> scaled latents (the encoder's posterior mean)."""
        return self.run_finite("encoder", {"image": np.ascontiguousarray(images, dtype=np.float32)})["latent"]

    def to_images(self, x: np.ndarray) -> np.ndarray:
        return self.run_finite("decoder", {"latent": np.ascontiguousarray(x, dtype=np.float32)})["image"]

    def encode(self, images) -> np.ndarray:
        """Images [n, C, H, W] in [0, 1] -> latents [n, *latent_shape] (scaled, as the UNet sees them)."""
        return self.to_space(self._images(images, "images"))

    def decode(self, latents) -> np.ndarray:
        """Latents [n, *latent_shape] -> images [n, C, H, W] in [0, 1]."""
        return self.to_images(as_float_array(latents, "latents", (None, *self.space_shape)))

    def space_mask(self, mask: np.ndarray) -> np.ndarray:
        """A latent cell is generated when any pixel it covers is (Stable Diffusion's
        non-inpainting models are masked the same way, at latent resolution)."""
        n, _, h, w = mask.shape
        channels, lh, lw = self.space_shape
        cells = mask.max(axis=1).reshape(n, lh, h // lh, lw, w // lw).max(axis=(2, 4))
        return np.ascontiguousarray(np.broadcast_to(cells[:, None], (n, channels, lh, lw)), dtype=np.float32)
