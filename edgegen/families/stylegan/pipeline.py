"""The StyleGAN pipeline: the mapping graph (z -> w) and the synthesis graph (one w per layer
and noise -> image), with what StyleGAN's users do between the two: truncation toward the
average w, style mixing, interpolation in w space, and the noise modes. numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...errors import InputError
from ...runtimes.pipeline import (
    LatentImageConfig,
    Pipeline,
    as_float_array,
    line_steps,
    check_count,
    check_number,
    make_rng,
    standard_normal,
    user_array,
)
from .. import dim_problems, positive

NOISE_MODES = ("const", "random", "none")


def check_noise_mode(mode) -> None:
    if mode not in NOISE_MODES:
        raise InputError(f"noise_mode: expected one of {', '.join(NOISE_MODES)}, found {mode!r}")


@dataclass(kw_only=True)
class StyleGANConfig(LatentImageConfig):
    """The mapping's and synthesis' sizes, the average w (truncation's centre) and the const noise."""
    w_dim: int
    num_ws: int
    noise_shapes: list[int]   # the resolution of each noise input
    noise_seed: int
    w_avg: list[float]

    def problems(self) -> list[str]:
        problems = super().problems() + positive(self, "w_dim", "num_ws", "noise_shapes")
        if not problems and len(self.w_avg) != self.w_dim:
            problems.append(f"w_avg expected {self.w_dim} values (w_dim), found {len(self.w_avg)}")
        elif not problems and not np.isfinite(np.asarray(self.w_avg, np.float64)).all():   # blamed on "ws" at run
            problems.append("w_avg expected finite numbers (truncation's centre), found NaN or Inf")
        if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int) or self.noise_seed < 0:
            problems.append(f"noise_seed expected a non-negative integer (the const noise's), found {self.noise_seed!r}")
        return problems

    def graph_problems(self, graphs: dict) -> list[str]:
        """And the synthesis takes num_ws styles of w_dim, and one noise input per noise_shapes entry
        of that resolution: an edited num_ws or noise_shapes loaded, and every call was refused."""
        inputs = [t.name for t in graphs["synthesis"].inputs] if "synthesis" in graphs else []
        noises = sorted(n for n in inputs if n.startswith("noise."))
        if inputs and len(noises) != len(self.noise_shapes):
            return [f"noise_shapes expected one resolution per noise input of graph 'synthesis' ({len(noises)}), "
                    f"found {len(self.noise_shapes)}"]
        return super().graph_problems(graphs) + dim_problems(graphs, [
            ("mapping", "w", 1, "w_dim", self.w_dim), ("synthesis", "ws", 1, "num_ws", self.num_ws),
            ("synthesis", "ws", 2, "w_dim", self.w_dim),
            *((("synthesis", f"noise.{i}", axis, "noise_shapes", size, self.noise_shapes))
              for i, size in enumerate(self.noise_shapes) for axis in (2, 3))])


class StyleGANPipeline(Pipeline):
    family = "stylegan"

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    @property
    def w_avg(self) -> np.ndarray:
        return np.asarray(self.config.w_avg, np.float32)

    # -- the two graphs ---------------------------------------------------------------------

    def map(self, z, truncation: float = 1.0) -> np.ndarray:
        """Latents [n, latent_dim] -> w [n, w_dim], pulled toward the average w by
        truncation, StyleGAN's psi (1: as mapped; 0: the average image; 0.5-0.7: StyleGAN's usual)."""
        z = as_float_array(z, "z", (None, self.latent_dim))
        w = self.run_finite("mapping", {"z": z})["w"]
        psi = check_number(truncation, "truncation")
        return w if psi == 1.0 else (self.w_avg + np.float32(psi) * (w - self.w_avg)).astype(np.float32)

    def synthesize(self, ws, noise_mode: str = "const", seed: int | None = None) -> np.ndarray:
        """Styles -> images [n, C, H, W] in [0, 1]. ws: [n, w_dim] (the same w for every
        layer) or [n, num_ws, w_dim] (one per layer). noise_mode: "const" (the package's
        fixed noise, the same image every call), "random" (fresh noise from `seed`: fine
        detail varies) or "none"."""
        check_noise_mode(noise_mode)
        if seed is not None and noise_mode != "random":   # it would be ignored: the same image for every seed
            raise InputError(f"seed: expected only with noise_mode 'random' (synthesize draws nothing else), found "
                             f"seed {seed!r} with noise_mode {noise_mode!r}")
        return self._synthesize(ws, noise_mode, seed)

    def _synthesize(self, ws, noise_mode: str, seed: int | None, row_seeds: np.ndarray | None = None) -> np.ndarray:
        """synthesize, where `row_seeds` (one per image) draws each image's random noise as
        sample(1, seed=row_seeds[i]) draws it: the frames of a line share their noise, and seed s's
        image is the same in mix, interpolate and sample."""
        ws = user_array(ws, "ws", f"[n, w_dim] or [n, {self.num_ws}, w_dim]")
        if ws.ndim not in (2, 3) and ws.dtype.kind == "f":   # one w alone, [w_dim], is told both forms
            raise InputError(f"ws: expected shape [n, {self.w_dim}] or [n, {self.num_ws}, {self.w_dim}], found "
                             f"{list(ws.shape)}" + (" (one w: ws[None])" if ws.ndim == 1 else ""))
        if ws.ndim == 2:
            ws = np.repeat(as_float_array(ws, "ws", (None, self.w_dim))[:, None], self.num_ws, axis=1)
        ws = as_float_array(ws, "ws", (None, self.num_ws, self.w_dim))
        if row_seeds is None or noise_mode != "random":
            noise = self.noise(len(ws), noise_mode, seed)
        else:
            drawn = {s: self.noise(1, noise_mode, s) for s in dict.fromkeys(row_seeds.tolist())}
            noise = {name: np.concatenate([drawn[s][name] for s in row_seeds.tolist()]) for name in next(iter(drawn.values()))}
        return self.run_finite("synthesis", {"ws": ws, **noise})["image"]

    def noise(self, n: int, mode: str = "const", seed: int | None = None) -> dict[str, np.ndarray]:
        """The synthesis graph's noise inputs for a batch of n."""
        n = check_count(n)
        check_noise_mode(mode)
        shapes = list(self.config.noise_shapes)
        if mode == "random":
            make_rng(seed)  # the same checks as every seed
            # a stream of its own: noise drawn from `seed` itself would repeat the latent's values
            rng = np.random.default_rng(None if seed is None else [int(seed), 1])
            # each row's own generator (spawned): drawn as one [n, ...] array per layer, a row's noise
            # past the first layer would depend on how many rows are beside it
            rows = [[g.standard_normal((1, 1, r, r), dtype=np.float32) for r in shapes] for g in rng.spawn(n)]
            return {f"noise.{i}": np.concatenate([row[i] for row in rows]) for i in range(len(shapes))}
        if mode == "none":
            return {f"noise.{i}": np.zeros((n, 1, r, r), np.float32) for i, r in enumerate(shapes)}
        fixed = np.random.default_rng(self.config.noise_seed)
        return {f"noise.{i}": np.repeat(fixed.standard_normal((1, 1, r, r), dtype=np.float32), n, axis=0)
                for i, r in enumerate(shapes)}

    # -- what users of StyleGAN do --------------------------------------------------------------

    def sample(self, n: int, seed: int | None = None, truncation: float = 1.0, noise_mode: str = "const") -> np.ndarray:
        """n images from latents drawn with `seed` (sample(1, seed=s) is seed s's image in mix and interpolate)."""
        z = standard_normal(check_count(n), self.latent_dim, seed)
        return self._synthesize(self.map(z, truncation), noise_mode, seed)   # the seed draws z, and the noise if random

    def mix(self, seeds_a: Sequence[int], seeds_b: Sequence[int], crossover_layer: int, truncation: float = 1.0,
            noise_mode: str = "const") -> np.ndarray:
        """Style mixing: image i takes the styles of layers before crossover_layer from seed
        seeds_a[i] (coarse: pose, shape) and the rest from seeds_b[i] (fine: stroke, texture).
        One seed on either side pairs with every seed on the other."""
        a, b = self._seeds(seeds_a, "seeds_a"), self._seeds(seeds_b, "seeds_b")
        if len(a) != len(b) and 1 not in (len(a), len(b)):
            raise InputError(f"seeds_a, seeds_b: expected the same number of seeds or one on a side, found {len(a)} and {len(b)}")
        if isinstance(crossover_layer, bool) or not isinstance(crossover_layer, (int, np.integer)) \
                or not 0 <= crossover_layer <= self.num_ws:
            raise InputError(f"crossover_layer: expected an integer from 0 to {self.num_ws} (this model's style "
                             f"inputs), found {crossover_layer!r}")
        n = max(len(a), len(b))
        wa = np.broadcast_to(self.map(self._latents(a), truncation), (n, self.w_dim))
        wb = np.broadcast_to(self.map(self._latents(b), truncation), (n, self.w_dim))
        ws = np.concatenate([np.repeat(wa[:, None], crossover_layer, axis=1),
                             np.repeat(wb[:, None], self.num_ws - crossover_layer, axis=1)], axis=1)
        return self._synthesize(ws, noise_mode, None, np.broadcast_to(a, (n,)))

    def interpolate(self, seed_a: int, seed_b: int, steps: int = 8, truncation: float = 1.0,
                    noise_mode: str = "const") -> np.ndarray:
        """`steps` images along the straight line in w space from seed_a's image to seed_b's (both ends included)."""
        steps = line_steps(steps)
        w = self.map(self._latents(self._seeds([seed_a, seed_b], "seed_a, seed_b")), truncation)
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        line = ((1 - t) * w[0] + t * w[1]).astype(np.float32)
        return self._synthesize(line, noise_mode, None, np.repeat(self._seeds([seed_a], "seed_a"), steps))

    def _seeds(self, seeds, what: str) -> np.ndarray:
        try:
            array = np.atleast_1d(np.asarray(seeds))
        except ValueError:
            array = np.zeros((1, 1))   # ragged: refused below
        # a seed past int64 (2**64, which sample's takes) makes an object array of Python ints
        whole = array.dtype.kind in "iu" or (array.dtype == object and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in array.ravel()))
        if array.ndim != 1 or len(array) == 0 or not whole or (array < 0).any():
            raise InputError(f"{what}: expected one or more non-negative integer seeds, found {seeds!r:.60}")
        check_count(len(array), f"{what} (one image each)")   # the cap a sample's n has
        return array

    def _latents(self, seeds: np.ndarray) -> np.ndarray:
        """One latent per seed: seed s's is what sample(1, seed=s) draws."""
        return np.concatenate([standard_normal(1, self.latent_dim, int(s)) for s in seeds])
