"""Prompt lookup decoding: draft tokens copied from the sequence itself, verified by the decoder.

Decoding reads every weight once per call whether the call carries one token or a few, so a
call that also checks a few guessed tokens costs little more than one that does not, and every
guess that matches what the model would have chosen saves a call. The guesses come from the
sequence so far (prompt and generated text): where its last few tokens occurred before, the tokens
that followed them then are guessed to follow now. Output that repeats its context (code edits,
extraction, summaries quoting their source, a model looping) gets several tokens per call; other
output gets one, at the cost of the longer call. The pipeline keeps only tokens the model itself
chooses (GPTPipeline.generate's prompt_lookup_num_tokens), so the output is the one decoding
without drafts gives.
"""

from __future__ import annotations

import numpy as np

# the suffix lengths looked up, longest first: a longer match predicts better, and a single token
# recurs by chance in any text (drafts from it were rejected more often than kept)
NGRAM_SIZES = (3, 2)


def draft_tokens(sequence: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` tokens guessed to follow `sequence` (1-D ids): those that followed the most
    recent earlier occurrence of its last 3 tokens (else its last 2). Where that copy reaches the
    sequence's end it repeats from the occurrence again, as a loop would continue. Empty where
    neither occurred before."""
    length = len(sequence)
    if count < 1 or length < 3:
        return sequence[:0]
    # where the last token occurred before: a match of n tokens ends at one of these places
    ends = np.flatnonzero(sequence[:-1] == sequence[-1])
    for n in NGRAM_SIZES:
        matched = ends[ends >= n - 1]
        for back in range(1, n):
            matched = matched[sequence[matched - back] == sequence[-1 - back]]
        if len(matched):
            start = int(matched[-1]) + 1
            return sequence[start + np.arange(count) % (length - start)]
    return sequence[:0]


def batch_drafts(sequences: np.ndarray, lengths: np.ndarray, count: int, live: np.ndarray,
                 filler: int) -> np.ndarray:
    """Drafts for the rows still going (`live`) of a batch whose row r is sequences[r, :lengths[r]]:
    [batch, k], k the shortest live row's draft, so none where a live row has none. Each row keeps
    the drafts it chose, but the batch's call ends when its slowest row does: a call that advances
    some rows and not others buys nothing, and a filler would almost surely fail. Rows that have
    ended get `filler`."""
    found = {}
    for r in np.flatnonzero(live):
        found[r] = draft_tokens(sequences[r, :lengths[r]], count)
        if not len(found[r]):   # no call with drafts: the other rows need not be looked up
            return np.empty((len(lengths), 0), np.int64)
    drafts = np.full((len(lengths), min((len(f) for f in found.values()), default=0)), filler, np.int64)
    for r, tokens in found.items():
        drafts[r] = tokens[:drafts.shape[1]]
    return drafts
