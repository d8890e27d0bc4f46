"""The runtime side: numpy over the two sessions; no torch."""

from dataclasses import dataclass

import numpy as np

from edgegen.runtimes.pipeline import LatentImageConfig, Pipeline, as_float_array, check_count, check_number, make_rng


@dataclass
class PCAConfig(LatentImageConfig):
    """The image shape and the code size."""


class PCAPipeline(Pipeline):
    family = "pca"

    def encode(self, images) -> np.ndarray:
        return self.run_finite("encoder", {"image": as_float_array(images, "images", (None, *self.image_shape))})["z"]

    def decode(self, z) -> np.ndarray:
        return self.run_finite("decoder", {"z": as_float_array(z, "codes", (None, self.latent_dim))})["image"]

    def sample(self, n: int, seed=None, spread: float = 1.0) -> np.ndarray:
        spread = check_number(spread, "spread", 0.0)
        codes = make_rng(seed).standard_normal((check_count(n), self.latent_dim), dtype=np.float32) * np.float32(spread)
        return self.decode(codes)
