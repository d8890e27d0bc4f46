"""How well a super-resolution package restores held-out photographs, against bicubic upscaling.

Held-out crops (of photographs training never saw) are degraded as in training, upscaled by
the package and by bicubic interpolation, and compared with the originals: PSNR and SSIM,
scikit-image's (the export extra)."""

from __future__ import annotations

import numpy as np

from .data import held_out_crops
from .degrade import bicubic, degrade

EVAL_SIZE, EVAL_CROPS = 192, 24     # high-resolution crops: 48 input pixels at x4


def held_out_pairs(scale: int, size: int = EVAL_SIZE, count: int = EVAL_CROPS, seed: int = 0,
                   source: str = "natural") -> tuple[np.ndarray, list[np.ndarray]]:
    """(originals [count, 3, size, size], their degraded inputs), the same on every run."""
    originals = held_out_crops(source, size, seed, count)
    rng = np.random.default_rng(seed)
    return originals, [degrade(image, scale, rng) for image in originals]


def quality(pipe, size: int = EVAL_SIZE, count: int = EVAL_CROPS, seed: int = 0, **upscale) -> dict:
    """Mean PSNR (dB) and SSIM of the package's and bicubic's upscales against the originals."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    originals, inputs = held_out_pairs(pipe.scale, size, count, seed)
    scores = {"edgegen_psnr": [], "bicubic_psnr": [], "edgegen_ssim": [], "bicubic_ssim": []}
    for original, low in zip(originals, inputs):
        for name, upscaled in (("edgegen", pipe.upscale_rgb(low, **upscale)), ("bicubic", bicubic(low, pipe.scale))):
            scores[f"{name}_psnr"].append(peak_signal_noise_ratio(original, upscaled, data_range=1.0))
            scores[f"{name}_ssim"].append(structural_similarity(original, upscaled, data_range=1.0, channel_axis=0))
    result = {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
    return {**result, "crops": count, "size": size, "psnr_wins": float(np.mean(
        np.array(scores["edgegen_psnr"]) > np.array(scores["bicubic_psnr"])))}


def side_by_side(pipe, index: int = 3) -> tuple[np.ndarray, dict]:
    """Four panels [4, 3, H, W] of one held-out crop: the input enlarged by pixel repetition,
    bicubic, edgegen, the original; and the quality scores over all held-out crops."""
    originals, inputs = held_out_pairs(pipe.scale)
    low = inputs[index]
    enlarged = low.repeat(pipe.scale, axis=1).repeat(pipe.scale, axis=2)
    panels = np.stack([enlarged, bicubic(low, pipe.scale), pipe.upscale_rgb(low), originals[index]])
    return panels, quality(pipe)
