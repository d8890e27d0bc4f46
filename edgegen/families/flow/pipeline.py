"""The normalizing-flow pipeline: exact densities and sampling through the forward (x -> z,
log-determinant) and inverse (z -> x) graphs. numpy only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError, NonFiniteError
from ...metrics import standard_normal_log_density
from ...runtimes.pipeline import (Pipeline, as_float_array, check_count, check_number, check_range, line_steps, make_rng,
                                  shown_against)
from .. import RuntimeConfig, positive

KINDS = ("realnvp", "glow")
POINT_DATA = ("moons", "circles", "blobs")   # RealNVP's synthetic 2-D point sets, by name


@dataclass(kw_only=True)
class FlowConfig(RuntimeConfig):
    """realnvp (2-D points) or glow (images): the data's shape and the latent's size."""
    kind: str
    data_shape: list[int]
    event_dim: int
    dequant_levels: int
    image_shape: list[int] | None = None   # glow only
    data: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        if self.kind not in KINDS:
            return [f"kind expected one of {', '.join(KINDS)}, found {self.kind!r}"]
        problems = positive(self, "data_shape", "event_dim", "dequant_levels")
        # a glow package read as realnvp ran, with other log-densities and anomaly scores in nats
        rank = {"realnvp": (1, "[dims] points"), "glow": (3, "[channels, height, width] images")}[self.kind]
        if len(self.data_shape) != rank[0] or (self.kind == "realnvp" and self.image_shape is not None):
            problems.append(f"data_shape expected {rank[1]} for {self.kind}, found {self.data_shape!r}"
                            + (f" and image_shape {self.image_shape!r}" if self.image_shape is not None else ""))
        if self.kind == "glow" and self.image_shape != self.data_shape:
            problems.append(f"image_shape expected to equal data_shape for glow, found {self.image_shape!r}")
        if not problems and self.event_dim != math.prod(self.data_shape):
            problems.append(f"event_dim expected {math.prod(self.data_shape)} (the data's size), found {self.event_dim}")
        return problems


LOGIT_ALPHA = 0.05        # an image flow squeezes pixels into [alpha, 1 - alpha] before its logit (model.preprocess)
# the pixel values that squeeze maps inside (0, 1), where the logit is finite: [0, 1] and a little
# more on each side, which decode gives back short of its sigmoid's saturation (latents far out)
IMAGE_DOMAIN = (-LOGIT_ALPHA / (1 - 2 * LOGIT_ALPHA), (1 - LOGIT_ALPHA) / (1 - 2 * LOGIT_ALPHA))


class FlowPipeline(Pipeline):
    family = "flow"

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.config.data_shape)

    @property
    def is_image(self) -> bool:
        return self.config.kind == "glow"

    def _data(self, x) -> np.ndarray:
        """Images, refused outside the pixel values the model has a density for (its logit of 0-255
        pictures was NaN, said as the graph's fault), or points."""
        data = as_float_array(x, "images" if self.is_image else "points", (None, *self.data_shape))
        if self.is_image and data.size:
            low, high = IMAGE_DOMAIN
            least, most = float(data.min()), float(data.max())
            if not low < least <= most < high:
                raise InputError(f"images: expected values in [0, 1] (the model's logit takes them from {low:.4g} to "
                                 f"{high:.4g}, ends excluded: decode's output reaches the ends only where its sigmoid "
                                 f"saturates), found {shown_against(least, low, high, 4)}.."
                                 f"{shown_against(most, low, high, 4)}")
        return data

    def encode(self, x) -> np.ndarray:
        """Data -> latents z [n, D]."""
        return self.run_finite("forward", {"x": self._data(x)})["z"]

    def decode(self, z) -> np.ndarray:
        """Latents [n, D] -> data: the exact inverse of encode (image values may fall a little
        outside [0, 1]: the logit preprocessing spans slightly more; `sample` clips)."""
        z = as_float_array(z, "z", (None, self.config.event_dim))
        return self.run_finite("inverse", {"z": z})["x"]

    def sample(self, n: int, seed: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """n draws from the model; temperature scales the latent noise (below 1: typical samples)."""
        temperature = check_number(temperature, "temperature", 0.0)
        z = make_rng(seed).standard_normal((check_count(n), self.config.event_dim), dtype=np.float32)
        try:
            x = self.decode(z * np.float32(temperature))
        except NonFiniteError as exc:   # latents past what the model decodes: the temperature put them there
            if temperature <= 1:
                raise
            raise NonFiniteError(f"temperature: expected one whose latents the model decodes (near 1), found "
                                 f"{temperature:g} ({exc})") from None
        return self._in_range(x)

    def _in_range(self, x: np.ndarray) -> np.ndarray:
        """Decoded pictures clipped to [0, 1], as a picture is (points as decoded)."""
        return np.clip(x, 0.0, 1.0) if self.is_image else x

    def log_prob(self, x) -> np.ndarray:
        """Exact log density in nats per example: log N(z; 0, I) + log|det dz/dx|.

        For images this is the density of the continuous pixel values given; use
        bits_per_dim for quantized images."""
        out = self.run_finite("forward", {"x": self._data(x)})
        density = standard_normal_log_density(out["z"], out["logdet"])
        with np.errstate(over="ignore"):   # the overflow is the finding, said below
            held = density.astype(np.float32)
        if not np.isfinite(held).all():   # finite latents whose density float32 cannot hold
            raise NonFiniteError(f"log_prob: expected log densities float32 holds, found {density.min():.3g} (inputs "
                                 f"up to {np.abs(self._data(x)).max():.3g} in magnitude: far outside the data the model "
                                 "was trained on)")
        return held

    def bits_per_dim(self, x) -> np.ndarray:
        """Images: -log2 P(pixels) / D, each pixel in the grey level training puts it in
        (round(x * (levels - 1)) of dequant_levels; training spreads level k over [k, k + 1) /
        levels) and evaluated at that bin's centre. A picture read from a file and resized lies
        between the levels: it is scored as training would have seen it (a floor of x * levels put
        a fifth of such pixels one level off, and moved scores by up to 0.85 bits/dim on the
        digits' 17 levels: helper 146). Values already dequantized are not pictures: round them
        first."""
        if not self.is_image:
            raise InputError("bits_per_dim: expected an image flow package, found a 2-D point flow (use log_prob)")
        levels = self.config.dequant_levels
        # pictures in [0, 1]: 0-255 ones were clipped to white, and scored as such
        bins = np.round(check_range(self._data(x), "images", 0, 1) * (levels - 1))
        centres = (bins + 0.5) / levels
        dims = self.config.event_dim
        nats = -self.log_prob(centres.astype(np.float32)).astype(np.float64) + dims * math.log(levels)
        return (nats / (dims * math.log(2))).astype(np.float32)

    def anomaly_score(self, x) -> np.ndarray:
        """Higher means less like the training data: bits per dim for images, the negative
        log density for points."""
        return self.bits_per_dim(x) if self.is_image else -self.log_prob(x)

    def interpolate(self, x1, x2, steps: int = 8) -> np.ndarray:
        """Linear paths in latent space between x1[i] and x2[i]: [n, steps, *data_shape] (pictures
        clipped to [0, 1], as `sample`'s)."""
        steps = line_steps(steps)
        z1, z2 = self.encode(x1), self.encode(x2)
        if z1.shape != z2.shape:
            raise InputError(f"x2: expected as many examples as x1 ({len(z1)}), found {len(z2)}")
        weights = np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :, None]
        path = (1 - weights) * z1[:, None] + weights * z2[:, None]
        frames = self.decode(path.reshape(-1, z1.shape[1])).reshape(len(z1), steps, *self.data_shape)
        return self._in_range(frames)
