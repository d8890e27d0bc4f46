"""Tokenizers for token-model packages: UTF-8 bytes (edgegen's own GPT) or a Hugging Face
`tokenizer.json` (imported GPT-2), each with a streaming decoder that turns one token at a
time into text without re-decoding what came before.

Runtime code: no torch; the `tokenizers` library (the text extra) only for BPE packages.
"""

from __future__ import annotations

import codecs
import collections
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import EdgegenWarning, InputError, MissingExtraError, PackageError, warn_caller
from ..package import Package


class StreamDecoder(Protocol):
    def step(self, token: int) -> str: ...        # text completed by this token ("" while a character is split)
    def flush(self) -> str: ...                   # what is left at the end


def utf8_text(text: str, what: str = "prompt") -> str:
    """`text` itself, or InputError where it holds a character UTF-8 cannot carry (a lone surrogate:
    from a string cut inside a pair, or command-line bytes the locale could not decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{what}: expected text UTF-8 can encode, found {exc.object[exc.start:exc.end]!r} at "
                         f"character {exc.start} (a lone surrogate: bytes that were not UTF-8, or a string cut "
                         "inside a pair)") from None
    return text


class ByteTokenizer:
    """Token ids 0..255 are the UTF-8 bytes of the text."""

    kind = "bytes"
    vocab_size = 256

    def encode(self, text: str, special_tokens: bool = False) -> list[int]:
        return list(utf8_text(text).encode("utf-8"))   # bytes have no special tokens

    def decode(self, ids: list[int]) -> str:
        try:
            return bytes(ids).decode("utf-8", errors="replace")
        except (TypeError, ValueError):   # bytes() says only "bytes must be in range(0, 256)"
            bad = [i for i in np.ravel(np.asarray(ids, dtype=object)) if not (isinstance(i, (int, np.integer)) and 0 <= i < 256)]
            raise InputError(f"ids: expected token ids from 0 to 255 (this tokenizer's bytes), found "
                             f"{', '.join(map(repr, bad[:5]))}" + (", ..." if len(bad) > 5 else "")) from None

    def stream_decoder(self, context: Sequence[int] = ()) -> StreamDecoder:
        return _ByteStream()   # a text prompt's bytes end on a whole character: no context needed


class _ByteStream:
    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token: int) -> str:
        return self._decoder.decode(bytes((token,)))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class BPETokenizer:
    """A Hugging Face tokenizer.json (byte-level BPE for GPT-2), through the tokenizers library."""

    kind = "bpe"

    def __init__(self, path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise MissingExtraError(f"tokenizer {str(path)!r}: a Hugging Face tokenizer needs the text extra: pip install "
                                    "'edgegen[text]' (found no tokenizers library here)") from None
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - the Rust side raises its own exception type
            raise PackageError(f"tokenizer {str(path)!r}: expected a tokenizers JSON file, found: {exc}") from None
        # a truncation or padding saved in the file cut or padded every prompt without a word, where
        # transformers' tokenizer(text) applies neither (encode_padded sets its own)
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self._settings_lock = threading.Lock()

    def encode(self, text: str, special_tokens: bool = False) -> list[int]:
        """The text's ids; with special_tokens, those the tokenizer's post-processor adds too (a
        Llama's start-of-text <s>), as transformers' tokenizer(text) encodes a prompt."""
        return self._tokenizer.encode(utf8_text(text), add_special_tokens=special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def encode_padded(self, texts: list[str], length: int, pad_id: int, labels: list[str] | None = None) -> np.ndarray:
        """int64 [len(texts), length]: each text with the tokenizer's special tokens (CLIP's start
        and end of text), cut or padded to `length`, as transformers' padding="max_length",
        truncation=True (a text encoder's prompts). A text cut short is said in a warning, under its
        label in `labels` (default: prompt, or prompts[i] for several)."""
        labels = labels or [f"prompts[{i}]" if len(texts) > 1 else "prompt" for i in range(len(texts))]
        texts = [utf8_text(t, label) for t, label in zip(texts, labels)]
        with self._settings_lock:   # truncation and padding are the shared tokenizer's state: one caller at a time
            self._tokenizer.enable_truncation(length)
            self._tokenizer.enable_padding(length=length, pad_id=pad_id)
            try:
                encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
            finally:
                self._tokenizer.no_truncation()
                self._tokenizer.no_padding()
        for label, text, encoding in zip(labels, texts, encodings):
            if encoding.overflowing:   # said, as diffusers says it: the picture would follow only the start
                kept_to = max(end for _start, end in encoding.offsets)   # special tokens sit at (0, 0)
                warn_caller(f"{label}: the text encoder takes {length} tokens, its start and end of text among them; "
                            f"the rest was cut: {_cut_words(text, kept_to)}", EdgegenWarning, remembered=False)
        return np.array([e.ids for e in encodings], dtype=np.int64)

    def stream_decoder(self, context: Sequence[int] = ()) -> StreamDecoder:
        """Text of the tokens that follow `context` (the prompt's ids), as decoding them all
        and cutting the context's text gives it."""
        return _BPEStream(self._tokenizer, context)

    def words_in_pieces(self, text: str) -> list[str]:
        """The words of `text` (as its pre-tokenizer splits them) that take more than one token:
        for a vocabulary made of whole words (a text2image model trained here), the words it lacks."""
        encoding = self._tokenizer.encode(utf8_text(text), add_special_tokens=False)
        counts = collections.Counter(w for w in encoding.word_ids if w is not None)
        spans = {}
        for word, (start, end) in zip(encoding.word_ids, encoding.offsets):
            if word is not None:
                spans[word] = (spans.get(word, (start, end))[0], end)
        return list(dict.fromkeys(text[slice(*spans[w])] for w, n in counts.items() if n > 1))


CUT_TEXT_SHOWN = 200   # characters of a prompt's cut part a warning quotes: a service's log line, not the prompt


def _cut_words(text: str, kept_to: int) -> str:
    """What a prompt's cut left out, as its warning names it: where the cut falls inside a word (one
    of several tokens), that word whole, and the part of it kept; its first CUT_TEXT_SHOWN
    characters, and how many more there are (a prompt of a million characters was quoted whole)."""
    inside_word = 0 < kept_to < len(text) and not text[kept_to - 1].isspace() and not text[kept_to].isspace()
    start = kept_to
    while inside_word and start > 0 and not text[start - 1].isspace():
        start -= 1
    cut = text[start:].strip()
    shown = repr(cut[:CUT_TEXT_SHOWN]) + (f" and {len(cut) - CUT_TEXT_SHOWN:,} characters more"
                                          if len(cut) > CUT_TEXT_SHOWN else "")
    return shown if start == kept_to else f"{shown}, of which {text[start:kept_to]!r} was kept"


def ids_beyond(path, vocab_size: int, added_tokens: bool) -> str | None:
    """Why the tokenizer.json at `path` does not fit a model of `vocab_size` embedding rows (it
    makes ids the model has no row for), or None. `added_tokens`: its added tokens count too;
    else only its own vocabulary does (a pad token added without resizing the embedding, which
    a runtime that refuses a prompt holding it can leave be)."""
    ids = BPETokenizer(path)._tokenizer.get_vocab(with_added_tokens=added_tokens).values()
    end = max(ids, default=-1) + 1   # ids need not be contiguous: the largest one needs a row
    if end <= vocab_size:
        return None
    return (f"expected token ids below the model's vocab_size of {vocab_size}, found ids up to {end - 1} in the "
            f"tokenizer's {'vocabulary and added tokens' if added_tokens else 'vocabulary'} (no row in the model's "
            "embedding for them)")


class _BPEStream:
    """Incremental decoding as text-generation servers do it: each step decodes a short window
    of tokens twice, without and with the new ones, and gives out what the new ones add. Two
    things a token-by-token decode gets wrong come out right this way:
    - a sentencepiece decoder (Llama 2, Mistral) strips the space of the first token it decodes,
      so the first new word lost its space ("x =in", not "x = in"): the window starts inside the
      prompt, whose last tokens are decoded ahead of the new ones;
    - byte-fallback tokens that do not yet make a whole character decode to U+FFFD: they are
      held until they do (or until the end, as decode() gives them).
    tokenizers' DecodeStream does the same but raises on byte tokens that change text it has
    already given out (a model's invalid UTF-8): here the text given stands and the rest follows."""

    CONTEXT_TOKENS = 6   # the prompt's last tokens, decoded ahead of the first new one
    MAX_HELD = 8         # tokens held for a character to complete (UTF-8's is at most 4 bytes)

    def __init__(self, tokenizer, context: Sequence[int] = ()):
        self._tokenizer = tokenizer
        self._ids = [int(t) for t in list(context)[-self.CONTEXT_TOKENS:]]
        # a window that starts inside a character (its last bytes, as byte-fallback tokens) decodes
        # to U+FFFD, and new bytes would join that broken run: start it where a character starts
        while self._ids and self._decode(self._ids).startswith("\ufffd"):
            self._ids.pop(0)
        self._start = 0                # the window decoded on each step
        self._given = len(self._ids)   # the tokens whose text is out (the context's counts as out)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def step(self, token: int) -> str:
        self._ids.append(int(token))
        given = self._decode(self._ids[self._start:self._given])
        text = self._decode(self._ids[self._start:])
        held = len(self._ids) - self._given
        if len(text) <= len(given) or (text.endswith("\ufffd") and held < self.MAX_HELD):   # a character not whole
            return ""   # (held no longer than a character takes: a model's invalid bytes come out as U+FFFD)
        self._ids = self._ids[self._given:]   # the tokens given out now start the next window
        self._start, self._given = 0, len(self._ids)
        return text[len(given):]

    def flush(self) -> str:
        """Tokens held at the end: a character left incomplete decodes as U+FFFD, as decode() gives it."""
        if self._given == len(self._ids):
            return ""
        return self._decode(self._ids[self._start:])[len(self._decode(self._ids[self._start:self._given])):]


TOKENIZER_KINDS = ("bytes", "bpe", "none")   # none: an imported model without one (token ids only)


def load_tokenizer(package: Package, spec: dict) -> ByteTokenizer | BPETokenizer | None:
    """The package's tokenizer as its config's `tokenizer` names it; None for a model imported
    without one (token ids only)."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "none":
        return None
    if kind == "bpe":
        return BPETokenizer(package.recorded_file(spec, "config.tokenizer", "tokenizer"))
    raise PackageError(f"package {str(package.path)!r}: expected config.tokenizer.kind one of {', '.join(TOKENIZER_KINDS)}, "
                       f"found {kind!r}")


def check_token_ids(ids, vocab_size: int, what: str) -> list[int]:
    """A prompt given as token ids: a non-empty list of ints within the vocabulary."""
    if isinstance(ids, np.ndarray) and ids.ndim == 1:
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)) or not ids:
        raise InputError(f"{what}: expected a non-empty list of token ids, found {ids!r}")
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise InputError(f"{what}: expected token ids, integers in [0, {vocab_size}), found {token!r} "
                             f"({type(token).__name__})")
        if not 0 <= int(token) < vocab_size:
            raise InputError(f"{what}: expected token ids in [0, {vocab_size}), found {token!r}")
    return [int(t) for t in ids]
