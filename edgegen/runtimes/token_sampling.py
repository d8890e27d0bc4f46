"""Choosing the next token from logits, in numpy, with the options and the order of
Hugging Face's generate: repetition penalty, then temperature, top-k and top-p (nucleus).

Per token the work is a few passes over the vocabulary; nothing grows with the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .pipeline import check_flag, check_number

# top-p looks at the most likely tokens first and sorts the whole vocabulary only when
# these do not already hold the requested mass (a full sort of 50k logits costs ~3 ms).
_NUCLEUS_CANDIDATES = 256


# temperature and repetition penalty stay within [1 / LIMIT, LIMIT]: logits (tens at most) divided
# or multiplied by more overflow float32 to inf, and the draw (or greedy argmax) turns to garbage
LIMIT = 1e4


@dataclass(frozen=True)
class Sampling:
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0

    @classmethod
    def checked(cls, do_sample, temperature, top_k, top_p, repetition_penalty) -> "Sampling":
        do_sample = check_flag(do_sample, "do_sample")
        temperature = check_number(temperature, "temperature")
        low = 1 / LIMIT if do_sample else 0.0   # greedy decoding ignores it; sampling divides by it
        if not low <= temperature <= LIMIT:
            greedy = (" when sampling (for greedy decoding: do_sample=False, --greedy on the command line, or greedy "
                      "true in a served request)"
                      if do_sample and temperature < low else "")
            raise InputError(f"temperature: expected a number from {low:g} to {LIMIT:g}{greedy}, found {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0):
            raise InputError(f"top_k: expected a positive integer, or 0 or None for none, found {top_k!r}")
        top_k = top_k or None   # 0: every token, as transformers takes it
        if top_p is not None:
            top_p = check_number(top_p, "top_p")
            if not 0 < top_p <= 1:
                raise InputError(f"top_p: expected a number above 0 and at most 1 (the kept probability mass), "
                                 f"found {top_p:g}")
        penalty = check_number(repetition_penalty, "repetition_penalty", low=1 / LIMIT, high=LIMIT)
        return cls(do_sample, temperature, None if top_k is None else int(top_k), top_p, penalty)


def penalize_repeats(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL's penalty as transformers applies it: seen tokens' logits divided by the penalty
    when positive, multiplied when negative."""
    penalized = np.where(logits < 0, logits * penalty, logits / penalty)
    return np.where(seen, penalized, logits)


def _keep_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    if k >= logits.shape[-1]:
        return logits
    kth = -np.partition(-logits, k - 1, axis=-1)[:, k - 1:k]
    return np.where(logits < kth, -np.inf, logits)


def _keep_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep each token whose more likely tokens hold less than p of the mass (transformers'
    rule: drop the least likely tokens whose total is at most 1 - p; the best always stays)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted, dtype=np.float64)
    probs /= probs.sum(axis=-1, keepdims=True)
    vocab = logits.shape[-1]
    m = min(vocab, _NUCLEUS_CANDIDATES)
    candidates = np.argpartition(-probs, m - 1, axis=-1)[:, :m] if m < vocab else np.broadcast_to(np.arange(vocab), probs.shape)
    if m < vocab and (np.take_along_axis(probs, candidates, -1).sum(axis=-1) < p).any():
        candidates = np.broadcast_to(np.arange(vocab), probs.shape)  # the head is too flat: sort everything
    cand_probs = np.take_along_axis(probs, candidates, -1)
    order = np.argsort(-cand_probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(cand_probs, order, -1)
    mass_above = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep_sorted = mass_above < p
    keep = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(keep, np.take_along_axis(candidates, order, -1), keep_sorted, -1)
    return np.where(keep, logits, -np.inf)


def next_tokens(logits: np.ndarray, seen: np.ndarray | None, sampling: Sampling, rng: np.random.Generator | None,
                uniforms: np.ndarray | None = None) -> np.ndarray:
    """logits [batch, vocab] -> next token ids [batch] (int64). Sampling draws one uniform number
    per row from `rng`, or takes them from `uniforms` [batch] (drawn ahead by a caller whose rows
    advance at different paces)."""
    if sampling.repetition_penalty != 1.0 and seen is not None:
        logits = penalize_repeats(logits, seen, sampling.repetition_penalty)
    if not sampling.do_sample:
        return logits.argmax(axis=-1).astype(np.int64)
    logits = logits / np.float32(sampling.temperature)
    if sampling.top_k is not None:
        logits = _keep_top_k(logits, sampling.top_k)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        logits = _keep_top_p(logits, sampling.top_p)
    # inverse-CDF draw: one uniform number per row, so a seed fixes the whole run
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True), dtype=np.float64)
    cdf = np.cumsum(probs, axis=-1)
    u = (rng.random(len(cdf)) if uniforms is None else uniforms)[:, None] * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1).astype(np.int64)
