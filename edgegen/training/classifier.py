"""A small digit classifier: the judge of generated digits (label accuracy) and the feature
extractor of the Frechet distance, trained on the same built-in digits (train split)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_torch
from safetensors.torch import save as save_torch

from ..cache import judge_file_name, torch_version
from ..images import average_pool
from ..storage import atomic_write_bytes, user_cache_dir, writer_lock
from .data import digit_labels

FEATURES = 32


class DigitNet(nn.Module):
    """Two convolutions, pooled to 4x4 whatever the input size, then the feature layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.features = nn.Sequential(nn.Linear(64 * 16, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(self.conv(x))
        return self.head(f), f


@dataclass
class DigitJudge:
    net: DigitNet
    size: int
    test_accuracy: float

    def at_own_size(self, images: np.ndarray) -> np.ndarray:
        """Images [n, 1, k*size, k*size] averaged over k x k cells down to the size the judge
        was trained at (32x32 samples of 8x8 digits are read as 8x8)."""
        n, c, h, w = images.shape
        if h == self.size and w == self.size:
            return images
        if h % self.size or w % self.size:
            raise ValueError(f"images: expected sides that are multiples of {self.size}, found {h}x{w}")
        return average_pool(images, h // self.size)

    @torch.no_grad()
    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.at_own_size(np.asarray(images))
        logits, feats = [], []
        for i in range(0, len(images), 512):
            lg, ft = self.net(torch.from_numpy(np.array(images[i:i + 512], dtype=np.float32)))
            logits.append(lg.numpy())
            feats.append(ft.numpy())
        return np.concatenate(logits), np.concatenate(feats)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(images)[0].argmax(axis=1)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._run(images)[1]


@functools.lru_cache(maxsize=4)
def train_digit_judge(size: int = 8, steps: int = 1500, seed: int = 0) -> DigitJudge:
    """The judge trained on the digits' train split (with small shifts as augmentation), its
    accuracy measured on the held-out split.

    Seeded, so the same arguments train the same judge: it is trained once per machine (about
    30 s on 2 cores) and kept in the user's cache (judge_path), where later processes read it,
    and once per process it is shared by every caller, which only reads it (predict, features,
    test_accuracy). Two processes that want it at once train it once: the second waits."""
    path = judge_path(size, steps, seed)
    net = _read_judge(path)
    if net is None:
        try:
            with writer_lock(path, "training the digit judge"):
                net = _read_judge(path)   # trained by another process while this one waited
                if net is None:
                    net = _train_judge(size, steps, seed)
                    atomic_write_bytes(path, save_torch(net.state_dict()))
        except OSError:   # a cache that cannot be written (a read-only home): kept by this process only
            if net is None:
                net = _train_judge(size, steps, seed)
    net.eval()
    _, _, x_test, y_test = digit_labels(size)
    judge = DigitJudge(net, size, 0.0)
    judge.test_accuracy = float((judge.predict(x_test) == y_test).mean())
    return judge


def judge_path(size: int, steps: int, seed: int) -> Path:
    """Where the judge of these arguments is kept (its name: cache.judge_file_name)."""
    # kept where the cache can hold it; where it cannot, the judge is trained for this process alone
    return user_cache_dir(checked=False) / "judges" / judge_file_name(size, steps, seed, torch_version() or torch.__version__)


def _read_judge(path: Path) -> DigitNet | None:
    """The kept judge, or None where there is none or it does not read back (a file a user may
    have damaged is trained again, not trusted; safetensors has no checksum of the values)."""
    net = DigitNet()
    try:
        net.load_state_dict(load_torch(path.read_bytes()))
    except (OSError, SafetensorError, RuntimeError):   # none or unreadable; truncated; another net's weights
        return None
    return net


def _train_judge(size: int, steps: int, seed: int) -> DigitNet:
    torch.manual_seed(seed)
    x_train, y_train, _, _ = digit_labels(size)
    net = DigitNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = torch.tensor(x_train), torch.tensor(y_train).long()
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(x), 128))
        batch = x[idx]
        shift = [int(s) for s in rng.integers(-1, 2, 2)] if size >= 8 else [0, 0]
        batch = torch.roll(batch, shifts=shift, dims=(2, 3))
        loss = F.cross_entropy(net(batch)[0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net
