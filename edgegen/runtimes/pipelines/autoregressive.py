"""What the PixelCNN and WaveNet pipelines share: class labels with a "no label" index,
and drawing one code per item from logits (the token models' sampler)."""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..token_sampling import Sampling, next_tokens


def class_labels(labels, n: int, num_classes: int, null_label: int, what: str = "labels") -> np.ndarray:
    """None -> the "no label" index; one id or n ids -> int64 [n], each in [0, num_classes)."""
    if labels is None:
        return np.full(n, null_label, np.int64)
    if num_classes == 0:
        raise InputError(f"{what}: expected None for this unconditional model, found {labels!r}")
    array = np.asarray(labels)
    if array.dtype.kind not in "iu" or array.ndim > 1 or (array.ndim == 1 and len(array) != n):
        raise InputError(f"{what}: expected None, one class id or {n} class ids, found {labels!r:.60}")
    if ((array < 0) | (array >= num_classes)).any():
        raise InputError(f"{what}: expected class ids in [0, {num_classes}), found {array.tolist()}")
    return np.broadcast_to(array, (n,)).astype(np.int64)


def sampler(temperature) -> Sampling:
    return Sampling.checked(True, temperature, None, None, 1.0)


def draw(logits: np.ndarray, sampling: Sampling, rng: np.random.Generator) -> np.ndarray:
    """logits [n, codes] -> one code per row; one uniform number per row from `rng`."""
    return next_tokens(np.ascontiguousarray(logits, dtype=np.float32), None, sampling, rng)


def log_softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
