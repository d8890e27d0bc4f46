"""The text2image model edgegen trains: Stable Diffusion's layout at digit size, built from
diffusers' and transformers' own classes (docs/diffusers.md), so that its export is the import
of a diffusers pipeline folder like any other. It trains on the captioned digits, or on a folder
of one's own captioned pictures (training/captions.py), whose captions' words make its vocabulary.

The digits' captions describe each training image by its digit and by how much ink its strokes hold:
"a thick seven" when the image's ink (the sum of its pixels) is above the median of its digit's
training images, "a thin seven" when below. Some captions leave the attribute out ("a seven")
and some are empty, so one model learns the attribute, the digit alone, and the unconditional
distribution that classifier-free guidance steers against.

A folder's captions are its pictures' own, each the same at every step, and empty at
label_dropout. Its vocabulary is the captions' MAX_CAPTION_WORDS most frequent words, each one
token where the BPE's merges allow; a word outside it is spelled in smaller pieces.

Training has latent diffusion's two stages (the ldm family's trainer): the autoencoder first,
then the text encoder and the UNet together, on the frozen autoencoder's latents scaled to unit
variance. The text encoder learns from scratch with the UNet: there is no pretrained CLIP here.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ...errors import DataError, EdgegenWarning
from ...runtimes.samplers import make_betas
from ...training.captions import HOW, folder_captions
from ...training.data import load_images, what_else
from ..ldm import model as ldm
from .components import (SD1_SCHEDULER, LayoutConfig, caption_words, layout_models, normalized_captions,
                         vocabulary_tokenizer)

FAMILY = "text2image"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_DATA = "digits"
DEFAULT_STEPS = 8000
MIN_STEPS, MIN_STEPS_WHY = ldm.MIN_STEPS, ldm.MIN_STEPS_WHY   # its two stages are ldm's
DEFAULT_BATCH = 64
DEFAULT_LR = 1e-3
DEFAULT_IMAGE_SIZE = 16
# with --init, the start's vocabulary and token length: its text encoder's embeddings are made for them
KEPT_FROM_INIT = ("caption_words", "max_length")

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTES = ("thin", "thick")          # ink below or above the median of the digit's training images
CAPTION_WORDS = ("a", "an", *ATTRIBUTES, *DIGIT_NAMES)
MAX_CAPTION_WORDS = 2048    # a folder's vocabulary: its captions' most frequent words, one token each
CLIP_MAX_LENGTH = 77        # a folder's captions' tokens at most, as CLIP's (longer ones are cut)
UNCUT = 10 ** 9             # a tokenizer's max_length where captions are counted, not cut


def caption(digit: int, attribute: str | None = None) -> str:
    """"a thick seven", "an eight", ...: the captions the model is trained on."""
    words = ([attribute] if attribute else []) + [DIGIT_NAMES[digit]]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


@dataclass
class Config:
    image_channels: int = 1
    image_size: int = DEFAULT_IMAGE_SIZE
    num_classes: int = 10
    unet_channels: list = field(default_factory=lambda: [32, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    cross_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 128
    vae_channels: list = field(default_factory=lambda: [32, 64])
    norm_groups: int = 8
    max_length: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = SD1_SCHEDULER["beta_schedule"]
    beta_start: float = SD1_SCHEDULER["beta_start"]
    beta_end: float = SD1_SCHEDULER["beta_end"]
    prediction_type: str = "epsilon"
    label_dropout: float = 0.1          # captions replaced by the empty prompt
    attribute_dropout: float = 0.2      # captions without the attribute ("a seven")
    ema_decay: float = 0.999
    kl_weight: float = 1e-4
    autoencoder_share: float = 0.25     # the first quarter of the steps train the autoencoder
    ink_medians: list = field(default_factory=list)   # per digit: the median ink of its training images
    captions: list = field(default_factory=list)      # a folder's distinct captions (labels index them); [] digits
    caption_words: list = field(default_factory=list)  # the vocabulary's words; [] the digits' (CAPTION_WORDS)
    # added on 2026-12-07: left out of a digits checkpoint, which an earlier edgegen then reads (saved_config)
    LATER_FIELDS: ClassVar[tuple] = ("captions", "caption_words")

    @property
    def null_label(self) -> int:
        return self.num_classes

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def layout(self) -> LayoutConfig:
        return LayoutConfig(
            latent_size=self.latent_size, unet_channels=tuple(self.unet_channels), layers_per_block=self.layers_per_block,
            cross_dim=self.cross_dim, attention_head_dim=self.attention_head_dim, text_layers=self.text_layers,
            text_heads=self.text_heads, text_intermediate=self.text_intermediate, vae_channels=tuple(self.vae_channels),
            max_length=self.max_length, norm_groups=self.norm_groups, image_channels=self.image_channels)

    def validate(self) -> list[str]:
        problems = []
        if self.captions:
            if self.num_classes != len(self.captions):
                problems.append(f"num_classes expected {len(self.captions)} (one per distinct caption), found "
                                f"{self.num_classes}")
            if self.ink_medians:
                problems.append("ink_medians expected none for a folder's captions (thick and thin are the digits'), "
                                f"found {len(self.ink_medians)}")
        elif self.num_classes != len(DIGIT_NAMES):
            problems.append(f"num_classes expected {len(DIGIT_NAMES)} (captions name the digits), found {self.num_classes}")
        if self.ink_medians and len(self.ink_medians) != self.num_classes:
            problems.append(f"ink_medians expected one per class ({self.num_classes}), found {len(self.ink_medians)}")
        down = 2 ** (len(self.vae_channels) - 1) * 2 ** (len(self.unet_channels) - 1)
        if self.image_size % down:
            problems.append(f"image_size expected a multiple of {down} (the autoencoder's and the UNet's downsampling), "
                            f"found {self.image_size}")
        if any(c % self.norm_groups for c in [*self.unet_channels, *self.vae_channels]):
            problems.append(f"unet_channels and vae_channels expected multiples of norm_groups={self.norm_groups}, "
                            f"found {self.unet_channels} and {self.vae_channels}")
        if self.cross_dim % self.text_heads:
            problems.append(f"cross_dim expected a multiple of text_heads={self.text_heads}, found {self.cross_dim}")
        if self.max_length < 3:   # shorter than a caption: said in training (say_captions_outside_the_vocabulary)
            problems.append(f"max_length expected at least 3 (start, a word, end), found {self.max_length}")
        for name in ("label_dropout", "attribute_dropout", "autoencoder_share"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name} expected in [0, 1), found {getattr(self, name)}")
        return problems


def prepare_data(source: str, image_size: int, channels: int | None, seed: int, options: dict | None = None):
    """The digits, and the per-digit median ink the captions' thick and thin are measured
    against; or a folder of captioned pictures, labelled by their distinct captions, and the
    vocabulary and token length those captions need."""
    if source == "digits":
        if channels not in (None, 1):
            raise DataError(f"channels: expected 1 for the digits (grey), found {channels} (given, or an --init "
                            "checkpoint's: a model of colour pictures)")
        images = load_images(source, image_size=image_size, channels=1, seed=seed)
        return images, {"image_channels": 1, "image_size": image_size, "ink_medians": ink_medians(images),
                        "captions": [], "caption_words": []}
    if not Path(source).is_dir():
        raise DataError(f"text2image training data {source!r}: expected digits or a folder of captioned pictures "
                        f"({HOW}), found {what_else(source, 'captioned pictures')}")
    captions: list[str] = []

    def caption_labels(pictures: list[Path]) -> list[int]:
        # as the text encoder reads them: "A red  car" and "a red car" are one caption, not two labels
        texts = normalized_captions(folder_captions(Path(source), pictures)[0])
        if not any(texts):
            raise DataError(f"data folder {source!r}: expected captions with words, found every caption empty: "
                            "train diffusion or ldm on pictures without captions")
        captions.extend(dict.fromkeys(texts))
        index = {text: i for i, text in enumerate(captions)}
        return [index[text] for text in texts]

    images = load_images(source, image_size=image_size, channels=channels, seed=seed, labels_of=caption_labels)
    words = caption_words(captions, MAX_CAPTION_WORDS)
    longest = max(map(len, vocabulary_tokenizer(tuple(words), UNCUT)(captions)["input_ids"]))
    return images, {"image_channels": images.shape[0], "image_size": image_size, "ink_medians": [],
                    "captions": captions, "caption_words": words, "max_length": max(3, min(longest, CLIP_MAX_LENGTH))}


def ink(images: np.ndarray | torch.Tensor):
    """The ink of each image in [0, 1]: the sum of its pixels (a thick stroke holds more)."""
    return images.reshape(len(images), -1).sum(1)


def ink_medians(images) -> list[float]:
    """Per digit, the median ink of its training images."""
    totals = ink(images.train)
    return [float(np.median(totals[images.train_labels == d])) for d in range(images.num_classes)]


def words_of(c: Config) -> tuple[str, ...]:
    """The model's vocabulary: a folder's captions' words, or the digits' captions'."""
    return tuple(c.caption_words) or CAPTION_WORDS


def caption_table(tokenizer, c: Config) -> torch.Tensor:
    """The training captions' token ids, as the package's tokenizer gives them (start, the words,
    end, then end tokens as padding, cut at max_length with the end kept), by label (the last: the
    empty caption) and attribute: [num_classes + 1, 1 + len(ATTRIBUTES), max_length] for the
    digits (attribute 0: none, then ATTRIBUTES' order); [len(captions) + 1, 1, max_length] for a
    folder's captions, which have none."""
    if c.captions:
        rows = [[text] for text in [*c.captions, ""]]
    else:
        rows = [[caption(d, a) for a in (None, *ATTRIBUTES)] for d in range(c.num_classes)]
        rows.append([""] * (1 + len(ATTRIBUTES)))
    texts = [text for row in rows for text in row]
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=c.max_length)["input_ids"]
    return torch.tensor(ids, dtype=torch.long).reshape(len(rows), len(rows[0]), c.max_length)


class KLAutoencoder(nn.Module):
    """diffusers' AutoencoderKL as the ldm trainer drives one: posterior(images) -> (mean,
    logvar), decoder(latents) -> images, and the latents' scale as a saved buffer."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.register_buffer("scale_factor", torch.ones(()))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distribution = self.vae.encode(x).latent_dist
        return distribution.mean, distribution.logvar

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


class Denoiser(nn.Module):
    """What the second stage trains: the text encoder and the UNet, caption ids in."""

    def __init__(self, text_encoder, unet):
        super().__init__()
        self.text_encoder, self.unet = text_encoder, unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, t, self.text_encoder(ids)[0]).sample


class TextToImageModel(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        tokenizer = vocabulary_tokenizer(words_of(c), c.max_length)
        parts = layout_models(c.layout(), len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                              tokenizer.pad_token_id)
        self.autoencoder = KLAutoencoder(parts["vae"])
        # the EMA of the trained weights, what exports and ships; the trainer owns the live copy
        self.denoiser = Denoiser(parts["text_encoder"], parts["unet"]).requires_grad_(False)
        self.register_buffer("captions", caption_table(tokenizer, c), persistent=False)
        self.register_buffer("ink_medians", torch.tensor(c.ink_medians or [0.0] * c.num_classes), persistent=False)
        betas = make_betas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end)
        self.register_buffer("alphas_cumprod", torch.from_numpy(np.cumprod(1 - betas)).float(), persistent=False)

    def caption_ids(self, labels: torch.Tensor, images: torch.Tensor, attribute_dropout: float) -> torch.Tensor:
        """Each image's caption ids: a folder's picture's own caption; a digit's, thick or thin by
        its ink against the digit's median (images in [-1, 1]), the attribute left out at
        `attribute_dropout`."""
        if self.config.captions:
            return self.captions[labels, 0]
        digits = labels.clamp(max=self.config.num_classes - 1)
        thick = ink((images + 1) / 2) > self.ink_medians[digits]
        attribute = 1 + thick.long()
        attribute = torch.where(torch.rand(len(labels)) < attribute_dropout, torch.zeros_like(attribute), attribute)
        return self.captions[labels, attribute]


def build(config: Config) -> TextToImageModel:
    return TextToImageModel(config)


class Trainer(ldm.Trainer):
    """The ldm trainer's two stages; the second trains the text encoder and the UNet together, in
    a live copy of the model's denoiser, which keeps their exponential moving average. Only the
    average is saved: it is what the export takes, and the checkpoint ships."""

    def __init__(self, model: TextToImageModel, lr: float, total_steps: int = 1):
        say_captions_outside_the_vocabulary(model.config)
        self.live = copy.deepcopy(model.denoiser).requires_grad_(True)
        super().__init__(model, lr, total_steps, trained=self.live, ema_target=model.denoiser)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        ids = self.model.caption_ids(labels, images, self.model.config.attribute_dropout)
        return self.live(noisy, t, ids)


def training_captions(c: Config) -> list[str]:
    """The distinct captions a model trains on: a folder's, or every digit caption."""
    return c.captions or [caption(d, a) for d in range(c.num_classes) for a in (None, *ATTRIBUTES)]


def say_captions_outside_the_vocabulary(c: Config) -> None:
    """Captions longer than the text encoder's tokens (cut: their ends never seen), and words
    outside its vocabulary (spelled in pieces the encoder learns less well): said, with the usual
    cause, the vocabulary and length an --init checkpoint keeps (a folder's onto the digits
    cut "a thin three" to "a t h" without a word)."""
    texts, words = training_captions(c), words_of(c)
    tokens = vocabulary_tokenizer(words, UNCUT)(texts)["input_ids"]
    if cut := sum(len(ids) > c.max_length for ids in tokens):
        warnings.warn(f"text2image captions: {cut} of the {len(texts)} distinct captions are longer than the "
                      f"text encoder's {c.max_length} tokens, and are cut to it (the first: "
                      f"{next(t for t, ids in zip(texts, tokens) if len(ids) > c.max_length)!r:.100}); an --init "
                      "checkpoint keeps its own length", EdgegenWarning, stacklevel=4)
    known = set(words)
    missing = [w for w in caption_words(texts) if w not in known]
    if missing:
        warnings.warn(f"text2image captions: {len(missing)} of their words are not in the model's vocabulary of "
                      f"{len(words)} ({', '.join(map(repr, missing[:5]))}{' ...' if len(missing) > 5 else ''}), and are "
                      f"spelled in smaller pieces (a vocabulary holds the {MAX_CAPTION_WORDS} most frequent words of its "
                      "captions; an --init checkpoint keeps its own)", EdgegenWarning,
                      stacklevel=4)
