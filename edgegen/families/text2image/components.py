"""The torch side of the text2image family: Stable Diffusion-layout parts built with diffusers'
and transformers' own classes from a small config, and saved as a diffusers pipeline folder, so
that what edgegen builds goes through the same import (`edgegen export --from-diffusers`) as a
pipeline from elsewhere. The tests' and benchmarks' random pipelines come from here.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

# Stable Diffusion 1.x's scheduler_config.json, whichever class reads it. Its clip_sample False
# matters: DDIM's default, x0 clipped to [-1, 1] in latent space, makes a guided loop chaotic
# (diffusers itself moved 7e-3 per pixel for a 1e-6 nudge of the starting latents).
SD1_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
                 "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1}


@dataclass(frozen=True)
class LayoutConfig:
    """A Stable Diffusion layout's sizes (the real one: latents 64, UNet (320, 640, 1280, 1280),
    cross attention 768, 12 text layers, 77 tokens)."""

    latent_size: int = 16                 # the UNet's side; the images are latent_size * 2 ** (len(vae_channels) - 1)
    unet_channels: tuple = (32, 64)       # the last level without cross attention, the others with
    layers_per_block: int = 1
    cross_dim: int = 32                   # the text encoder's width
    attention_head_dim: int = 8
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 37
    vae_channels: tuple = (32, 64)
    max_length: int = 16
    norm_groups: int = 8
    image_channels: int = 3


def bytes_to_unicode() -> dict[int, str]:
    """Byte-level BPE's alphabet (GPT-2's and CLIP's): each byte as a printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_vocabulary(words: tuple[str, ...]) -> tuple[dict[str, int], list[str]]:
    """The vocabulary and merges of a small CLIP BPE: every byte alone and word-final, and the
    merges that spell each of `words` as one token (a caption vocabulary), then CLIP's start and
    end tokens.

    Each word's merges join the pieces the earlier words' merges leave it in, left to right: its
    own letters' merges ("r e" then "g r") would lose to an earlier word's ("r e", from "red"),
    and "green" came out four tokens. After each merge the word is spelled anew as BPE spells it,
    which merges a pair wherever it occurs ("papaya": pa pa y a, not pa p a y a). Merges added
    later rank below every earlier one, so they never fire in an earlier word, which is one token
    before they could."""
    alphabet = bytes_to_unicode()
    chars = list(alphabet.values())
    vocab = chars + [c + "</w>" for c in chars]
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        word = "".join(alphabet[b] for b in word.encode())   # as byte-level BPE spells it ("café" -> "cafÃ©")
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:   # no pair of the pieces is a merge yet: _bpe left none
            ranks[pieces[0], pieces[1]] = len(ranks)
            vocab.append(pieces[0] + pieces[1])
            pieces = _bpe(pieces, ranks)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(dict.fromkeys(vocab))}, [f"{a} {b}" for a, b in ranks]


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """`pieces` as BPE leaves them: the adjacent pair of the lowest rank merged, until none is a merge."""
    while len(pieces) > 1:
        pair = min(zip(pieces, pieces[1:]), key=lambda p: ranks.get(p, len(ranks)))
        if pair not in ranks:
            return pieces
        i = next(i for i in range(len(pieces) - 1) if (pieces[i], pieces[i + 1]) == pair)
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def clip_tokenizer_files(folder: Path, words: tuple[str, ...]) -> None:
    """clip_vocabulary(words) as CLIP's vocab.json and merges.txt."""
    vocab, merges = clip_vocabulary(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def clip_tokenizer(folder: Path, words: tuple[str, ...], max_length: int):
    """vocabulary_tokenizer(words), its files written in `folder` (what a pipeline folder copies)."""
    clip_tokenizer_files(folder, words)
    return vocabulary_tokenizer(words, max_length)


def vocabulary_tokenizer(words: tuple[str, ...], max_length: int):
    """transformers' CLIPTokenizer of clip_vocabulary(words): CLIP's normalizer (lowercase, NFC,
    spaces), pre-tokenizer and byte-level BPE, as the package's tokenizer.json runs it."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocabulary(words)
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=max_length)


@functools.lru_cache(maxsize=1)
def _clip_text_splitter():
    """CLIP's normalizer and pre-tokenizer (any vocabulary's: they do not depend on it)."""
    return vocabulary_tokenizer((), 2).backend_tokenizer


def normalized_captions(captions: list[str]) -> list[str]:
    """Each caption as CLIP's normalizer reads it (lowercase, NFC, runs of spaces as one), trimmed."""
    normalizer = _clip_text_splitter().normalizer
    return [normalizer.normalize_str(text).strip() for text in captions]


def caption_words(captions: list[str], limit: int | None = None) -> list[str]:
    """The `limit` (default: all) most frequent words of `captions` (first seen first among equals), as CLIP's
    tokenizer splits them: lowercased, at spaces and between letters, digits and punctuation
    ("a red car, 2 doors." -> a, red, car, ",", 2, doors, ".")."""
    backend = _clip_text_splitter()
    counts = Counter()
    for text in captions:
        normal = backend.normalizer.normalize_str(text)
        counts.update(normal[start:end] for _, (start, end) in backend.pre_tokenizer.pre_tokenize_str(normal))
    return [word for word, _ in counts.most_common(limit)]   # most_common keeps first-seen order among equal counts


def build_components(config: LayoutConfig, tokenizer, seed: int = 0) -> dict:
    """Random-weight text encoder, UNet and autoencoder of `config` (the tokenizer given)."""
    torch.manual_seed(seed)
    return {**layout_models(config, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                            tokenizer.pad_token_id), "tokenizer": tokenizer}


def layout_models(config: LayoutConfig, vocab_size: int, bos_id: int, eos_id: int, pad_id: int,
                  scaling_factor: float = 0.18215) -> dict:
    """diffusers' UNet2DConditionModel and AutoencoderKL, and transformers' CLIPTextModel, of
    `config`'s sizes, in torch's current random state."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    levels = len(config.unet_channels)
    unet = diffusers.UNet2DConditionModel(
        sample_size=config.latent_size, in_channels=4, out_channels=4, layers_per_block=config.layers_per_block,
        block_out_channels=tuple(config.unet_channels), cross_attention_dim=config.cross_dim,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_groups)
    down = 2 ** (len(config.vae_channels) - 1)
    vae = diffusers.AutoencoderKL(
        in_channels=config.image_channels, out_channels=config.image_channels, latent_channels=4,
        block_out_channels=tuple(config.vae_channels), layers_per_block=1, norm_num_groups=config.norm_groups,
        down_block_types=("DownEncoderBlock2D",) * len(config.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(config.vae_channels), sample_size=config.latent_size * down,
        scaling_factor=scaling_factor)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=config.cross_dim, intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_length, bos_token_id=bos_id, eos_token_id=eos_id,
        pad_token_id=pad_id)).eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder}


def save_pipeline(out: Path, parts: dict, scheduler_name: str = "PNDMScheduler", scheduler_config: dict | None = None,
                  tokenizer_source: Path | None = None) -> Path:
    """parts as a StableDiffusionPipeline folder (no safety checker). The scheduler's file holds
    every key of scheduler_config (default SD1_SCHEDULER), its class's or not, as Stable Diffusion
    ships it; the tokenizer folder also holds vocab.json and merges.txt, as it does."""
    import diffusers

    config = {**SD1_SCHEDULER, **(scheduler_config or {})}
    scheduler = getattr(diffusers, scheduler_name).from_config(config)
    pipe = diffusers.StableDiffusionPipeline(**parts, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(out)
    path = out / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}, indent=2))
    if tokenizer_source is not None:
        for name in ("vocab.json", "merges.txt"):
            (out / "tokenizer" / name).write_bytes((tokenizer_source / name).read_bytes())
    return out
