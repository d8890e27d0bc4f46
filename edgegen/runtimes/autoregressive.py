"""What the PixelCNN and WaveNet pipelines share: drawing one code per item from logits
(the token models' sampler)."""

from __future__ import annotations

import numpy as np

from .token_sampling import Sampling, next_tokens


def sampler(temperature) -> Sampling:
    return Sampling.checked(True, temperature, None, None, 1.0)


def draw(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """logits [n, codes] -> one code per row; one uniform number per row from `rng`."""
    return next_tokens(np.ascontiguousarray(logits, dtype=np.float32), None, sampling, rng)


def log_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
