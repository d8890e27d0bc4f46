"""The text-to-image pipeline (Stable Diffusion's layout): prompts through the tokenizer and the
text encoder graph, the latent diffusion loops over a cross-attention UNet with classifier-free
guidance against a negative prompt, and the autoencoder's graphs in and out of latent space.

Runtime code: numpy, and the `tokenizers` library (the text extra) for the prompt.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import EdgegenWarning, InputError, ManifestError, warn_caller
from ...runtimes.pipeline import check_count, check_number
from ...runtimes.samplers import Callback
from ...runtimes.tokenizer import load_tokenizer
from .. import dim_problems, positive
from ..diffusion.pipeline import DEFAULT_STEPS, DEFAULT_STRENGTH, MAX_GUIDANCE
from ..ldm.pipeline import LatentDiffusionConfig, LatentDiffusionPipeline

DEFAULT_TEXT_GUIDANCE = 7.5     # diffusers' Stable Diffusion default
PROMPT_CACHE_SIZE = 64          # encoded prompts kept: a repeated prompt skips the text encoder


@dataclass(kw_only=True)
class TextToImageConfig(LatentDiffusionConfig):
    """The latent diffusion config, conditioned on text: the prompt's tokens and their padding."""
    tokenizer: dict          # {"kind": "bpe", "file", "sha256"}: the text encoder's tokenizer.json
    max_length: int          # tokens per prompt, cut or padded to it (CLIP's 77)
    pad_token_id: int

    def problems(self) -> list[str]:
        problems = super().problems() + positive(self, "max_length")
        if self.tokenizer.get("kind") != "bpe":
            problems.append(f"tokenizer.kind expected 'bpe', found {self.tokenizer.get('kind')!r}")
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            problems.append(f"pad_token_id expected a token id (0 or more), found {self.pad_token_id!r}")
        return problems

    def graph_problems(self, graphs: dict) -> list[str]:
        """And the prompt's tokens are the text encoder's, and its states the UNet's."""
        return super().graph_problems(graphs) + dim_problems(
            graphs, [("text_encoder", "input_ids", 1, "max_length", self.max_length),
                     ("unet", "encoder_hidden_states", 1, "max_length", self.max_length)])


@dataclass(frozen=True)
class Prompts:
    """Encoded prompts, one row per image: the text encoder's states for the prompt and for the
    negative prompt (None without guidance)."""

    positive: np.ndarray
    negative: np.ndarray | None


class TextToImagePipeline(LatentDiffusionPipeline):
    family = "text2image"
    merges_calls = False   # sample_batched merges class labels; prompts run call by call

    def __init__(self, package, sessions, config):
        super().__init__(package, sessions, config)
        self.tokenizer = load_tokenizer(package, config.tokenizer)
        if config.pad_token_id >= self.tokenizer.vocab_size:   # ONNX Runtime's Gather said it, at the first prompt
            raise ManifestError(f"package {str(package.path)!r}: edgegen.json config: pad_token_id expected an id of "
                                f"its tokenizer (below {self.tokenizer.vocab_size}), found {config.pad_token_id}")
        self._encoded: OrderedDict[str, np.ndarray] = OrderedDict()
        self._encoding = threading.Lock()

    def __call__(self, prompt, negative_prompt=None, **kwargs) -> np.ndarray:
        return self.sample(prompt, negative_prompt, **kwargs)

    # -- prompts -------------------------------------------------------------------------------

    def encode_prompt(self, prompts: str | list[str], what: str = "prompt") -> np.ndarray:
        """The text encoder's last hidden states [len(prompts), max_length, hidden] for each prompt;
        a prompt seen lately comes from the cache, not the encoder. `what`: the prompts' name in
        a message (negative_prompt), with the index of a prompt's first place where they differ."""
        texts = _texts(prompts, what)
        with self._encoding:   # the cache is shared: another thread's call would evict what this one reads
            missing = list(dict.fromkeys(t for t in texts if t not in self._encoded))
            if missing:
                labels = [what if len(set(texts)) == 1 else f"{what}[{texts.index(t)}]" for t in missing]
                ids = self.tokenizer.encode_padded(missing, self.config.max_length, self.config.pad_token_id, labels)
                self._say_words_not_trained(missing, labels)
                # in calls of ROWS_PER_CALL, as every graph: a list of prompts was one call's activations
                states = self.sessions["text_encoder"].run_rows({"input_ids": ids})["last_hidden_state"]
                for text, row in zip(missing, states):
                    self._encoded[text] = row.copy()   # a view kept the whole call's array alive past the cache's bound
            states = np.stack([self._encoded[t] for t in texts])
            for text in texts:
                self._encoded.move_to_end(text)
            while len(self._encoded) > PROMPT_CACHE_SIZE:   # after the stack: a call may hold more prompts
                self._encoded.popitem(last=False)
        return states

    def _say_words_not_trained(self, texts: list[str], labels: list[str]) -> None:
        """A model trained here (text2image-digits, or on one's captioned pictures) has one token for
        each word of its captions: a prompt's word in pieces is one it never saw, said (a prompt of
        unknown words gave pictures of nothing asked, without a word). Not for imported pipelines,
        whose CLIP vocabulary spells many real words in pieces."""
        if "captions" not in self.config.data:
            return
        for label, text in zip(labels, texts):
            if unknown := self.tokenizer.words_in_pieces(text):
                warn_caller(f"{label}: {', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}: "
                            f"{'words' if len(unknown) > 1 else 'a word'} the model's training captions did not hold, "
                            "spelled in pieces it has seen little of (its vocabulary is its captions' words)",
                            EdgegenWarning, remembered=False)

    def prompts(self, prompt, negative_prompt, n: int, guidance_scale: float) -> Prompts:
        """Each prompt's states repeated for its n images; the negative prompt's ("" when None, as
        diffusers) where guidance is on (guidance_scale > 1)."""
        texts = _texts(prompt, "prompt")
        # the call's images, not only n per prompt: 60,000 of 2 prompts ran a UNet call of 120,000 rows
        check_count(len(texts) * n, "prompts x n" if len(texts) > 1 else "n")
        positive = np.repeat(self.encode_prompt(texts), n, axis=0)
        if guidance_scale <= 1.0:
            # "" is the negative prompt guidance has without one: the same images, not a setting ignored
            if negative_prompt is not None and any(_texts(negative_prompt, "negative_prompt")):
                raise InputError(f"negative_prompt: expected none with guidance_scale {guidance_scale:g} (guidance "
                                 f"is on above 1, where the negative prompt steers away), found {negative_prompt!r:.60}")
            return Prompts(positive, None)
        negative = _texts("" if negative_prompt is None else negative_prompt, "negative_prompt")
        if len(negative) == 1:
            negative = negative * len(texts)
        if len(negative) != len(texts):
            raise InputError(f"negative_prompt: expected one, or one per prompt ({len(texts)}), found {len(negative)}")
        return Prompts(positive, np.repeat(self.encode_prompt(negative, "negative_prompt"), n, axis=0))

    def conditioned_denoiser(self, condition: Prompts, n: int, guidance_scale: float, feeds=None):
        """model_fn(x, t): the UNet on the prompt's states; with guidance, the negative and the
        positive branch as one batch of 2n, combined as diffusers does."""
        session = self.sessions["unet"]
        if len(condition.positive) != n:
            raise InputError(f"prompts: expected {n} rows of states, found {len(condition.positive)}")
        if condition.negative is None:
            return lambda x, t: session.run_rows({"sample": x, "timestep": t,
                                             "encoder_hidden_states": condition.positive})["prediction"]
        both = np.concatenate([condition.negative, condition.positive])
        scale = np.float32(guidance_scale)

        def guided(x, t):
            out = session.run_rows({"sample": np.concatenate([x, x]), "timestep": np.concatenate([t, t]),
                               "encoder_hidden_states": both})["prediction"]
            negative, positive = np.split(out, 2)
            return negative + scale * (positive - negative)

        return guided

    # -- the public API -------------------------------------------------------------------------

    def sample(self, prompt, negative_prompt=None, n: int = 1, steps: int = DEFAULT_STEPS, sampler: str | None = None,
               guidance_scale: float = DEFAULT_TEXT_GUIDANCE, seed: int | None = None, eta: float = 0.0,
               callback: Callback | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        """n images per prompt [len(prompts) * n, C, H, W] in [0, 1]. prompt: a text or a list;
        negative_prompt: what guidance steers away from (default ""); guidance_scale 1 or less
        turns guidance off. noise: the starting latents [rows, *latent_shape], as diffusers'
        `latents=` (then seed only drives a stochastic sampler)."""
        guidance_scale = check_number(guidance_scale, "guidance_scale", -MAX_GUIDANCE, MAX_GUIDANCE)
        condition = self.prompts(prompt, negative_prompt, check_count(n), guidance_scale)
        return self._sample(len(condition.positive), steps, sampler, guidance_scale, condition, seed, eta, callback,
                            noise=noise)

    def img2img(self, prompt, image, negative_prompt=None, strength: float = DEFAULT_STRENGTH, steps: int = DEFAULT_STEPS,
                sampler: str | None = None, guidance_scale: float = DEFAULT_TEXT_GUIDANCE, seed: int | None = None,
                eta: float = 0.0, callback: Callback | None = None) -> np.ndarray:
        """Noise `image` ([n, C, H, W] in [0, 1]) part of the way in latent space (strength 0:
        unchanged, 1: all the way) and denoise it back toward the prompt (one, or one per image)."""
        images = self._images(image)
        guidance_scale = check_number(guidance_scale, "guidance_scale", -MAX_GUIDANCE, MAX_GUIDANCE)
        condition = self._per_image(prompt, negative_prompt, len(images), guidance_scale)
        return self._img2img(images, strength, steps, sampler, guidance_scale, condition, seed, eta, callback)

    def inpaint(self, prompt, image, mask, negative_prompt=None, steps: int = DEFAULT_STEPS, sampler: str | None = None,
                guidance_scale: float = DEFAULT_TEXT_GUIDANCE, seed: int | None = None, eta: float = 0.0,
                callback: Callback | None = None) -> np.ndarray:
        """Generate where mask is 1 from the prompt and keep the rest of `image`."""
        images = self._images(image)
        guidance_scale = check_number(guidance_scale, "guidance_scale", -MAX_GUIDANCE, MAX_GUIDANCE)
        condition = self._per_image(prompt, negative_prompt, len(images), guidance_scale)
        return self._inpaint(images, mask, steps, sampler, guidance_scale, condition, seed, eta, callback)

    def _per_image(self, prompt, negative_prompt, count: int, guidance_scale: float) -> Prompts:
        """One prompt for every image, or one per image."""
        texts = _texts(prompt, "prompt")
        if len(texts) not in (1, count):
            raise InputError(f"prompt: expected one, or one per image ({count}), found {len(texts)}")
        return self.prompts(texts, negative_prompt, count // len(texts), guidance_scale)


def _texts(value: Any, what: str) -> list[str]:
    """A text or a non-empty list of texts."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(f"{what}: expected a text or a non-empty list of texts, found {value!r:.60}")
    return list(texts)
