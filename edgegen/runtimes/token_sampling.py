"""Choosing the next token from logits, in numpy, with the options and the order of
Hugging Face's generate: repetition penalty, then temperature, top-k and top-p (nucleus).

Per token the work is a few passes over the vocabulary; nothing grows with the sequence.
The tokens are those of the plain passes (the kept tokens' probabilities summed in vocabulary
order until one uniform number's share of their total), found without sorting the vocabulary;
the sums are rounded in another order, which can part from them only where a uniform number falls
within about 1e-16 of a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, NonFiniteError
from .pipeline import check_flag, check_number

# Past this many tokens a row's work skips full passes it does not need: a draw finds its block
# of _BLOCK tokens before summing one by one (a float64 cumsum of 50k costs ~170 us), and top-k
# bounds its k-th logit by block maxima before selecting (a partition of 50k costs ~250 us).
_LARGE = 4096
_BLOCK = 64
# top-p sorts only the tokens near the nucleus's edge (sorting 50k probabilities costs ~2.5 ms,
# more than a small model's decode step): a row of more than _BIN_PAST tokens it first weighs in
# _BINS bins of logit, _SPAN nats below the best (the last bin takes the rest: e^-40 of the best
# and less)
_BIN_PAST = 512
_BINS, _SPAN = 2048, 40.0

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
    when positive, multiplied when negative. Only the seen tokens' are computed: at a large
    vocabulary, whole-row passes cost several times more (0.8 ms a token at batch 4 of 32,000)."""
    penalized = logits.copy()
    repeated = penalized[seen]
    penalized[seen] = np.where(repeated < 0, repeated * penalty, repeated / penalty)
    return penalized


def _kth_largest(row: np.ndarray, k: int) -> np.floating:
    """The k-th largest entry of a 1-D row (1 <= k <= len(row))."""
    if len(row) > _LARGE and k <= len(row) // _BLOCK:
        # the k largest block maxima are k entries, so the k-th of them is at most the row's k-th:
        # the entries at or above it (k at least) hold the row's top k
        maxima = row[:len(row) // _BLOCK * _BLOCK].reshape(-1, _BLOCK).max(axis=1)
        row = row[row >= np.partition(maxima, len(maxima) - k)[len(maxima) - k]]
    return np.partition(row, len(row) - k)[len(row) - k]


def _top_k_ids(row: np.ndarray, k: int) -> np.ndarray:
    """The ids, in vocabulary order, of the tokens whose logit is at least the k-th largest (ties at
    the k-th all stay, as in transformers' TopKLogitsWarper)."""
    return np.flatnonzero(row >= _kth_largest(row, k))


def _nucleus(shifted: np.ndarray, probs: np.ndarray, p: float) -> np.ndarray:
    """The positions, in order, of the tokens top-p keeps: each token whose more likely tokens hold
    less than p of the mass (transformers' rule: drop the least likely tokens whose total is at
    most 1 - p; the best always stays). shifted: the logits less their maximum; probs: their
    exponentials. Equal probabilities count in vocabulary order."""
    target = p * probs.sum()
    if len(probs) <= _BIN_PAST:
        edge, above, window = None, 0.0, np.arange(len(probs))
    else:   # the bin holding the edge: the bins above it are kept whole, those below dropped
        bins = np.minimum(shifted * np.float32(-_BINS / _SPAN), np.float32(_BINS - 1)).astype(np.intp)
        reached = np.cumsum(np.bincount(bins, weights=probs, minlength=_BINS))
        edge = min(int(np.searchsorted(reached, target)), _BINS - 1)
        above, window = (reached[edge - 1] if edge else 0.0), np.flatnonzero(bins == edge)
    taken = window[_within_nucleus(probs[window][None], target, above)[0]]
    if edge is None:
        return taken
    kept = bins < edge   # a mask, not a sort: a flat row's nucleus holds most of the vocabulary
    kept[taken] = True
    return np.flatnonzero(kept)


def _within_nucleus(values: np.ndarray, target, above: float = 0.0) -> np.ndarray:
    """Which of each row's values [rows, n] top-p keeps, sorting them: those whose larger values
    (equal ones before them in order), with `above` (the mass of larger ones not among them), hold
    less than `target` [rows, 1]. The first always stays (above < target)."""
    rows, order = np.arange(len(values))[:, None], np.argsort(-values, axis=-1, kind="stable")
    ranked = values[rows, order]
    kept = np.empty(values.shape, bool)
    kept[rows, order] = above + np.cumsum(ranked, axis=-1) - ranked < target
    return kept


def _drawn(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: for each row of probabilities [rows, n] (unnormalized), the position where
    their running sum in order first passes u [rows] (in [0, 1)) of the row's total. Short rows all
    at once, long ones by blocks (_drawn_by_blocks)."""
    if probs.shape[-1] > _LARGE:
        return np.array([_drawn_by_blocks(row, x) for row, x in zip(probs, u)], np.int64)
    cdf = np.cumsum(probs, axis=-1)
    return (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=-1)   # below the row's length: u * total < total


def _drawn_by_blocks(probs: np.ndarray, u: float) -> int:
    """_drawn for one long row [n]: the block of _BLOCK tokens that holds the draw first, then the
    token within it."""
    ends = np.cumsum(np.add.reduceat(probs, np.arange(0, len(probs), _BLOCK)))
    mark = u * ends[-1]   # below the total (u < 1), so in a block
    block = int(np.searchsorted(ends, mark, "right"))
    start, stop = block * _BLOCK, min((block + 1) * _BLOCK, len(probs))
    chosen = start + int(np.searchsorted(np.cumsum(probs[start:stop]) + (ends[block - 1] if block else 0.0), mark, "right"))
    # the block's own running sum, rounded apart from its total in `ends`, can end below the mark:
    # its last token with any probability
    return chosen if chosen < stop else int(np.flatnonzero(probs[:stop])[-1])


def _kept_in_short_rows(shifted: np.ndarray, sampling: Sampling) -> np.ndarray:
    """The probabilities [rows, n] top-k and top-p keep (0 for the others) in rows short enough
    that whole passes over all of them at once cost less than a row at a time."""
    n = shifted.shape[-1]
    if sampling.top_k is not None and sampling.top_k < n:   # as _top_k_ids: ties at the k-th stay
        kth = np.partition(shifted, n - sampling.top_k, axis=-1)[:, n - sampling.top_k:n - sampling.top_k + 1]
        shifted = np.where(shifted < kth, -np.inf, shifted)
    probs = np.exp(shifted, dtype=np.float64)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        probs[~_within_nucleus(probs, sampling.top_p * probs.sum(axis=-1, keepdims=True))] = 0.0
    return probs


def _check_finite(chosen: np.ndarray) -> None:
    """NonFiniteError unless each row's chosen (or largest) logit is a finite number: NaN or
    infinity in logits is an overflow in the model (a reduced-precision variant's, most often),
    and no token drawn from them means anything."""
    if np.isfinite(chosen).all():
        return
    row = int(np.flatnonzero(~np.isfinite(chosen))[0])
    raise NonFiniteError(f"logits of row {row}: expected finite numbers, found "
                         f"{'no finite one' if chosen[row] == -np.inf else 'NaN or Inf'} (the model's output "
                         "overflowed: with a reduced-precision variant, try precision='fp32')")


def _sampled_row(shifted: np.ndarray, sampling: Sampling, u: float) -> int:
    """One row's token under top-k and top-p, from its logits less their maximum: the kept tokens'
    probabilities, drawn in vocabulary order."""
    ids = None
    if sampling.top_k is not None and sampling.top_k < len(shifted):
        ids = _top_k_ids(shifted, sampling.top_k)
        shifted = shifted[ids]
    probs = np.exp(shifted, dtype=np.float64)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        kept = _nucleus(shifted, probs, sampling.top_p)
        probs, ids = probs[kept], kept if ids is None else ids[kept]
    chosen = int(_drawn(probs[None], np.array([u]))[0])
    return chosen if ids is None else int(ids[chosen])


def next_tokens(logits: np.ndarray, seen: np.ndarray | None, sampling: Sampling, rng: np.random.Generator | None,
                uniforms: np.ndarray | None = None, live: np.ndarray | None = None) -> np.ndarray:
    """logits [batch, vocab] -> next token ids [batch] (int64). Sampling draws one uniform number
    per row from `rng`, or takes them from `uniforms` [batch] (drawn ahead by a caller whose rows
    advance at different paces). live [batch] (bool): the rows whose token is wanted; the others,
    rows of a batch that have stopped, get token 0 unlooked at (their logits may be anything) and
    draw nothing."""
    if live is not None and not live.all():
        tokens = np.zeros(len(logits), np.int64)
        if live.any():
            tokens[live] = next_tokens(logits[live], None if seen is None else seen[live], sampling, rng,
                                       None if uniforms is None else uniforms[live])
        return tokens
    if sampling.repetition_penalty != 1.0 and seen is not None:
        logits = penalize_repeats(logits, seen, sampling.repetition_penalty)
    if not sampling.do_sample:
        tokens = logits.argmax(axis=-1)
        _check_finite(logits[np.arange(len(tokens)), tokens])   # argmax takes the first NaN
        return tokens.astype(np.int64)
    shifted = logits / np.float32(sampling.temperature)   # a copy: the caller's logits stay
    best = shifted.max(axis=-1, keepdims=True)
    _check_finite(best[:, 0])   # a NaN anywhere in a row is its maximum
    shifted -= best
    # one uniform number per row, so a seed fixes the whole run
    u = rng.random(len(shifted)) if uniforms is None else uniforms
    if shifted.shape[-1] <= _BIN_PAST:   # short rows (gpt-stdlib's, PixelCNN's, WaveNet's): all at once
        return _drawn(_kept_in_short_rows(shifted, sampling), u).astype(np.int64)
    if sampling.top_k is None and (sampling.top_p is None or sampling.top_p >= 1.0):
        return _drawn(np.exp(shifted, dtype=np.float64), u).astype(np.int64)
    return np.array([_sampled_row(row, sampling, x) for row, x in zip(shifted, u)], np.int64)
