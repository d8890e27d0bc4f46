"""Token generation for GPT packages: the runtime owns the loop and its KV cache.

The decoder graph takes `past_key_values.{i}.key|value` [batch, heads, past, head_dim] and
returns `present.{i}.key|value` (the past grown by this call's tokens). The loop allocates the
cache buffers once for the run, sized from the prompt and `max_new_tokens`, and binds them to
the graph by address (ONNX Runtime IO binding), so no cache tensor is allocated per token and
the per-token Python work is constant:
- the exported graph grows its cache by a Concat: each call reads the past from one of two
  buffers per tensor and writes the present straight into the other (the graph copies it);
- the in-place form `edgegen optimize` writes for ONNX Runtime (cache_in_place.py) writes only
  the new tokens into one buffer per tensor, bound whole as both the past and the present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from ...errors import ImportedSettingWarning, InputError, ManifestError, PackageError, first_line, warn_caller
from ...graph_summary import read_graph_summary
from ...runtimes.ort import OrtBinding, OrtSession
from ...runtimes.chat import ChatTemplates, chat_record_problems, is_conversation, load_chat_templates
from ...runtimes.pipeline import Pipeline, check_callback, check_count, check_flag, check_number, make_rng
from ...runtimes.token_sampling import Sampling, next_tokens
from ...runtimes.tokenizer import TOKENIZER_KINDS, check_token_ids, load_tokenizer, utf8_text
from ...wording import counted
from .. import RuntimeConfig, dim_problems, positive
from .prompt_lookup import batch_drafts

DEFAULT_MAX_NEW_TOKENS = 64
# the decoder graph's optional input (export.with_logits_to_keep): the output head on the last
# that many positions only; a prompt's call asks for 1. Packages exported before it lack it.
LOGITS_TO_KEEP = "logits_to_keep"
# prompt tokens per prefill call: a 1,024-token prompt on a 124M Llama reached its first token
# 5-10% sooner in chunks of 256 or 512 than in one call (benchmarks/prefill_chunks.py)
PREFILL_CHUNK = 256
DEFAULT_CACHE_BUDGET_MB = 1024
# the in-place cache's capacity grows this many tokens at a time (_InPlaceCache)
CACHE_GROWTH = 128
# prompt lookup: the most calls without drafts after drafts were rejected again and again (_cached_steps)
LOOKUP_MAX_PAUSE = 16
# the graph's metadata key naming its cache form, and the in-place form's value (cache_in_place.py)
KV_CACHE_METADATA = "edgegen.kv_cache"
KV_CACHE_IN_PLACE = "in-place"


ARCHITECTURES = ("gpt2", "llama")   # the decoders the family builds; one graph contract
# generate()'s sampling settings where neither the call nor the package names them
NEUTRAL_SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}   # values that leave every draw as it is
SAMPLING_DEFAULTS = {"do_sample": True, "temperature": 1.0, "top_k": None, "top_p": None, "repetition_penalty": 1.0}


@dataclass(kw_only=True)
class GPTConfig(RuntimeConfig):
    """The decoder's sizes (they shape the KV cache), its context and its tokenizer."""
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    head_dim: int
    n_embd: int
    tokenizer: dict
    eos_token_id: int | None = None
    # more end-of-text ids beside it (Llama 3's, Qwen2-Instruct's end of turn): generation stops at any
    more_eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    data: dict = field(default_factory=dict)
    architecture: str = "gpt2"       # or "llama" (Llama, Qwen2, Mistral): the same graph contract
    n_kv_head: int | None = None     # grouped-query attention: the cache's heads (None: n_head)
    # generate()'s defaults where they are not edgegen's (an imported model's generation_config.json):
    # sampling settings of SAMPLING_DEFAULTS' names
    generation_defaults: dict = field(default_factory=dict)
    # an imported instruct model's chat templates (runtimes/chat.py): {"templates": {name: {"file",
    # "sha256"}}, "special_tokens": {"bos_token": text, ...}}; empty where it has none
    chat_templates: dict = field(default_factory=dict)

    @property
    def cache_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def padding_id(self) -> int:
        """The id left padding uses: one the embedding has (GPT-2 configs often name an eos/pad
        outside a small vocabulary); its value never matters, the mask hides it."""
        return next((t for t in (self.pad_token_id, self.eos_token_id) if t is not None and 0 <= t < self.vocab_size), 0)

    def problems(self) -> list[str]:
        problems = positive(self, "vocab_size", "block_size", "n_layer", "n_head", "head_dim", "n_embd")
        if self.architecture not in ARCHITECTURES:
            problems.append(f"architecture expected one of {', '.join(ARCHITECTURES)}, found {self.architecture!r}")
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            problems.append(f"n_kv_head expected a divisor of n_head ({self.n_head}), found {self.n_kv_head}")
        if self.tokenizer.get("kind") not in TOKENIZER_KINDS:
            problems.append(f"tokenizer.kind expected one of {', '.join(TOKENIZER_KINDS)}, found {self.tokenizer.get('kind')!r}")
        # an id beyond the vocabulary is allowed (GPT-2's configs name 50256 for small vocabularies:
        # it is never generated, and padding falls back to an id the embedding has); a negative one means nothing
        if any(t < 0 for t in self.more_eos_token_ids):
            problems.append(f"more_eos_token_ids expected token ids (0 or more), found {self.more_eos_token_ids}")
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and value < 0:
                problems.append(f"{name} expected a token id (0 or more), found {value}")
        problems += chat_record_problems(self.chat_templates)
        unknown = sorted(set(self.generation_defaults) - set(SAMPLING_DEFAULTS))
        if unknown:
            problems.append(f"generation_defaults expected keys among {', '.join(SAMPLING_DEFAULTS)}, found {unknown}")
        else:
            try:
                Sampling.checked(**{**SAMPLING_DEFAULTS, **self.generation_defaults})
            except InputError as exc:
                problems.append(f"generation_defaults: {exc}")
        return problems

    def graph_problems(self, graphs: dict) -> list[str]:
        """The decoder's logits have vocab_size entries, and it has n_layer key/value cache
        inputs of [batch, n_kv_head (or n_head), past, head_dim]."""
        decoder = graphs.get("decoder")
        if decoder is None:
            return [f"graphs expected a 'decoder', found {sorted(graphs)}"]
        layers = sum(1 for t in decoder.inputs if t.name.startswith("past_key_values.") and t.name.endswith(".key"))
        if layers != self.n_layer:
            return [f"n_layer {self.n_layer}: expected the decoder to take that many key caches, found {layers}"]
        return dim_problems(graphs, [("decoder", "logits", -1, "vocab_size", self.vocab_size)]
                            + [("decoder", f"past_key_values.{i}.{kv}", axis, name, value)
                               for i in range(self.n_layer) for kv in ("key", "value")
                               for axis, name, value in ((1, "n_kv_head" if self.n_kv_head else "n_head",
                                                          self.cache_heads), (3, "head_dim", self.head_dim))])


def writes_cache_in_place(session) -> bool:
    """Whether a decoder session's graph is the in-place form (cache_in_place.py), by its metadata."""
    return isinstance(session, OrtSession) and KV_CACHE_IN_PLACE == \
        session.inference_session.get_modelmeta().custom_metadata_map.get(KV_CACHE_METADATA)


class CacheBudgetError(InputError):
    """The KV cache a request needs is larger than the memory budget the user set. Its advice names
    the Python keywords; `on_command_line()` says the same in `edgegen generate`'s flags."""

    def __init__(self, finding: str, lower: str = "max_new_tokens, the prompt or the batch",
                 budget: str = "cache_budget_mb"):
        self.finding = finding
        super().__init__(f"{finding} (lower {lower}, or raise {budget})")

    def on_command_line(self) -> CacheBudgetError:
        return CacheBudgetError(self.finding, "--max-new-tokens or the prompt", "--cache-budget-mb")   # one prompt: no batch


@dataclass
class _Request:
    """A batch of prompts, as the loop runs it."""
    prompts: list[list[int]]
    max_new_tokens: int
    sampling: Sampling
    rng: np.random.Generator
    stop_ids: frozenset[int]
    stop_strings: tuple[str, ...]
    use_cache: bool
    lookup: int = 0    # draft tokens per call (prompt_lookup.py), 0: none
    shown_stop_ids: frozenset[int] = frozenset()   # the caller's stop ids, not end-of-text: their text is kept


class GPTPipeline(Pipeline):
    family = "gpt"
    stoppable = True   # generate's callback= (a served request streams: it stops between pieces)
    counts = "new tokens"

    def __call__(self, *args, **kwargs):
        return self.generate(*args, **kwargs)

    def __init__(self, package, sessions, config):
        super().__init__(package, sessions, config)
        c = config
        self.decoder = sessions["decoder"]
        self.n_layer, self.cache_heads, self.head_dim = c.n_layer, c.cache_heads, c.head_dim
        self.vocab_size, self.context = c.vocab_size, c.block_size
        self.eos_token_id = c.eos_token_id
        self.pad_token_id = c.padding_id
        self.tokenizer = load_tokenizer(package, c.tokenizer)
        self.chat_templates = load_chat_templates(package, c.chat_templates)
        self._cache_names = [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}")
                             for i in range(self.n_layer) for kv in ("key", "value")]
        self._last_logits_only = (isinstance(self.decoder, OrtSession) and LOGITS_TO_KEEP in
                                  {i.name for i in self.decoder.inference_session.get_overridable_initializers()})
        self._in_place = writes_cache_in_place(self.decoder)
        self._check_context()
        self._warn_if_imported_without_defaults()

    def _warn_if_imported_without_defaults(self) -> None:
        """An import by an edgegen before December 3, 2026 kept none of generation_config.json
        (its data records no generation_defaults, even an empty one): where that file asks for
        greedy decoding the package samples, as edgegen's own, and nothing said so (helper 94)."""
        data = self.config.data
        if data.get("source") == "transformers" and "generation_defaults" not in data:
            warn_caller(f"package {str(self.package.path)!r}: expected the decoding defaults of the model's "
                        "generation_config.json, found none recorded (imported by an edgegen before December 3, "
                        "2026): generate samples at temperature 1 where transformers' generate may decode "
                        "greedily; export it again from its folder (edgegen export --from-transformers DIR) to "
                        "take them, or give do_sample per call", ImportedSettingWarning)

    def _check_context(self) -> None:
        """block_size is the longest sequence the pipeline lets a request reach, so the decoder's
        position table must reach it. The graph's dims are dynamic and say nothing of the
        table's size, so one one-token call at the last position asks it, at load time (a
        shorter table makes ONNX Runtime refuse the index), not halfway through a long request."""
        feeds = {"input_ids": np.zeros((1, 1), np.int64), "position_ids": np.full((1, 1), self.context - 1, np.int64),
                 "attention_mask": np.ones((1, 1), np.int64), **self._empty_past(1, 1)}
        try:
            self.decoder.run(feeds)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own error types: the manifest is what is wrong
            raise ManifestError(f"package {str(self.package.path)!r}: block_size {self.context}: expected the decoder "
                                f"to take position {self.context - 1}, found it refused ({first_line(exc, 200)})") from None

    # ---- the user's API -------------------------------------------------------------------

    def generate(self, prompt, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, repetition_penalty: float | None = None,
                 do_sample: bool | None = None, seed: int | None = None, stop=None, use_cache: bool = True,
                 cache_budget_mb: float = DEFAULT_CACHE_BUDGET_MB, prompt_lookup_num_tokens: int = 0,
                 callback: Callable[[int, int], Any] | None = None, chat_template: str | None = None,
                 chat_template_kwargs: dict | None = None):
        """Continue one prompt or a batch of prompts.

        prompt: a string (returns the new text), a list of token ids (returns the new ids), a
        conversation, a list of {"role", "content"} messages (returns the assistant's reply),
        or a list of any one of them (a batch, left-padded; returns a list).
        chat_template, chat_template_kwargs: how a conversation becomes the prompt (chat_prompt()).
        max_new_tokens: None is 64, or what the model's context leaves after the longest prompt
        where that is fewer.
        do_sample, temperature, top_k, top_p, repetition_penalty: None takes the package's default
        (generation_defaults: an imported model's generation_config.json), else sampling at
        temperature 1 with no top-k (0 also means none), no top-p and no penalty.
        stop: a string, a token id, or a list of them; generation of a row ends at the first.
        A stop string is cut from the returned text; token ids stop after the token (its text
        kept). The package's end-of-text token always stops (its text left out).
        use_cache=False re-runs the whole sequence for every token (for checks and benchmarks).
        prompt_lookup_num_tokens=N: each decoder call also checks up to N tokens guessed from the
        sequence so far (prompt lookup decoding, prompt_lookup.py) and keeps those the model
        chooses itself: the same output, in fewer calls where the text repeats its context.
        callback(done, total): called after each new token with the new tokens so far (the longest
        row's) and max_new_tokens (the call ends sooner where every row stopped): progress, or
        an exception raised there (a deadline, a client gone) stops the call, and the pipeline
        serves the next call as before.
        """
        batch, as_text, is_batch = self._prompts(prompt, chat_template, chat_template_kwargs)
        request = self._request(batch, max_new_tokens, temperature, top_k, top_p, repetition_penalty, do_sample,
                                seed, stop, use_cache, prompt_lookup_num_tokens, cache_budget_mb)
        _check_stop_strings(request, as_text)
        callback = check_callback(callback, "(tokens done, max_new_tokens)")
        rows = [[] for _ in batch]
        texts = [_TextRow(self.tokenizer, request, ids) for ids in batch] if as_text else None
        reported = 0
        for tokens, taking, alive in self._loop(request):
            for r in np.flatnonzero(taking):
                rows[r].append(int(tokens[r]))
                if texts is not None and texts[r].add(int(tokens[r])):
                    alive[r] = False  # a stop string completed: this row is done
            # with drafts the rows of a batch take tokens at their own pace: the longest row counts
            if callback is not None and (done := max(map(len, rows))) > reported:
                reported = done
                callback(done, request.max_new_tokens)
        out = [t.finish() for t in texts] if as_text else rows
        return out if is_batch else out[0]

    def stream(self, prompt, max_new_tokens: int | None = None, temperature: float | None = None,
               top_k: int | None = None, top_p: float | None = None, repetition_penalty: float | None = None,
               do_sample: bool | None = None, seed: int | None = None, stop=None,
               cache_budget_mb: float = DEFAULT_CACHE_BUDGET_MB, prompt_lookup_num_tokens: int = 0,
               chat_template: str | None = None, chat_template_kwargs: dict | None = None) -> Iterator:
        """Like generate() for one prompt, yielding as tokens come: text pieces for a string
        prompt or a conversation (whole characters; text that might begin a stop string is held
        back until it is clear), token ids for a list of ids. The pieces join to what generate()
        returns. The arguments are checked here, before the first piece is asked for: a server
        answers a refused request with its error, not with a stream already begun."""
        batch, as_text, is_batch = self._prompts(prompt, chat_template, chat_template_kwargs)
        if is_batch:
            raise InputError(f"prompt: stream() takes one prompt, found a batch of {len(batch)} (use generate())")
        request = self._request(batch, max_new_tokens, temperature, top_k, top_p, repetition_penalty, do_sample,
                                seed, stop, True, prompt_lookup_num_tokens, cache_budget_mb)
        _check_stop_strings(request, as_text)
        return self._stream(request, batch[0] if as_text else None)

    def _stream(self, request: _Request, text_prompt: list[int] | None) -> Iterator:
        text = _TextRow(self.tokenizer, request, text_prompt) if text_prompt is not None else None
        for tokens, _, alive in self._loop(request):   # one row: it takes every token
            token = int(tokens[0])
            if text is None:
                yield token
                continue
            stopped = text.add(token)
            piece = text.take_settled()
            if piece:
                yield piece
            if stopped:
                alive[0] = False
                return
        if text is not None:
            text.finish()
            piece = text.take_settled()
            if piece:
                yield piece

    @property
    def generation_defaults(self) -> dict:
        """What generate() and stream() take for a sampling setting the call leaves at None: the
        package's (an imported model's generation_config.json), else edgegen's."""
        return {**SAMPLING_DEFAULTS, **self.config.generation_defaults}

    def cache_bytes(self, batch: int, total_tokens: int) -> int:
        """Memory of the KV cache buffers for a run: two buffers (past and present) per tensor, or
        one where the graph writes its cache in place."""
        for what, value, least in (("batch", batch, 1), ("total_tokens", total_tokens, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise InputError(f"{what}: expected a whole number of at least {least}, found {value!r}")
        return (1 if self._in_place else 2) * self.kv_cache_read_bytes(batch, total_tokens)

    def kv_cache_read_bytes(self, batch: int, tokens: float) -> int:
        """The bytes of KV cache a decoding call reads after `tokens` tokens: every layer's keys and
        values of them, float32."""
        return round(2 * self.n_layer * batch * self.cache_heads * tokens * self.head_dim * 4)

    def decode_read_bytes(self, tokens: float) -> dict[str, int]:
        """What one decoding call of one token (batch 1) must read from memory after `tokens`
        tokens, the memory-bandwidth bound's numerator: {"weights": the decoder's weights less the
        tables it looks rows up in (GraphSummary.weight_bytes_per_token), "kv_cache": the cache}."""
        path = self.package.graph_path("decoder", self.precision)
        try:   # the sessions keep the graph they opened, not its file, which this reads the weights' sizes from
            graph = read_graph_summary(path)
        except OSError as exc:
            gone = " (its package was moved or removed since)" if isinstance(exc, FileNotFoundError) else ""
            raise PackageError(f"graph 'decoder' at {str(path)!r}: expected the file this pipeline was loaded from, "
                               f"found {exc.strerror or exc}{gone}") from None
        return {"weights": graph.weight_bytes_per_token(), "kv_cache": self.kv_cache_read_bytes(1, tokens)}

    def _empty_past(self, batch: int, new_tokens: int) -> dict[str, np.ndarray]:
        """The past of a call with nothing cached yet: empty, or in the in-place form zeros with
        room for the call's tokens."""
        room = new_tokens if self._in_place else 0
        empty = np.zeros((batch, self.cache_heads, room, self.head_dim), np.float32)
        return {name: empty for name, _ in self._cache_names}

    def logits_bytes(self, batch: int, prompt_tokens: int, call_width: int = 1) -> int:
        """The prompt call's logits (the last position's, or every position's from a graph
        without logits_to_keep) and a decoding call's, `call_width` positions (a token and its drafts)."""
        return batch * ((1 if self._last_logits_only else prompt_tokens) + call_width) * self.vocab_size * 4

    # ---- checking what the user asked ------------------------------------------------------

    def _prompts(self, prompt, chat_template=None, chat_template_kwargs=None) -> tuple[list[list[int]], bool, bool]:
        """(token ids per row, whether the caller gave text or conversations, whether the caller
        gave a batch)."""
        if isinstance(prompt, np.ndarray):
            prompt = prompt.tolist()
        if is_conversation(prompt):
            return [self._encode_chat(prompt, "prompt", chat_template, chat_template_kwargs)], True, False
        if isinstance(prompt, (list, tuple)) and prompt and any(map(is_conversation, prompt)):
            if (odd := next((i for i, p in enumerate(prompt) if not is_conversation(p)), None)) is not None:
                raise InputError(f"prompt[{odd}]: expected a conversation as the batch's others are (a non-empty list "
                                 f"of message dicts), found {prompt[odd]!r:.60}")
            return [self._encode_chat(p, f"prompt[{i}]", chat_template, chat_template_kwargs)
                    for i, p in enumerate(prompt)], True, True
        if chat_template is not None or chat_template_kwargs is not None:
            given = "chat_template" if chat_template is not None else "chat_template_kwargs"
            raise InputError(f"{given}: expected with a conversation prompt (a list of {{'role', 'content'}} messages), "
                             f"found a prompt of {'text' if isinstance(prompt, str) else 'token ids'}")
        if isinstance(prompt, str):
            return [self._encode(prompt, "prompt")], True, False
        if isinstance(prompt, (list, tuple)) and prompt:
            if all(isinstance(p, str) for p in prompt):
                return [self._encode(p, f"prompt[{i}]") for i, p in enumerate(prompt)], True, True
            if all(isinstance(p, (list, tuple, np.ndarray)) for p in prompt):
                return [check_token_ids(p, self.vocab_size, f"prompt[{i}]") for i, p in enumerate(prompt)], False, True
            if not any(isinstance(p, (str, list, tuple, np.ndarray, dict)) for p in prompt):
                return [check_token_ids(prompt, self.vocab_size, "prompt")], False, False
        raise InputError(f"prompt: expected a string, a list of token ids, a conversation (a list of {{'role', 'content'}} "
                         f"messages), or a non-empty list of any one of them, found {prompt!r:.80}")

    def context_left(self, prompt, chat_template: str | None = None, chat_template_kwargs: dict | None = None) -> int:
        """The tokens the model's context leaves after `prompt` (its longest row, for a batch): the
        most max_new_tokens can be."""
        return self.context - max(len(row) for row in self._prompts(prompt, chat_template, chat_template_kwargs)[0])

    def chat_prompt(self, messages, chat_template: str | None = None, **kwargs) -> str:
        """The text generate() continues for the conversation `messages`: the model's chat
        template (an imported instruct model's, runtimes/chat.py) rendered as transformers'
        apply_chat_template(messages, tokenize=False, add_generation_prompt=True) renders it,
        ending where the assistant's reply begins. chat_template: the name of one of the
        package's templates (chat_templates.names), or Jinja source of the caller's own; None
        takes "tool_use" where kwargs pass tools and the package has it, else its default.
        kwargs: what else the template reads (tools, documents, enable_thinking, ...)."""
        return self._chat_templates(chat_template, "messages").render(messages, kwargs, chat_template)

    def _chat_templates(self, chat_template, what: str = "prompt"):
        """The package's templates; where it has none, an empty set a caller's own Jinja source
        can be rendered by (a named one is refused there, by name)."""
        if self.chat_templates is not None:
            return self.chat_templates
        if chat_template is None:
            why = ("its checkpoint folder had none, or an edgegen before December 7, 2026 imported it, which recorded "
                   "none: export it again from its folder (edgegen export --from-transformers DIR --force, then "
                   "optimize its variants again)"
                   if self.config.data.get("source") == "transformers" else "edgegen's own models are not chat models")
            raise InputError(f"{what}: a conversation needs a chat template, found none in package "
                             f"{str(self.package.path)!r} ({why}); give the prompt as text, or a Jinja template of "
                             "your own (chat_template= in Python, --chat-template FILE.jinja on the command line)")
        return ChatTemplates({}, {}, f"package {str(self.package.path)!r}")

    def _encode_chat(self, messages, what: str, chat_template, kwargs) -> list[int]:
        """A conversation's ids: its chat prompt, encoded without the tokenizer's special tokens
        (the template writes the start of text itself), as apply_chat_template encodes it."""
        self._require_tokenizer(what, "a conversation")
        text = self._chat_templates(chat_template, what).render(messages, kwargs, chat_template, what)
        return self._encode(text, what, special_tokens=False)

    def _require_tokenizer(self, what: str, given: str) -> None:
        if self.tokenizer is None:
            raise InputError(f"{what}: this package has no tokenizer (it was imported without tokenizer files), "
                             f"expected token ids (--prompt-ids on the command line), found {given}")

    def _encode(self, text: str, what: str, special_tokens: bool = True) -> list[int]:
        self._require_tokenizer(what, "text")
        # special tokens as transformers adds them: tokenizer(text) for a prompt, none for a chat template's text
        ids = self.tokenizer.encode(text, special_tokens=special_tokens)
        if not ids:
            raise InputError(f"{what}: expected at least one token of text, found an empty string")
        if beyond := [i for i in ids if i >= self.vocab_size]:   # a tokenizer may know more tokens than the model
            named = self.tokenizer.decode([beyond[0]])
            raise InputError(f"{what}: expected text of tokens the model has rows for (ids below its vocab_size "
                             f"{self.vocab_size}), found {named!r}, id {beyond[0]} (a token added to the tokenizer "
                             "after the model, such as a pad token: leave it out of the prompt)")
        return ids

    def unused_by_greedy(self, do_sample, **settings) -> list[str]:
        """The sampling settings given (not None, nor a value that changes nothing: NEUTRAL_SAMPLING)
        that greedy decoding would ignore, where it is
        greedy (do_sample False, or None with a package whose default is greedy): refused, not
        ignored. (A repetition penalty changes the logits greedy takes the largest of: it counts.)"""
        greedy = do_sample is False or (do_sample is None and not self.generation_defaults["do_sample"])
        return [name for name, value in settings.items() if value is not None and value != NEUTRAL_SAMPLING.get(name)] \
            if greedy else []

    def _request(self, batch, max_new_tokens, temperature, top_k, top_p, repetition_penalty, do_sample, seed, stop,
                 use_cache, lookup, cache_budget_mb) -> _Request:
        longest = max(len(p) for p in batch)
        # of a batch, the longest prompt is named by its index (the one to shorten)
        which = "prompt" if len(batch) == 1 else f"prompt [{max(range(len(batch)), key=lambda i: len(batch[i]))}]"
        if max_new_tokens is None:   # the default fits the prompt, as the command line's does
            if longest >= self.context:
                raise InputError(f"{which}: expected fewer tokens than the model's context of {self.context}, found "
                                 f"{longest}")
            max_new_tokens = min(DEFAULT_MAX_NEW_TOKENS, self.context - longest)
        max_new_tokens = check_count(max_new_tokens, "max_new_tokens", per_call="new tokens")
        if longest + max_new_tokens > self.context:
            raise InputError(f"{which} ({counted(longest, 'token')}) + max_new_tokens ({max_new_tokens}): expected at most the "
                             f"model's context of {self.context} tokens, found {longest + max_new_tokens}")
        if unused := self.unused_by_greedy(do_sample, temperature=temperature, top_k=top_k, top_p=top_p):
            how = "do_sample=False" if do_sample is False else "greedy decoding, this package's default"
            raise InputError(f"{unused[0]}: expected with sampling (do_sample=True), found {how}: greedy takes the most "
                             "likely token, whatever the sampling settings")
        given = {"do_sample": do_sample, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                 "repetition_penalty": repetition_penalty}
        try:
            sampling = Sampling.checked(**{name: value if value is not None else self.generation_defaults[name]
                                           for name, value in given.items()})
        except InputError as exc:   # a refused value the call did not give is the package's: say so
            name = str(exc).split(":", 1)[0]
            if given.get(name) is None and name in self.config.generation_defaults:
                raise InputError(f"{exc} (the package's default {name}; give {name} to override it)") from None
            raise
        use_cache = check_flag(use_cache, "use_cache")
        if isinstance(lookup, bool) or not isinstance(lookup, (int, np.integer)) or not 0 <= lookup < self.context:
            raise InputError(f"prompt_lookup_num_tokens: expected a whole number of draft tokens from 0 (none) to "
                             f"{self.context - 1} (a call holds them beside one token, within the model's context), "
                             f"found {lookup!r}")
        if lookup and not use_cache:
            raise InputError(f"prompt_lookup_num_tokens {lookup}: expected use_cache=True (drafts are checked against "
                             "the KV cache), found use_cache=False")
        items = _stop_items(stop)
        given_ids = {int(t) for t in items if not isinstance(t, str)}
        if given_ids:
            check_token_ids(sorted(given_ids), self.vocab_size, "stop")
        ends = set(self.config.more_eos_token_ids) | ({int(self.eos_token_id)} if self.eos_token_id is not None else set())
        stop_strings = tuple(t for t in items if isinstance(t, str))
        request = _Request(batch, max_new_tokens, sampling, make_rng(seed), frozenset(given_ids | ends), stop_strings,
                           use_cache, int(lookup), frozenset(given_ids - ends))
        self._check_budget(request, cache_budget_mb)
        return request

    def _check_budget(self, request: _Request, cache_budget_mb: float) -> None:
        """CacheBudgetError where the run's KV cache and logits need more than `cache_budget_mb`."""
        b, prompt_len = len(request.prompts), max(len(p) for p in request.prompts)
        total_max = prompt_len + request.max_new_tokens
        budget = check_number(cache_budget_mb, "cache_budget_mb", low=0.0)
        needed = self.cache_bytes(b, total_max) + self.logits_bytes(
            b, prompt_len, 1 + min(request.lookup, request.max_new_tokens))
        if needed > budget * 2**20:
            raise CacheBudgetError(f"KV cache and logits for batch {b} x {total_max} tokens: expected at most "
                                   f"the budget of {budget:g} MB, found {needed / 2**20:.3g} MB needed")

    # ---- the loop --------------------------------------------------------------------------

    def _loop(self, request: _Request) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (tokens [batch], taking [batch], alive [batch]) per position: each row in `taking`
        takes tokens[r] as its next token. Without drafts every row still going takes one per
        step; with them a row takes as many per call as its drafts held. A caller may clear
        alive[r] to end row r (a stop string); the loop ends when every row has ended."""
        b = len(request.prompts)
        lengths = np.array([len(p) for p in request.prompts])
        prompt_len, total_max = int(lengths.max()), int(lengths.max()) + request.max_new_tokens
        pad = prompt_len - lengths                     # left padding per row
        ids = np.full((b, prompt_len), self.pad_token_id, np.int64)
        for r, p in enumerate(request.prompts):
            ids[r, pad[r]:] = p
        mask_full = (np.arange(total_max)[None, :] >= pad[:, None]).astype(np.int64)
        positions = np.maximum(np.cumsum(mask_full[:, :prompt_len], axis=1) - 1, 0)
        seen = None
        if request.sampling.repetition_penalty != 1.0:
            seen = np.zeros((b, self.vocab_size), bool)
            for r, p in enumerate(request.prompts):
                seen[r, p] = True
        alive = np.ones(b, bool)
        # sized by the vocabulary, not by the largest stop id (an eos of 10**9 was a 1 GB array per
        # call): an id the model cannot produce needs no entry
        is_stop = np.zeros(self.vocab_size, bool)
        is_stop[[t for t in request.stop_ids if 0 <= t < self.vocab_size]] = True
        steps = (self._cached_steps(ids, positions, mask_full, request.max_new_tokens, request.lookup, alive)
                 if request.use_cache else self._uncached_steps(ids, positions, mask_full))
        logits, drafts = next(steps)
        made = np.zeros(b, np.int64)   # tokens each row has taken
        draws = _Draws(request.rng, b) if request.sampling.do_sample else None
        rows = np.arange(b)
        while True:
            if logits.shape[1] == 1:   # no drafts: every row still going takes this token (kept short: the common call)
                tokens = next_tokens(logits[:, 0], seen, request.sampling, None, None if draws is None else draws.at(made),
                                     alive)
                if seen is not None:
                    seen[rows, tokens] = True
                yield tokens, alive, alive
                made += alive
                alive &= ~is_stop[tokens] & (made < request.max_new_tokens)
                if not alive.any():
                    return
                logits, drafts = steps.send((tokens[:, None], None))
                continue
            width = logits.shape[1]
            chosen, kept = np.zeros((b, width), np.int64), np.zeros(b, np.int64)
            taking = alive.copy()   # the rows whose drafts so far held: this position's token is theirs
            for j in range(width):   # the call's positions: its first token's, then each draft's
                # a row's n-th token takes the n-th uniform number drawn for it, as without drafts
                uniforms = None if draws is None else draws.at(made)
                tokens = next_tokens(logits[:, j], seen, request.sampling, None, uniforms, taking)
                if seen is not None:
                    seen[rows[taking], tokens[taking]] = True
                chosen[:, j] = tokens
                kept += taking
                yield tokens, taking, alive
                made += taking
                alive &= ~(taking & is_stop[tokens]) & (made < request.max_new_tokens)
                if not alive.any():
                    return
                # the next position's logits followed draft j: a row takes them only where it chose
                # that draft (a chosen token is the one decoding without drafts makes)
                taking &= alive
                if j < drafts.shape[1]:
                    taking &= tokens == drafts[:, j]
                if not taking.any():
                    break
            logits, drafts = steps.send((chosen, kept))

    def _cached_steps(self, ids, positions, mask_full, max_new_tokens, lookup, alive) -> Iterator[tuple]:
        """Prefill, then decoding calls: yields (logits [batch, n, vocab], drafts [batch, n - 1])
        per call and is sent the tokens chosen from them and how many each row took, ([batch, n],
        [batch]): row r's first kept[r] (its tokens up to its first rejected draft, and one more);
        after a call without drafts, ([batch, 1], None): every row still going took one.
        A call takes each row's last chosen token and, with `lookup`, up to that many drafts
        (prompt_lookup.py) where every row still going (`alive`, the loop's) has some. The cache
        keeps, per row, the positions of the inputs its chosen tokens confirm; rows that kept
        different counts are re-laid so that each row's cache still ends at the same slot, the
        shorter ones behind more padding. Without drafts the per-token work is a fixed number of
        bindings by address. A long prompt is prefilled PREFILL_CHUNK tokens per call, where the
        graph computes only the last position's logits (logits_to_keep)."""
        b, prompt_len = ids.shape
        total_max = prompt_len + max_new_tokens
        binding = self._binding()
        cache = (_InPlaceCache if self._in_place else _CopiedCache)(binding, self._cache_names, b, self.cache_heads,
                                                                    self.head_dim, total_max)
        mask = mask_full.copy()   # each row's padding as the cache lays it out (rows move: set_padding)
        uniform = bool(mask.all())  # no padding: every mask is a prefix of one buffer of ones
        ones = np.ones(b * total_max, np.int64)
        ones_address = ones.ctypes.data
        chunk = PREFILL_CHUNK if self._last_logits_only else prompt_len   # else each chunk computes all its logits
        logits_prefill = np.empty((b, 1 if self._last_logits_only else prompt_len, self.vocab_size), np.float32)
        calls = _CallBuffers(b, 1 + min(lookup, max_new_tokens), self.vocab_size, self._last_logits_only)
        keep_one = np.ones(1, np.int64)
        if self._last_logits_only:   # one position's logits from each prompt chunk
            binding.input(LOGITS_TO_KEEP, keep_one)
        binding.output("logits", logits_prefill)

        def call(past: int, total: int) -> None:
            """One run: the tokens from `past` to `total`."""
            if total > total_max:   # the buffers are bound by address: a slot past them would be written blind
                raise RuntimeError(f"generation loop: a call to slot {total} of a cache of {total_max} (a bug)")
            if uniform:
                binding.bind_input("attention_mask", ones.dtype, [b, total], ones_address)
            else:
                binding.input("attention_mask", np.ascontiguousarray(mask[:, :total]))  # O(batch x total) int copy
            cache.bind(past, total)
            binding.run()

        def set_padding(pad: np.ndarray) -> None:
            nonlocal uniform
            mask[:] = np.arange(total_max)[None, :] >= pad[:, None]
            uniform = not pad.any()

        chunks = [(np.ascontiguousarray(ids[:, s:s + chunk]), np.ascontiguousarray(positions[:, s:s + chunk]))
                  for s in range(0, prompt_len, chunk)]   # kept alive: the binding reads them by address
        for n, (chunk_ids, chunk_positions) in enumerate(chunks):
            binding.input("input_ids", chunk_ids)
            binding.input("position_ids", chunk_positions)
            call(n * chunk, min((n + 1) * chunk, prompt_len))
        no_drafts = np.empty((b, 0), np.int64)
        chosen, _ = yield logits_prefill[:, -1:], no_drafts
        rows = _Rows(ids, positions, chosen[:, 0], total_max)
        count = lookup   # drafts per call: after a rejection, the most any row kept plus one
        once = np.ones(b, np.int64)   # what each row keeps of a call without drafts
        pause = wait = 0   # calls without drafts after a call whose drafts were all rejected, and how many are left
        while True:
            drafts = no_drafts
            if lookup and not wait:
                # drafts the run has room for: within the cache's slots, and no more than the row furthest
                # behind still needs (once a row ahead has ended, the slots can be fewer than the prompt's)
                room = min(total_max - rows.past - 2, max_new_tokens - 1 - rows.fewest_made(alive))
                drafts = batch_drafts(rows.sequences, rows.lengths, min(count, room), alive, self.pad_token_id)
            wait = max(0, wait - 1)
            width = 1 + drafts.shape[1]
            logits = calls.bind(binding, width)
            calls.fill(rows.latest, drafts, rows.positions())
            call(rows.past, rows.past + width)
            going = np.count_nonzero(alive)
            chosen, kept = yield logits, drafts   # kept: each row's first token and the drafts it confirmed
            if kept is None and np.count_nonzero(alive) == going:   # a call without drafts, no row ended
                rows.took_one(chosen[:, 0], alive, record=bool(lookup))
                continue
            live = alive.copy()
            kept = once if kept is None else kept
            top = rows.took(chosen, kept, live)
            if width > 1:   # fewer drafts where they were rejected (each costs compute), more where all held
                count = min(lookup, top)
                # none kept: look again only after a pause that doubles while drafts keep failing, so
                # text that does not repeat (or a batch whose rows rarely agree) pays for few of them
                pause = min(2 * pause or 1, LOOKUP_MAX_PAUSE) if top == 1 else 0
                wait = pause
            written = rows.past + width
            offsets = rows.realign(kept, top, live)
            if offsets is not None and offsets[live].any():
                cache.keep(written, rows.past, rows.pad, offsets, live)
            elif rows.past < written:   # the same count kept by every row: the rest held rejected drafts
                cache.keep(written, rows.past)
            if offsets is not None and offsets.any():
                set_padding(rows.pad)

    def _uncached_steps(self, ids, positions, mask_full) -> Iterator[tuple]:
        """The reference loop: the whole sequence through the graph for every token, empty past.
        Yields as _cached_steps does, without drafts."""
        b = ids.shape[0]
        sequence, pos = ids, positions
        while True:
            total = sequence.shape[1]
            out = self.decoder.run({"input_ids": sequence, "position_ids": pos,
                                    "attention_mask": np.ascontiguousarray(mask_full[:, :total]),
                                    **self._empty_past(b, total)})
            chosen, _ = yield out["logits"][:, -1:], np.empty((b, 0), np.int64)
            sequence = np.concatenate([sequence, np.asarray(chosen[:, -1:], np.int64)], axis=1)
            pos = np.concatenate([pos, pos[:, -1:] + 1], axis=1)

    def _binding(self) -> OrtBinding:
        if not isinstance(self.decoder, OrtSession):
            raise InputError(f"backend {self.backend!r}: the KV-cache loop needs an ONNX Runtime session (ort-cpu, ort-cuda, "
                             "ort-tensorrt; on TensorRT's own backend, use_cache=False runs without it)")
        return OrtBinding(self.decoder)


class _Rows:
    """The rows of a batch as decoding calls see them: each row's tokens so far (its prompt, then
    those chosen; drafts are looked up in them), its left padding among the cache's slots, and the
    slots the cache holds, the same for every row. A live row's position at slot s is s - pad[r]."""

    def __init__(self, ids: np.ndarray, positions: np.ndarray, first: np.ndarray, total_max: int):
        b, prompt_len = ids.shape
        self._index = np.arange(b)
        self.pad = prompt_len - 1 - positions[:, -1]
        self._prompt_lengths = prompt_len - self.pad
        self.lengths = self._prompt_lengths + 1   # the first token chosen included
        self.sequences = np.empty((b, total_max), np.int64)
        for r in self._index:
            self.sequences[r, :self._prompt_lengths[r]] = ids[r, self.pad[r]:]
        self.sequences[self._index, self._prompt_lengths] = first
        self.latest = first   # each row's last chosen token: not in the cache yet, the next call's first
        self.past = prompt_len

    def fewest_made(self, alive: np.ndarray) -> int:
        """The fewest tokens a row still going has made."""
        return int((self.lengths - self._prompt_lengths)[alive].min())

    def positions(self) -> np.ndarray:
        """The next call's first position per row: a live row's length - 1; a row that has ended
        (no padding) stays within the slots, so within the model's positions."""
        return self.past - self.pad

    def took_one(self, tokens: np.ndarray, alive: np.ndarray, record: bool) -> None:
        """A call without drafts, after which every row still going has one more token (rows that
        have ended write a slot of theirs no one reads); `record`: keep them for lookups."""
        self.latest = tokens
        if record:
            self.sequences[self._index, self.lengths] = tokens
        self.lengths += alive
        self.past += 1

    def took(self, chosen: np.ndarray, kept: np.ndarray, live: np.ndarray) -> int:
        """Each live row took the first kept[r] of its chosen tokens; the most any row took."""
        self.latest = chosen[self._index, np.maximum(kept - 1, 0)]
        for r in np.flatnonzero(live):
            self.sequences[r, self.lengths[r]:self.lengths[r] + kept[r]] = chosen[r, :kept[r]]
        self.lengths[live] += kept[live]
        return int(kept[live].max())

    def realign(self, kept: np.ndarray, top: int, live: np.ndarray) -> np.ndarray | None:
        """The slots after a call where each live row kept kept[r] of its inputs' positions (`top`
        the most). A row that kept fewer than `top` moves right by the difference, its padding
        growing, so that every row's cache ends at one slot; then every row moves left by the
        padding all live rows have, so that some live row starts at slot 0 and the cache never
        outgrows the run. Rows that have ended stay where they are: their cache is not read.
        How far each row's slots moved left (negative: right), or None where no padding changed."""
        if (kept[live] == top).all() and not self.pad[live].min():
            self.past += top
            return None
        shifted = self.pad + top - kept
        lowest = int(shifted[live].min())
        new_pad = np.where(live, shifted - lowest, 0)
        offsets = self.pad - new_pad
        self.pad, self.past = new_pad, self.past + top - lowest
        return offsets


_F32 = np.dtype(np.float32)   # the caches' dtype, built once, not per token


class _CallBuffers:
    """A decoding call's token ids, positions and logits: flat buffers for the widest call (a token
    and its drafts), bound by address at each call's width, and again only when the width changes."""

    def __init__(self, batch: int, widest: int, vocab: int, keep_logits: bool):
        self._batch, self._vocab, self._keep_logits = batch, vocab, keep_logits
        self._ids, self._positions = np.empty(batch * widest, np.int64), np.empty(batch * widest, np.int64)
        self._logits = np.empty(batch * widest * vocab, np.float32)
        self._counts = np.arange(widest + 1, dtype=np.int64)   # logits_to_keep: the call's width, by address
        self._width, self._widest = 0, widest

    def bind(self, binding: OrtBinding, width: int) -> np.ndarray:
        """Bind the buffers at this width; the logits [batch, width, vocab] the call will write."""
        b, v = self._batch, self._vocab
        if width > self._widest:   # the buffers are bound by address: a wider call would run past them
            raise RuntimeError(f"generation loop: a call of {width} tokens per row, buffers for {self._widest} (a bug)")
        if width != self._width:
            binding.bind_input("input_ids", self._ids.dtype, [b, width], self._ids.ctypes.data)
            binding.bind_input("position_ids", self._positions.dtype, [b, width], self._positions.ctypes.data)
            binding.bind_output("logits", _F32, [b, width, v], self._logits.ctypes.data)
            if self._keep_logits:
                binding.bind_input(LOGITS_TO_KEEP, self._counts.dtype, [1],
                                   self._counts.ctypes.data + width * self._counts.itemsize)
            self._width = width
        return self._logits[:b * width * v].reshape(b, width, v)

    def fill(self, tokens: np.ndarray, drafts: np.ndarray, first_positions: np.ndarray) -> None:
        """The call's inputs: each row's token, then its drafts, from its position on."""
        b, width = self._batch, 1 + drafts.shape[1]
        if width == 1:   # decoding without drafts: the common call, kept to two copies
            self._ids[:b], self._positions[:b] = tokens, first_positions
            return
        ids = self._ids[:b * width].reshape(b, width)
        ids[:, 0], ids[:, 1:] = tokens, drafts
        self._positions[:b * width].reshape(b, width)[:] = first_positions[:, None] + np.arange(width)


class _CopiedCache:
    """The exported form's KV cache: two flat buffers per tensor, allocated once for the run; each
    call reads the past from one and the graph writes the grown cache (a copy) into the other."""

    def __init__(self, binding: OrtBinding, names: list, batch: int, heads: int, head_dim: int, total_max: int):
        self._binding, self._names, self._shape = binding, names, (batch, heads, head_dim)
        self._buffers = [[np.zeros(batch * heads * total_max * head_dim, np.float32) for _ in names] for _ in range(2)]
        self._addresses = [[buffer.ctypes.data for buffer in side] for side in self._buffers]
        self._side = 0   # the side holding the past

    def bind(self, past: int, total: int) -> None:
        b, h, d = self._shape
        for (past_name, present_name), src, dst in zip(self._names, self._addresses[self._side],
                                                        self._addresses[1 - self._side]):
            self._binding.bind_input(past_name, _F32, [b, h, past, d], src)
            self._binding.bind_output(present_name, _F32, [b, h, total, d], dst)
        self._side = 1 - self._side

    def keep(self, written: int, kept: int, starts: np.ndarray | None = None, offsets: np.ndarray | None = None,
             live: np.ndarray | None = None) -> None:
        """The last call wrote `written` positions; the next call's past is `kept` of them. Without
        `starts`, each row's first `kept` (the rest held rejected drafts). With them, the live
        rows' slots from starts[r] on, each taken from offsets[r] slots further (negative: nearer):
        rows that kept fewer drafts than others move right. Copied into the other buffer (the
        past the call read, no longer needed), which becomes the next call's past: one pass over
        the cache."""
        b, h, d = self._shape
        for present, other in zip(self._buffers[self._side], self._buffers[1 - self._side]):
            if starts is None:
                other[:b * h * kept * d].reshape(b * h, kept * d)[:] = \
                    present[:b * h * written * d].reshape(b * h, written * d)[:, :kept * d]
                continue
            source = present[:b * h * written * d].reshape(b, h, written, d)
            target = other[:b * h * kept * d].reshape(b, h, kept, d)
            for r in np.flatnonzero(live):
                target[r, :, starts[r]:] = source[r, :, starts[r] + offsets[r]:kept + offsets[r]]
        self._side = 1 - self._side


class _InPlaceCache:
    """The in-place form's KV cache: one flat buffer per tensor, bound as both the past and the
    present at a capacity that grows CACHE_GROWTH tokens at a time. Attention reads the whole
    capacity, so a capacity of the run's end from the start would make a long prompt's first
    chunks attend over every position to come (a 1,024-token prompt in chunks of 256 reached its
    first token 1.2-1.4x later). Growing re-lays the buffer, [batch, heads, capacity, head_dim], at
    the wider stride: one copy of the cache per CACHE_GROWTH tokens."""

    def __init__(self, binding: OrtBinding, names: list, batch: int, heads: int, head_dim: int, total_max: int):
        self._binding, self._names, self._shape, self._total_max = binding, names, (batch, heads, head_dim), total_max
        # zeros: attention reads the positions not written yet too, with weight 0 (NaN from
        # uninitialized memory would survive that; what re-laying leaves there is finite)
        self._buffers = [np.zeros(batch * heads * total_max * head_dim, np.float32) for _ in names]
        self._capacity = 0

    def bind(self, past: int, total: int) -> None:
        if total <= self._capacity:
            return
        b, h, d = self._shape
        rows, old = b * h, self._capacity
        new = min(self._total_max, -(-total // CACHE_GROWTH) * CACHE_GROWTH)
        for (past_name, present_name), buffer in zip(self._names, self._buffers):
            if old:   # each row's positions to where the wider stride puts them
                kept = buffer[:rows * old * d].reshape(rows, old * d).copy()
                buffer[:rows * new * d].reshape(rows, new * d)[:, :old * d] = kept
            self._binding.bind_input(past_name, _F32, [b, h, new, d], buffer.ctypes.data)
            self._binding.bind_output(present_name, _F32, [b, h, new, d], buffer.ctypes.data)
        self._capacity = new

    def keep(self, written: int, kept: int, starts: np.ndarray | None = None, offsets: np.ndarray | None = None,
             live: np.ndarray | None = None) -> None:
        """As _CopiedCache.keep, in the one buffer. Positions past `kept` that the last call wrote
        (rejected drafts) need nothing: the mask hides them and the next call writes over them.
        Rows that move (offsets[r] != 0) are re-laid in place."""
        if starts is None:
            return
        b, h, d = self._shape
        layouts = [buffer[:b * h * self._capacity * d].reshape(b, h, self._capacity, d) for buffer in self._buffers]
        for r in np.flatnonzero(live & (offsets != 0)):
            for layout in layouts:   # source and target overlap: numpy copies through a temporary
                layout[r, :, starts[r]:kept] = layout[r, :, starts[r] + offsets[r]:kept + offsets[r]]


class _Draws:
    """The uniform numbers sampling draws, one per row per token, drawn ahead in blocks in the order
    decoding without drafts draws them (a row at a time within a token, a token at a time), so
    that each row's n-th token takes the same number however far ahead of the others drafts took it."""

    BLOCK = 64   # tokens per block drawn

    def __init__(self, rng: np.random.Generator, batch: int):
        self._rng, self._rows = rng, np.arange(batch)
        self._table = np.empty((0, batch))

    def at(self, made: np.ndarray) -> np.ndarray:
        """Each row's uniform number for its token number made[r] (0-based)."""
        needed = int(made.max()) + 1
        if needed > len(self._table):
            blocks = -(-(needed - len(self._table)) // self.BLOCK)
            self._table = np.concatenate([self._table, self._rng.random((blocks * self.BLOCK, len(self._rows)))])
        return self._table[made, self._rows]


def _check_stop_strings(request: _Request, as_text: bool) -> None:
    if request.stop_strings and not as_text:
        raise InputError(f"stop: expected token ids for a prompt of token ids, found text {list(request.stop_strings)} "
                         "(give the prompt as text to stop at text)")


def _stop_items(stop) -> list:
    if stop is None:
        return []
    items = stop if isinstance(stop, (list, tuple)) else [stop]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)) or (isinstance(item, str) and not item):
            raise InputError(f"stop: expected non-empty strings or token ids, found {item!r}")
        if isinstance(item, str):   # one no text can hold (bytes the command line could not decode) never stops
            utf8_text(item, "stop")
    return list(items)


class _TextRow:
    """One row's text as tokens arrive: incremental decoding, stop strings, and the part that
    is safe to show (nothing that could still turn out to be the start of a stop string)."""

    def __init__(self, tokenizer, request: _Request, prompt: list[int]):
        self._decoder = tokenizer.stream_decoder(prompt)   # the new text continues the prompt's
        self._stops, self._stop_ids, self._shown_ids = request.stop_strings, request.stop_ids, request.shown_stop_ids
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._text = []          # settled pieces, already given out by take_settled or kept for finish
        self._pending = ""       # decoded text not yet settled
        self._given = 0
        self.stopped = False

    def add(self, token: int) -> bool:
        """Add a token's text; True when a stop string has completed (the text is cut there)."""
        if self.stopped:
            return True
        if token in self._stop_ids:  # end of text: its own text (e.g. "<|endoftext|>") is not shown
            # a stop id of the caller's ends the row after the token, as it does for token ids
            self._pending += (self._decoder.step(token) if token in self._shown_ids else "") + self._decoder.flush()
            self._cut_at_a_stop()   # the shown token's text may complete a stop string too
            self.stopped = True
            self._settle(len(self._pending))
            return True
        self._pending += self._decoder.step(token)
        if self._cut_at_a_stop():
            self.stopped = True
            self._settle(len(self._pending))
            return True
        self._settle(max(0, len(self._pending) - self._hold))
        return False

    def _cut_at_a_stop(self) -> bool:
        """Cut the pending text where the first stop string in it starts, whatever their order in
        the list (cut in list order, "(" before "t__(" kept the "t__" of "__init__(")."""
        starts = [at for stop in self._stops if (at := self._pending.find(stop)) >= 0]
        if starts:
            self._pending = self._pending[:min(starts)]
        return bool(starts)

    def _settle(self, n: int) -> None:
        if n:
            self._text.append(self._pending[:n])
            self._pending = self._pending[n:]

    def take_settled(self) -> str:
        piece = "".join(self._text[self._given:])
        self._given = len(self._text)
        return piece

    def finish(self) -> str:
        if not self.stopped:
            self._pending += self._decoder.flush()   # bytes held for a character: a stop string may end in them
            self.stopped = self._cut_at_a_stop()
            self._settle(len(self._pending))
        return "".join(self._text)


HELD_OUT_WINDOW = 64      # tokens per teacher-forced window of a weight-only variant's gate


def held_out_windows(package, config: GPTConfig, count: int, seed: int = 0,
                     extra: int = 0) -> tuple[list[dict], str, dict, str]:
    """Prompt calls of the decoder over windows of held-out text (the standard library's
    held-out files, never trained on), batches of 8, and where they come from: the gate of
    weight-only variants (edgegen optimize --precision int4) compares next-token predictions
    and perplexity on them. Needs no checkpoint, so imported packages are gated the same way.
    A package without a tokenizer gets random ids in its vocabulary. `extra` batches follow the
    `count` ones, over windows that overlap none of theirs (int8's calibration beside the gate).
    Then the call a variant's speed is judged at, and its description: one decode step at batch 1
    after a window, the call that decoding repeats and whose weight reads weight-only
    quantization shrinks."""
    from ...training.text import read_corpus

    rng = np.random.default_rng(seed)
    length = min(HELD_OUT_WINDOW, config.block_size)
    tokenizer = load_tokenizer(package, config.tokenizer)
    if tokenizer is None:
        ids, source = rng.integers(0, config.vocab_size, 1 << 16), "random token ids (the package has no tokenizer)"
    else:
        text = read_corpus("stdlib")[1][:1 << 20].decode("utf-8", errors="replace")
        ids, source = np.asarray(tokenizer.encode(text)), "held-out standard-library text"
    starts = rng.integers(0, len(ids) - length, (count, 8))
    past = rng.standard_normal((1, config.cache_heads, length, config.head_dim), dtype=np.float32)
    if extra:
        starts = np.concatenate([starts, _starts_apart(rng, starts.ravel(), len(ids), length, extra * 8).reshape(extra, 8)])
    empty = np.zeros((8, config.cache_heads, 0, config.head_dim), np.float32)
    feeds = [{"input_ids": np.stack([ids[s:s + length] for s in row]).astype(np.int64),
              "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (8, length)).copy(),
              "attention_mask": np.ones((8, length), np.int64),
              **{f"past_key_values.{i}.{kv}": empty for i in range(config.n_layer) for kv in ("key", "value")}}
             for row in starts]
    step = {"input_ids": feeds[0]["input_ids"][:1, -1:], "position_ids": np.full((1, 1), length, np.int64),
            "attention_mask": np.ones((1, length + 1), np.int64),
            **{f"past_key_values.{i}.{kv}": past for i in range(config.n_layer) for kv in ("key", "value")}}
    return feeds, source, step, f"a decode step at batch 1 after {length} tokens"


def _starts_apart(rng: np.random.Generator, taken: np.ndarray, size: int, length: int, count: int) -> np.ndarray:
    """`count` window starts in a text of `size` tokens whose windows of `length` overlap none of
    those starting at `taken`."""
    found = np.empty(0, np.int64)
    for _ in range(100):
        candidates = rng.integers(0, size - length, 4 * count)
        apart = np.abs(candidates[:, None] - taken[None, :]).min(axis=1) >= length
        found = np.concatenate([found, candidates[apart]])
        if len(found) >= count:
            return found[:count]
    raise InputError(f"held-out text of {size} tokens: expected room for {count} windows of {length} apart from "
                     f"{len(taken)} others, found too little")
