"""PixelCNN packages: sampling, exact likelihood and completion, pixel by pixel in raster order.

The naive loop runs the whole network once per pixel. The fast loop uses the network's two
stacks as exported: once per row the vertical stack on the rows so far (what the row below
will see from above does not change while the row is generated), then once per pixel only
the horizontal stack on that one row. Both visit the same pixels in the same order and draw
the same random numbers, so a seed gives the same images either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...runtimes.autoregressive import draw, log_softmax, row_uniforms, sampler
from ...runtimes.pipeline import (
    ImageConfig,
    Pipeline,
    as_float_array,
    check_callback,
    check_flag,
    broadcast_mask,
    check_range,
    check_count,
    class_labels,
    class_problems,
    make_rng,
)
from .. import dim_problems, positive


@dataclass(kw_only=True)
class PixelCNNConfig(ImageConfig):
    """Grey levels per pixel, classes (0: unconditional) and the stacks' sizes (the row graph's links input)."""
    levels: int
    num_classes: int
    null_label: int
    layers: int
    width: int

    def problems(self) -> list[str]:
        problems = super().problems() + positive(self, "layers", "width")
        if self.levels < 2:
            problems.append(f"levels expected at least 2, found {self.levels}")
        problems += class_problems(self)
        return problems

    def graph_problems(self, graphs: dict) -> list[str]:
        """The logits have `levels` channels (the grey levels sample draws from); the links carry
        `layers` layers of 2 x `width` channels."""
        return super().graph_problems(graphs) + dim_problems(graphs, [
            ("network", "logits", 1, "levels", self.levels), ("row", "logits", 1, "levels", self.levels),
            ("links", "links", 1, "layers", self.layers), ("row", "links", 1, "layers", self.layers),
            ("links", "links", 2, "width", 2 * self.width, self.width),
            ("row", "links", 2, "width", 2 * self.width, self.width)])


class PixelCNNPipeline(Pipeline):
    family = "pixelcnn"
    alternates_graphs = True   # links, then row, then row...
    stoppable = True   # callback= in its loops (docs/serving.md: a cancelled request stops)
    counts = "pixels"

    def __init__(self, package, sessions, config):
        super().__init__(package, sessions, config)
        self.levels, self.num_classes, self.null_label = config.levels, config.num_classes, config.null_label

    def sample(self, n: int, seed=None, labels=None, temperature: float = 1.0, fast: bool = True,
               callback: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """n images [n, 1, H, W] in [0, 1] (multiples of 1 / (levels - 1)). callback(pixels done,
        pixels) is called after each pixel (of all n images at once): a service's progress, or an
        exception raised there stops the call (a client gone, a deadline)."""
        n = check_count(n)
        _, h, w = self.image_shape
        return self._fill(np.zeros((n, 1, h, w), np.float32), np.ones((n, h, w), bool), labels, seed, temperature, fast,
                          callback)

    def complete(self, image, mask, seed=None, labels=None, temperature: float = 1.0, fast: bool = True,
                 callback: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """Fill the pixels where mask is 1 (not yet generated), in raster order, keeping the rest
        (quantized to the model's levels). mask: [H, W] for every image, or per image [n, H, W]
        or [n, 1, H, W], as the diffusion families take it; a pixel's channels are generated together.
        callback: as sample's, after each pixel (a kept one too)."""
        images = self.quantized(check_range(as_float_array(image, "image", (None, *self.image_shape)), "image", 0, 1))
        todo = broadcast_mask(mask, (len(images), 1, *self.image_shape[1:]))[:, 0] > 0.5
        return self._fill(images.copy(), todo, labels, seed, temperature, fast, callback)

    def log_prob(self, images, labels=None) -> np.ndarray:
        """Exact log-likelihood in nats per image (images quantized to the model's levels), one pass:
        summed in float64, given in float32 as the flow's and WaveNet's are."""
        x = self.quantized(check_range(as_float_array(images, "images", (None, *self.image_shape)), "images", 0, 1))
        y = class_labels(labels, len(x), self.num_classes, self.null_label, names=self.class_names)
        logp = log_softmax(self.sessions["network"].run_rows({"image": x, "labels": y})["logits"])
        codes = np.round(x * (self.levels - 1)).astype(np.int64)
        return np.take_along_axis(logp, codes, axis=1).sum(axis=(1, 2, 3)).astype(np.float32)

    def anomaly_score(self, images) -> np.ndarray:
        """Bits per pixel, without labels (the marginal its label dropout learned: the shipped model's
        labelled path memorized its training digits): higher, less like the training data. What
        `edgegen score` reads, as a VAE's negative ELBO or a flow's bits per dim."""
        pixels = int(np.prod(self.image_shape))
        return (-self.log_prob(images) / (pixels * np.log(2.0))).astype(np.float32)

    def quantized(self, images: np.ndarray) -> np.ndarray:
        return (np.round(np.clip(images, 0, 1) * (self.levels - 1)) / (self.levels - 1)).astype(np.float32)

    def _fill(self, x, todo, labels, seed, temperature, fast, callback=None) -> np.ndarray:
        fast = check_flag(fast, "fast")
        callback = check_callback(callback, "(pixels done, pixels)")
        y = class_labels(labels, len(x), self.num_classes, self.null_label, names=self.class_names)
        sampling, rng = sampler(temperature), make_rng(seed)
        h, w = x.shape[2:]
        uniforms = row_uniforms(rng, len(x), h * w)   # pixel (r, c) of row i takes uniforms[i, r * w + c]
        for r in range(h):
            links = self._links(x, r, y) if fast and todo[:, r].any() else None
            for c in range(w):
                if todo[:, r, c].any():
                    self._draw(x, r, c, todo[:, r, c], y, sampling, uniforms[:, r * w + c], links)
                if callback is not None:   # a pixel of n images is n / 256 graph calls: a large n's stop waits no longer
                    callback(r * w + c + 1, h * w)
        return x

    def _links(self, x, r, y) -> np.ndarray:
        """Row r's links from the rows so far (at least two: the graph's traced minimum), taken call
        by call: all the rows' are rows times as large to hold."""
        rows = np.ascontiguousarray(x[:, :, :max(r + 1, 2)])
        return self.sessions["links"].run_rows({"image": rows, "labels": y}, keep=lambda out: {
            "links": np.ascontiguousarray(out["links"][:, :, :, r:r + 1])})["links"]

    def _draw(self, x, r, c, todo, y, sampling, uniforms, links=None) -> None:
        """Pixel (r, c) drawn in place where todo [n] holds, from its uniforms [n]: from the row
        graph and row r's links (fast), else from the whole network."""
        if links is not None:
            logits = self.sessions["row"].run_rows({"row": np.ascontiguousarray(x[:, :, r:r + 1]), "links": links,
                                                    "labels": y})["logits"][:, :, 0, c]
        else:
            logits = self.sessions["network"].run_rows({"image": x, "labels": y})["logits"][:, :, r, c]
        codes = draw(logits, sampling, None, uniforms)
        x[:, 0, r, c] = np.where(todo, codes / (self.levels - 1), x[:, 0, r, c])
