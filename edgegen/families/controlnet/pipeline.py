"""The ControlNet pipeline: the diffusion pipeline over the fused UNet + ControlNet graph,
with the hint images and the conditioning scale as the graph's two extra inputs. numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from ...images import average_pool
from ...runtimes.pipeline import as_float_array, check_count, check_number, check_range, user_array
from ...runtimes.samplers import Callback
from .. import positive
from ..diffusion.pipeline import DEFAULT_STEPS, DEFAULT_STRENGTH, DiffusionConfig, DiffusionPipeline

MAX_CONDITIONING_SCALE = 10.0   # 1 is the trained control; far beyond, its residuals swamp the base model (NaN at 1e30)


@dataclass(kw_only=True)
class ControlNetConfig(DiffusionConfig):
    """The base diffusion model's config, the hint's coarseness and the base's name."""
    hint_factor: int
    base: str

    def problems(self) -> list[str]:
        problems = super().problems() + positive(self, "hint_factor")
        if not problems and self.image_shape[-1] % self.hint_factor:
            problems.append(f"hint_factor expected to divide the image size {self.image_shape[-1]}, found {self.hint_factor}")
        return problems


def coarse_hint(images: np.ndarray, factor: int) -> np.ndarray:
    """The control this family is trained with: images [n, C, H, W] in [0, 1] averaged over
    factor x factor cells and upsampled back (what is left: where the strokes are, roughly)."""
    cells = average_pool(images, factor)
    return np.ascontiguousarray(cells.repeat(factor, axis=2).repeat(factor, axis=3), dtype=np.float32)


class ControlNetPipeline(DiffusionPipeline):
    family = "controlnet"

    merges_calls = False   # its calls carry control pictures

    def hint(self, images, what: str = "images") -> np.ndarray:
        """The control image for each image [n, C, H, W] in [0, 1], as the model was trained to follow.
        `what`: the pictures' name in an error (a served request's `control`)."""
        return coarse_hint(self._images(images, what), self.config.hint_factor)

    def control_feeds(self, control, n: int, conditioning_scale) -> dict[str, np.ndarray]:
        """The graph's control and conditioning_scale inputs for n images: one control image
        [C, H, W] or [1, C, H, W] for all, or n of them; one scale for all, or n."""
        array = user_array(control, "control", "hint images [n, C, H, W]")
        text = array.dtype.kind in "US"   # as_float_array names it
        if not text and (array.ndim not in (3, 4) or tuple(array.shape[-3:]) != tuple(self.image_shape)):
            shape = ", ".join(map(str, self.image_shape))
            # a number where the hints belong: often diffusion's sample(n, steps) called on a ControlNet
            found = f"the number {array.item()!r} (are the arguments in the order the call takes them?)" \
                if array.ndim == 0 else list(array.shape)
            raise InputError(f"control: expected hint images [{shape}] (one for all) or [n, {shape}], found {found}")
        control = as_float_array(array, "control", (None, *self.image_shape)) if array.ndim == 4 else \
            as_float_array(array, "control", self.image_shape)[None]
        if len(control) not in (1, n):
            raise InputError(f"control: expected {'1' if n == 1 else f'1 or {n}'} hint {'image' if n == 1 else 'images'}, found "
                             f"{len(control)}")
        check_range(control, "control", 0, 1)
        try:
            rank = np.ndim(conditioning_scale)
        except ValueError:   # a ragged nested list
            rank = 2
        if rank > 1 or (rank == 1 and len(conditioning_scale) not in (1, n)):
            raise InputError(f"conditioning_scale: expected one number or {n}, found {conditioning_scale!r:.60}")
        if isinstance(conditioning_scale, np.ndarray):   # np.array(1.0) or an array of n: numbers as Python's
            conditioning_scale = conditioning_scale.tolist()
        values = [conditioning_scale] if rank == 0 else list(conditioning_scale)
        scale = np.array([check_number(v, "conditioning_scale", -MAX_CONDITIONING_SCALE, MAX_CONDITIONING_SCALE)
                          for v in values], dtype=np.float64)
        return {"control": np.ascontiguousarray(np.broadcast_to(control, (n, *self.image_shape))),
                "conditioning_scale": np.broadcast_to(scale, (n,)).astype(np.float32)}

    def sample(self, n: int, control=None, conditioning_scale=1.0, steps: int = DEFAULT_STEPS, sampler: str | None = None,
               guidance_scale: float | None = None, labels=None, seed: int | None = None, eta: float = 0.0,
               callback: Callback | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        """n images following the hint images `control` (see hint()); conditioning_scale 0
        gives the base diffusion model's images for the same seed (or `noise`, as diffusion's
        sample takes it), 1 the trained control."""
        n = check_count(n)
        feeds = self.control_feeds(self._required(control), n, conditioning_scale)
        return self._sample(n, steps, sampler, guidance_scale, labels, seed, eta, callback, feeds, noise=noise)

    def img2img(self, image, control=None, conditioning_scale=1.0, strength: float = DEFAULT_STRENGTH, steps: int = DEFAULT_STEPS,
                sampler: str | None = None, guidance_scale: float | None = None, labels=None, seed: int | None = None, eta: float = 0.0,
                callback: Callback | None = None) -> np.ndarray:
        feeds = self.control_feeds(self._required(control), len(self._images(image)), conditioning_scale)
        return self._img2img(image, strength, steps, sampler, guidance_scale, labels, seed, eta, callback, feeds)

    def inpaint(self, image, mask, control=None, conditioning_scale=1.0, steps: int = DEFAULT_STEPS,
                sampler: str | None = None, guidance_scale: float | None = None, labels=None, seed: int | None = None, eta: float = 0.0,
                callback: Callback | None = None) -> np.ndarray:
        feeds = self.control_feeds(self._required(control), len(self._images(image)), conditioning_scale)
        return self._inpaint(image, mask, steps, sampler, guidance_scale, labels, seed, eta, callback, feeds)

    @staticmethod
    def _required(control):
        if control is None:
            raise InputError("control: expected hint images [n, C, H, W] in [0, 1] (pipe.hint(images) makes them), found None")
        return control
