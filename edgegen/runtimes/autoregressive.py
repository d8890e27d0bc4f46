"""What the PixelCNN and WaveNet pipelines share: drawing one code per item from logits
(the token models' sampler)."""

from __future__ import annotations

import numpy as np

from .pipeline import check_number
from .token_sampling import LIMIT, Sampling, next_tokens


def sampler(temperature) -> Sampling:
    """A draw at `temperature`: these models have no greedy mode, so a temperature of 0 is refused
    within the sampler's range, not pointed to token models' do_sample=False."""
    return Sampling.checked(True, check_number(temperature, "temperature", 1 / LIMIT, LIMIT), None, None, 1.0)


def draw(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """logits [n, codes] -> one code per row; one uniform number per row from `rng`."""
    return next_tokens(np.ascontiguousarray(logits, dtype=np.float32), None, sampling, rng)


def log_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
