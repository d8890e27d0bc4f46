"""WaveNet (van den Oord et al., 2016): dilated causal convolutions with gated activations,
residual and skip connections, a 256-way softmax over mu-law codes, optional global
conditioning on a class id.

Two views of the same weights: the full-sequence network (codes [B, T] -> logits [B, Q, T],
the logits at t predicting the code at t + 1) and the single step of "Fast Wavenet
Generation" (Paine et al., 2016), which takes one code and, for each causal convolution,
the queue of its past inputs it still needs (the last `dilation` of them), and returns the
next code's logits and the queues moved on by one. Zero queues are the full network's zero
padding, so the two agree at every position.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...training.common import LikelihoodTrainer

FAMILY = "wavenet"
DATA_RANGE = None            # mu-law codes, used as they are
DEFAULT_STEPS = 2000
DEFAULT_BATCH = 16
DEFAULT_LR = 2e-3
DEFAULT_DATA = "tones"
LABEL_DROPOUT = 0.1
TONE_KINDS = ("tone", "chord", "chirp", "mixture")
CLIP_SECONDS = 1.0


@dataclass
class Config:
    sample_rate: int = 8000
    quantization: int = 256
    residual_channels: int = 32
    skip_channels: int = 64
    dilation_cycles: int = 2
    layers_per_cycle: int = 8      # dilations 1, 2, ..., 128, then again
    num_classes: int = 0
    train_samples: int = 1024      # window length in training

    def validate(self) -> list[str]:
        problems = []
        for name in ("sample_rate", "residual_channels", "skip_channels", "dilation_cycles", "layers_per_cycle",
                     "train_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} expected positive, found {getattr(self, name)}")
        if not 2 <= self.quantization <= 65536:
            problems.append(f"quantization expected 2 to 65536 codes, found {self.quantization}")
        if self.num_classes < 0:
            problems.append(f"num_classes expected 0 or more, found {self.num_classes}")
        return problems

    @property
    def dilations(self) -> list[int]:
        return [2 ** i for i in range(self.layers_per_cycle)] * self.dilation_cycles

    @property
    def queue_lengths(self) -> list[int]:
        """The state of the step graph: the input convolution's (1), then each layer's dilation."""
        return [1, *self.dilations]

    @property
    def receptive_field(self) -> int:
        return sum(self.queue_lengths) + 1

    @property
    def null_label(self) -> int:
        return self.num_classes


class ResidualLayer(nn.Module):
    def __init__(self, c: Config, dilation: int):
        super().__init__()
        r = c.residual_channels
        self.dilation = dilation
        self.conv = nn.Conv1d(r, 2 * r, 2, dilation=dilation)
        self.cond = nn.Embedding(c.num_classes + 1, 2 * r)
        self.res = nn.Conv1d(r, r, 1)
        self.skip = nn.Conv1d(r, c.skip_channels, 1)

    def gated(self, pre, labels):
        a, b = (pre + self.cond(labels)[:, :, None]).chunk(2, dim=1)
        g = torch.tanh(a) * torch.sigmoid(b)
        return self.res(g), self.skip(g)

    def forward(self, x, labels):
        res, skip = self.gated(self.conv(F.pad(x, (self.dilation, 0))), labels)
        return x + res, skip

    def step(self, x, queue, labels):
        """x [B, R, 1], queue [B, R, dilation] (oldest first) -> (x', skip [B, S, 1], next queue)."""
        pair = torch.cat([queue[:, :, :1], x], dim=2)          # the input `dilation` steps ago, and now
        pre = F.conv1d(pair, self.conv.weight, self.conv.bias)
        res, skip = self.gated(pre, labels)
        return x + res, skip, torch.cat([queue[:, :, 1:], x], dim=2)


class WaveNet(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        r = c.residual_channels
        self.embed = nn.Embedding(c.quantization, r)
        self.causal = nn.Conv1d(r, r, 2)
        self.layers = nn.ModuleList(ResidualLayer(c, d) for d in c.dilations)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(c.skip_channels, c.skip_channels, 1), nn.ReLU(),
                                  nn.Conv1d(c.skip_channels, c.quantization, 1))

    def forward(self, codes, labels):
        """codes [B, T] -> logits [B, Q, T]; position t predicts code t + 1."""
        x = self.causal(F.pad(self.embed(codes).transpose(1, 2), (1, 0)))
        skips = 0
        for layer in self.layers:
            x, skip = layer(x, labels)
            skips = skips + skip
        return self.head(skips)

    def step(self, code, labels, *queues):
        """code [B] -> (logits [B, Q], next queues), one queue per causal convolution."""
        e = self.embed(code)[:, :, None]
        x = F.conv1d(torch.cat([queues[0], e], dim=2), self.causal.weight, self.causal.bias)
        next_queues = [torch.cat([queues[0][:, :, 1:], e], dim=2)]
        skips = 0
        for layer, queue in zip(self.layers, queues[1:]):
            x, skip, queue = layer.step(x, queue, labels)
            skips = skips + skip
            next_queues.append(queue)
        return (self.head(skips)[:, :, 0], *next_queues)

    def empty_queues(self, batch: int) -> list[torch.Tensor]:
        r = self.config.residual_channels
        return [torch.zeros(batch, r, n) for n in self.config.queue_lengths]

    def loss(self, codes, labels):
        logits = self(codes[:, :-1], labels)
        return F.cross_entropy(logits, codes[:, 1:])


class Step(nn.Module):
    """The single-step graph."""

    def __init__(self, model: WaveNet):
        super().__init__()
        self.model = model

    def forward(self, code, labels, *queues):
        return self.model.step(code, labels, *queues)


def build(config: Config) -> WaveNet:
    return WaveNet(config)


class Trainer(LikelihoodTrainer):
    """Adam with cosine decay, clipped gradients; labels dropped to "no label" 10% of the time."""

    metric = "nats_per_sample"
    label_dropout = LABEL_DROPOUT
    clip = 1.0


# ---- data -----------------------------------------------------------------------------------

def synth_clip(kind: str, rng: np.random.Generator, sample_rate: int, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """One clip of a kind: a sine tone, a major triad, a linear chirp, or a tone over a chirp."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    amplitude = rng.uniform(0.3, 0.7)
    if kind == "tone":
        wave = np.sin(2 * np.pi * rng.uniform(200, 1000) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "chord":
        root = rng.uniform(150, 500)
        wave = sum(np.sin(2 * np.pi * root * ratio * t + rng.uniform(0, 2 * np.pi)) for ratio in (1, 1.25, 1.5)) / 3
    elif kind == "chirp":
        f0, f1 = rng.uniform(150, 1200, size=2)
        wave = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    elif kind == "mixture":
        f0, f1, tone = rng.uniform(150, 1200, size=3)
        wave = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))) + 0.5 * np.sin(2 * np.pi * tone * t)
    else:
        raise ValueError(kind)
    return (amplitude * wave).astype(np.float32)


def tone_clips(n_per_kind: int, seed: int, sample_rate: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for _ in range(n_per_kind):
        for label, kind in enumerate(TONE_KINDS):
            clips.append(synth_clip(kind, rng, sample_rate))
            labels.append(label)
    return clips, np.array(labels, np.int64)


def load_audio(source: str, sample_rate: int, seed: int, min_samples: int = 0):
    """(train clips, train labels, test clips, test labels, number of classes). A folder's clips
    shorter than `min_samples` are left out before the held-out split, which could otherwise hold
    only short ones and leave nothing to test on."""
    from ...errors import DataError
    from ...runtimes.audio import read_wav, wav_files

    if source == "tones":
        train, train_labels = tone_clips(100, seed, sample_rate)
        test, test_labels = tone_clips(25, seed + 1, sample_rate)
        return train, train_labels, test, test_labels, len(TONE_KINDS)
    folder = Path(source)
    files = wav_files(folder) if folder.is_dir() else []
    if len(files) < 2:
        found = ("one .wav file in it" if files else "no .wav files in it") if folder.is_dir() else \
            "a file (give the folder holding it)" if folder.exists() else "nothing at that path"
        raise DataError(f"data {source!r}: expected 'tones' or a folder of at least 2 WAV files (one held out), "
                        f"found {found}")
    clips = [read_wav(p, sample_rate) for p in files]
    _say_what_reading_changed(source, files, sample_rate)
    short = [p.name for p, c in zip(files, clips) if len(c) < min_samples]
    clips = [c for c in clips if len(c) >= min_samples]
    if len(clips) < 2:
        raise DataError(f"data {source!r}: expected at least 2 WAV files (one held out) of {min_samples} samples or more "
                        f"at {sample_rate} Hz, found {len(clips)}; shorter: {', '.join(short[:5])}"
                        + (f" and {len(short) - 5} more" if len(short) > 5 else ""))
    if short:   # trained without a word on what was left, the clips it dropped not named anywhere
        from ...errors import EdgegenWarning

        warnings.warn(f"data {source!r}: left out {len(short)} WAV file(s) shorter than {min_samples} samples at "
                      f"{sample_rate} Hz (a training window): {', '.join(short[:5])}"
                      + (f" and {len(short) - 5} more" if len(short) > 5 else ""), EdgegenWarning, stacklevel=2)
    order = np.random.default_rng(seed).permutation(len(clips))
    held = max(1, len(clips) // 10)
    test = [clips[i] for i in order[:held]]
    train = [clips[i] for i in order[held:]]
    return train, None, test, None, 0


def _say_what_reading_changed(source: str, files: list, sample_rate: int) -> None:
    """The folder's WAVs at another rate or in stereo, said in one line: read_wav resamples them to
    the model's rate and averages their channels (docs/cli.md), which a run on 44.1 kHz stereo said
    nothing of (helper 146)."""
    from ...errors import EdgegenWarning
    from ...runtimes.audio import wav_format

    formats = [wav_format(p) for p in files]
    rates = sorted({rate for rate, _ in formats if rate != sample_rate})
    resampled = sum(rate != sample_rate for rate, _ in formats)
    several = sum(channels > 1 for _, channels in formats)
    said = ([f"{resampled} resampled to the model's {sample_rate} Hz (from {', '.join(f'{r} Hz' for r in rates)})"]
            if resampled else []) + ([f"{several} of several channels averaged to mono"] if several else [])
    if said:
        warnings.warn(f"data {source!r}: of its {len(files)} WAV files, {' and '.join(said)}", EdgegenWarning, stacklevel=3)


def prepare_data(source: str, image_size: int, channels: int | None, seed: int, options: dict | None = None):
    """Mu-law windows of train_samples + 1 codes, half a window apart, with their clip's class."""
    from ...errors import DataError
    from ...runtimes.audio import mu_law_encode
    from ...training.text import windows

    options = options or {}
    rate = options.get("sample_rate", Config.sample_rate)
    length = options.get("train_samples", Config.train_samples)
    q = options.get("quantization", Config.quantization)
    train, train_labels, test, test_labels, classes = load_audio(source, rate, seed, min_samples=length + 2)

    def cut(clips, labels):
        parts = [windows(mu_law_encode(c, q), length) for c in clips if len(c) > length + 1]
        if not parts:
            raise DataError(f"data {source!r}: expected clips longer than {length + 1} samples at {rate} Hz, found none")
        cut_labels = None if labels is None else np.concatenate([np.full(len(p), l) for p, l in zip(parts, labels)])
        return np.concatenate(parts), cut_labels

    x_train, y_train = cut(train, train_labels)
    x_test, y_test = cut(test, test_labels)
    return AudioData(source, x_train, x_test, y_train, y_test, classes, rate), {"sample_rate": rate}


@dataclass
class AudioData:
    name: str
    train: np.ndarray            # int64 codes [N, train_samples + 1]
    test: np.ndarray
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None
    num_classes: int
    sample_rate: int

    def describe(self) -> dict:
        return {"source": self.name, "sample_rate": self.sample_rate, "windows": len(self.train),
                "test_windows": len(self.test), "num_classes": self.num_classes,
                "classes": list(TONE_KINDS) if self.name == "tones" else []}
