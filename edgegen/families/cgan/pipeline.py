"""The class-conditional GAN pipeline: images of the classes asked for, with the truncation trick."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from ...runtimes.pipeline import (
    LatentImageConfig,
    Pipeline,
    as_float_array,
    check_count,
    check_number,
    class_labels,
    make_rng,
)
from .. import positive


@dataclass(kw_only=True)
class ConditionalGANConfig(LatentImageConfig):
    num_classes: int

    def problems(self) -> list[str]:
        return super().problems() + positive(self, "num_classes")



class ConditionalGANPipeline(Pipeline):
    """Class-conditional GAN packages: images of the classes asked for, with the truncation trick."""

    family = "cgan"

    def generate(self, z, labels) -> np.ndarray:
        """Latents [n, latent_dim] and class ids (one, or n) -> images [n, C, H, W] in [0, 1]."""
        z = as_float_array(z, "z", (None, self.latent_dim))
        if labels is None:  # this generator has no "no label" class to fall back on
            raise InputError(f"labels: expected one class id or {len(z)} class ids, found None")
        y = class_labels(labels, len(z), self.num_classes, self.num_classes, "labels", names=self.class_names)
        return self.run_finite("generator", {"z": z, "labels": y})["image"]

    def sample(self, n: int, labels=None, truncation: float | None = None, seed: int | None = None) -> np.ndarray:
        """n images of the given classes (None: classes drawn at random with the seed).
        truncation: redraw each latent value whose magnitude exceeds it (BigGAN's truncation
        trick; e.g. 0.5: less variety, cleaner images); None keeps N(0, I) as trained."""
        n = check_count(n)
        if truncation is not None and check_number(truncation, "truncation") <= 0:
            raise InputError(f"truncation: expected a number above 0 (the largest latent magnitude kept), found {truncation}")
        rng = make_rng(seed)
        # the labels and the truncation's redraws from streams of their own (spawned), row by row: drawn
        # from the latents' stream, or for the batch at once, image i of a seed would change with n
        label_rng = rng.spawn(1)[0]
        if labels is None:
            labels = self._draw_labels(label_rng, n)
        z = rng.standard_normal((n, self.latent_dim), dtype=np.float32)
        if truncation is not None:
            z = np.concatenate([truncated_normal(row[None], float(truncation), g) for row, g in zip(z, rng.spawn(n))])
        return self.generate(z, labels)

    def drawn_labels(self, n: int, seed: int | None) -> np.ndarray:
        """The classes sample(n, seed=seed) draws where it is given no labels: which digit each of
        its images was meant to be."""
        if seed is None:
            raise InputError("seed: expected the seed of the sample call whose classes to say, found None (an unseeded "
                             "call's draw is not kept)")
        return self._draw_labels(make_rng(seed).spawn(1)[0], check_count(n))

    def _draw_labels(self, label_rng: np.random.Generator, n: int) -> np.ndarray:
        return label_rng.integers(0, self.num_classes, size=n)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes


def truncated_normal(z: np.ndarray, limit: float, rng: np.random.Generator) -> np.ndarray:
    """Redraw every value of z outside [-limit, limit] until none is. From the normal itself
    where that accepts often (limit >= 0.5: at least 38% of draws); for smaller limits from the
    uniform on [-limit, limit], kept with probability exp(-z^2 / 2) (at least 88%), the same
    distribution: a few rounds however small the limit (redrawing from the normal at 1e-9 never ends)."""
    z = z.copy()
    outside = np.abs(z) > limit
    while outside.any():
        count = int(outside.sum())
        if limit >= 0.5:
            z[outside] = rng.standard_normal(count, dtype=np.float32)
        else:
            proposal = rng.uniform(-limit, limit, count)
            proposal[rng.random(count) >= np.exp(-0.5 * proposal ** 2)] = np.inf   # rejected: drawn again
            z[outside] = proposal.astype(np.float32)
        outside = np.abs(z) > limit
    return z
