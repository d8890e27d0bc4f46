"""The degradations a super-resolution model learns to undo, synthesized on the fly.

A real low-resolution photograph is not a clean bicubic downscale: it was blurred by a lens
or a resampler, shrunk, noisy, and JPEG-compressed. Training pairs are made the way
Real-ESRGAN's first-order model makes them, in that order, with each strength drawn per
image. numpy and Pillow only: the evaluation and the benchmarks use the same code without torch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

_RESAMPLERS = (Image.BICUBIC, Image.BILINEAR, Image.BOX)   # the downscale's filter, drawn per image


@dataclass(frozen=True)
class Degradation:
    """The strengths each training pair draws from (uniformly, per image)."""

    blur_max: float = 1.2        # Gaussian blur before the downscale, sigma in high-resolution pixels
    noise_max: float = 0.02      # Gaussian noise after it, sigma on [0, 1] pixels
    jpeg_min: int = 60           # JPEG quality, from this to 95

    def problems(self) -> list[str]:
        problems = []
        if not 0 <= self.blur_max <= 5:
            problems.append(f"blur_max expected 0 to 5 (pixels), found {self.blur_max}")
        if not 0 <= self.noise_max <= 0.5:
            problems.append(f"noise_max expected 0 to 0.5, found {self.noise_max}")
        if not 1 <= self.jpeg_min <= 95:
            problems.append(f"jpeg_min expected 1 to 95, found {self.jpeg_min}")
        return problems


def to_integers(image: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """[C, H, W] in [0, 1] -> [H, W, C] of an unsigned integer dtype (uint8: 0..255, uint16:
    0..65535), rounded."""
    top = float(np.iinfo(dtype).max)
    return (np.clip(image, 0.0, 1.0).transpose(1, 2, 0) * top + 0.5).astype(dtype)


def from_integers(pixels: np.ndarray) -> np.ndarray:
    """[H, W, C] of an unsigned integer dtype -> [C, H, W] float32 in [0, 1]."""
    return pixels.transpose(2, 0, 1).astype(np.float32) / float(np.iinfo(pixels.dtype).max)


def degrade(image: np.ndarray, scale: int, rng: np.random.Generator, strengths: Degradation = Degradation()) -> np.ndarray:
    """A high-resolution RGB image [3, H, W] in [0, 1] -> its degraded low-resolution version
    [3, H // scale, W // scale]: blur, downscale, noise, JPEG."""
    pil = Image.fromarray(to_integers(image))
    sigma = rng.uniform(0.0, strengths.blur_max)
    if sigma > 0.1:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(sigma)))
    size = (image.shape[2] // scale, image.shape[1] // scale)
    pil = pil.resize(size, _RESAMPLERS[rng.integers(len(_RESAMPLERS))])
    low = np.asarray(pil, dtype=np.float32) / 255.0
    low = low + rng.normal(0.0, rng.uniform(0.0, strengths.noise_max), low.shape).astype(np.float32)
    return jpeg(np.clip(low, 0.0, 1.0).transpose(2, 0, 1), int(rng.integers(strengths.jpeg_min, 96)))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """[C, H, W] in [0, 1] through a JPEG encode and decode at `quality` (Pillow's encoder)."""
    buffer = io.BytesIO()
    Image.fromarray(to_integers(image)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return from_integers(np.asarray(decoded.convert("RGB")))


def bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: [C, H, W] in [0, 1] upscaled `scale` times by Pillow's bicubic filter, per plane in float."""
    height, width = image.shape[1] * scale, image.shape[2] * scale
    planes = [np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((width, height), Image.BICUBIC))
              for plane in image]
    return np.clip(np.stack(planes), 0.0, 1.0)
