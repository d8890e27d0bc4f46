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


def draw(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator | None,
         uniforms: np.ndarray | None = None) -> np.ndarray:
    """logits [n, codes] -> one code per row; one uniform number per row from `rng`, or `uniforms` [n]."""
    return next_tokens(np.ascontiguousarray(logits, dtype=np.float32), None, sampling, rng, uniforms)


def row_uniforms(rng: np.random.Generator, rows: int, steps: int) -> np.ndarray:
    """[rows, steps] uniform numbers, row r's from a generator of its own (Generator.spawn: child r
    is the same whatever the count), so that a seed gives row r the same sample at any n; drawn
    from `rng` as one [rows, steps] array, a row's would depend on how many rows are beside it."""
    return np.stack([child.random(steps) for child in rng.spawn(rows)]) if rows else np.empty((0, steps))


def log_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
