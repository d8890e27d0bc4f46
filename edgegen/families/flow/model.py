"""Normalizing flows: RealNVP on 2-D points (Dinh et al., 2017) and a Glow-style image flow
(Kingma & Dhariwal, 2018): squeeze, ActNorm, invertible 1x1 convolution (LU-parameterized),
affine coupling, multi-scale factor-out.

Both map data x to latents z ~ N(0, I) with an exact log-determinant. The inverse of every
1x1 convolution and its log-determinant are computed in PyTorch and baked into the exported
graphs as constants (ONNX has no matrix inverse): `freeze()` does that before export.
ActNorm is initialized from the first training batch (`initialize`), before any step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .pipeline import LOGIT_ALPHA, POINT_DATA

FAMILY = "flow"
DATA_RANGE = (0.0, 1.0)
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 256
DEFAULT_LR = 1e-3
DEFAULT_IMAGE_SIZE = 8
TRAIN_POINTS, TEST_POINTS = 20000, 2000   # synthetic, so plenty: a flow this size overfits 4,000
DEQUANT_LEVELS = 17       # the digits' grey levels 0..16: uniform dequantization over 1/17 bins
IMAGE_LEVELS = 256        # 8-bit photographs and user images


# train --init keeps the start's standardization: its weights hold it (RealNVP's mean and std
# buffers), where the config recorded the new data's beside them
KEPT_FROM_INIT = ("data_mean", "data_std")


@dataclass
class Config:
    kind: str = "glow"                # "realnvp" (2-D points) or "glow" (images)
    image_channels: int = 1
    image_size: int = DEFAULT_IMAGE_SIZE
    dim: int = 2                      # realnvp: point dimension
    couplings: int = 8                # realnvp: coupling layers
    hidden: int = 64                  # width of the coupling networks
    levels: int = 2                   # glow: multi-scale levels
    steps_per_level: int = 4          # glow: flow steps per level
    dequant_levels: int = DEQUANT_LEVELS   # glow: grey levels of the data (17 for the digits, 256 for 8-bit images)
    data_mean: list = field(default_factory=list)   # realnvp: standardization of the points
    data_std: list = field(default_factory=list)

    def validate(self) -> list[str]:
        problems = []
        if self.kind not in ("realnvp", "glow"):
            problems.append(f"kind expected 'realnvp' or 'glow', found {self.kind!r}")
        if self.kind == "glow" and self.image_size % (2 ** self.levels):
            problems.append(f"image_size expected a multiple of {2 ** self.levels} for {self.levels} levels, found {self.image_size}")
        if self.couplings < 1 or self.hidden < 1 or self.levels < 1 or self.steps_per_level < 1:
            problems.append("couplings, hidden, levels and steps_per_level expected positive")
        return problems

    @property
    def event_dim(self) -> int:
        return self.dim if self.kind == "realnvp" else self.image_channels * self.image_size**2


# -- RealNVP on points ------------------------------------------------------------------------

class Coupling2D(nn.Module):
    """y = x on the mask, x * exp(s(x_mask)) + t(x_mask) elsewhere; s bounded by tanh."""

    def __init__(self, dim: int, hidden: int, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * dim))
        self.scale = nn.Parameter(torch.zeros(dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, x_masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(x_masked).chunk(2, dim=1)
        free = 1 - self.mask
        return torch.tanh(s) * self.scale.exp() * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._st(x * self.mask)
        return x * torch.exp(s) + t, s.sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._st(y * self.mask)
        return (y - t) * torch.exp(-s)


class RealNVP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        mean = torch.tensor(c.data_mean or [0.0] * c.dim)
        std = torch.tensor(c.data_std or [1.0] * c.dim)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        masks = [torch.tensor([float((i + j) % 2) for j in range(c.dim)]) for i in range(c.couplings)]
        self.layers = nn.ModuleList(Coupling2D(c.dim, c.hidden, m) for m in masks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.mean) / self.std
        logdet = -torch.log(self.std).sum().expand(x.shape[0])
        for layer in self.layers:
            z, ld = layer(z)
            logdet = logdet + ld
        return z, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z * self.std + self.mean


# -- Glow on images ---------------------------------------------------------------------------

def squeeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class ActNorm(nn.Module):
    """Per-channel affine with data-dependent initialization (zero mean, unit variance on the
    first batch), done by `initialize` before training, never inside forward."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std + 1e-6))

    def forward(self, x):
        hw = x.shape[2] * x.shape[3]
        return (x + self.bias) * torch.exp(self.logs), (self.logs.sum() * hw).expand(x.shape[0])

    def inverse(self, y):
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """W = P L (U + diag(sign * exp(log_s))), log|det W| = sum(log_s) (LU parameterization).

    `freeze()` stores W, W^-1 and the log-determinant as buffers: the exported graphs use
    them as constants, and the inverse never needs a matrix inverse in ONNX."""

    def __init__(self, channels: int):
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, l, u = torch.linalg.lu(w)
        s = torch.diagonal(u)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.l = nn.Parameter(l)
        self.u = nn.Parameter(torch.triu(u, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))
        self.frozen: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def weight(self) -> torch.Tensor:
        eye = torch.eye(self.l.shape[0])
        lower = self.l * self.l_mask + eye
        upper = self.u * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    @torch.no_grad()
    def freeze(self) -> None:
        w = self.weight()
        self.frozen = (w.clone(), torch.linalg.inv(w.double()).float(), self.log_s.sum().clone())

    def _parts(self):
        if self.frozen is not None:
            return self.frozen
        return self.weight(), None, self.log_s.sum()

    def forward(self, x):
        w, _, log_det = self._parts()
        hw = x.shape[2] * x.shape[3]
        return F.conv2d(x, w[:, :, None, None]), (log_det * hw).expand(x.shape[0])

    def inverse(self, y):
        w, w_inv, _ = self._parts()
        if w_inv is None:
            w_inv = torch.linalg.inv(w)
        return F.conv2d(y, w_inv[:, :, None, None])


class AffineCoupling(nn.Module):
    """Half the channels condition a scale and shift of the other half (sigmoid scale, as Glow)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        half = channels // 2
        self.net = nn.Sequential(nn.Conv2d(half, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                 nn.Conv2d(hidden, 2 * (channels - half), 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _log_scale_shift(self, xa):
        raw, shift = self.net(xa).chunk(2, dim=1)  # contiguous halves: plain Split in ONNX
        # log(sigmoid(z)) as -softplus(-z), exact where the sigmoid underflows to 0 (in ONNX Runtime below
        # z = -17) and its log was -inf: pictures unlike the training's scored as errors. F.logsigmoid
        # exports as Log(Sigmoid), the same underflow; softplus as ONNX's Softplus, which TensorRT runs too
        return -F.softplus(-(raw + 2.0)), shift

    def forward(self, x):
        half = x.shape[1] // 2
        xa, xb = x[:, :half], x[:, half:]
        log_scale, shift = self._log_scale_shift(xa)
        yb = (xb + shift) * log_scale.exp()
        return torch.cat([xa, yb], dim=1), log_scale.flatten(1).sum(dim=1)

    def inverse(self, y):
        half = y.shape[1] // 2
        ya, yb = y[:, :half], y[:, half:]
        log_scale, shift = self._log_scale_shift(ya)
        return torch.cat([ya, yb * (-log_scale).exp() - shift], dim=1)


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.conv = InvConv1x1(channels)
        self.coupling = AffineCoupling(channels, hidden)

    def forward(self, x):
        x, a = self.actnorm(x)
        x, b = self.conv(x)
        x, c = self.coupling(x)
        return x, a + b + c

    def inverse(self, y):
        return self.actnorm.inverse(self.conv.inverse(self.coupling.inverse(y)))


class Glow(nn.Module):
    """Multi-scale: each level squeezes, runs its steps, then (but the last) factors out half
    the channels as latents. z is returned flat: [batch, C*H*W], the factored-out parts first."""

    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.levels = nn.ModuleList()
        channels, size = c.image_channels, c.image_size
        self.shapes = []   # the shape of each level's factored-out latents, and the last level's
        for level in range(c.levels):
            channels, size = channels * 4, size // 2
            self.levels.append(nn.ModuleList(FlowStep(channels, c.hidden) for _ in range(c.steps_per_level)))
            if level < c.levels - 1:
                self.shapes.append((channels // 2, size, size))
                channels //= 2
        self.shapes.append((channels, size, size))

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [0, 1] -> logit space, with the log-determinant of that map."""
        y = LOGIT_ALPHA + (1 - 2 * LOGIT_ALPHA) * x
        z = torch.log(y) - torch.log1p(-y)
        logdet = (math.log(1 - 2 * LOGIT_ALPHA) - torch.log(y) - torch.log1p(-y)).flatten(1).sum(dim=1)
        return z, logdet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, logdet = self.preprocess(x)
        outs = []
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if i < len(self.levels) - 1:
                half = h.shape[1] // 2
                outs.append(h[:, half:].flatten(1))
                h = h[:, :half]
        outs.append(h.flatten(1))
        return torch.cat(outs, dim=1), logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        parts, start = [], 0
        for shape in self.shapes:
            n = shape[0] * shape[1] * shape[2]
            parts.append(z[:, start:start + n].reshape(-1, *shape))
            start += n
        h = parts[-1]
        for i in reversed(range(len(self.levels))):
            if i < len(self.levels) - 1:
                h = torch.cat([h, parts[i]], dim=1)
            for step in reversed(self.levels[i]):
                h = step.inverse(h)
            h = unsqueeze(h)
        y = torch.sigmoid(h)
        return (y - LOGIT_ALPHA) / (1 - 2 * LOGIT_ALPHA)

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm initialization: run the first batch through, setting each
        ActNorm to zero mean, unit variance on what reaches it."""
        h, _ = self.preprocess(x)
        for i, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                step.actnorm.initialize(h)
                h, _ = step(h)
            if i < len(self.levels) - 1:
                h = h[:, : h.shape[1] // 2]


class Flow(nn.Module):
    """One family, two kinds: `net` is a RealNVP or a Glow."""

    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.net = RealNVP(c) if c.kind == "realnvp" else Glow(c)

    def freeze(self) -> "Flow":
        """Bake every 1x1 convolution's W, W^-1 and log-determinant as constants (before export)."""
        for module in self.modules():
            if isinstance(module, InvConv1x1):
                module.freeze()
        return self


class FlowForward(nn.Module):
    """x -> (z, log|det dz/dx|): the density direction, as exported."""

    def __init__(self, flow: Flow):
        super().__init__()
        self.net = flow.net

    def forward(self, x):
        return self.net(x)


class FlowInverse(nn.Module):
    """z -> x: the sampling direction, as exported."""

    def __init__(self, flow: Flow):
        super().__init__()
        self.net = flow.net

    def forward(self, z):
        return self.net.inverse(z)


def build(config: Config) -> Flow:
    return Flow(config)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z**2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def dequantize(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Grey level k of `levels` spread uniformly over [k, k + 1) / levels (Theis et al., 2016)."""
    k = torch.round(images * (levels - 1))
    return (k + torch.rand_like(images)) / levels


class Trainer:
    """Maximum likelihood with a cosine learning-rate decay; images are dequantized afresh at
    every step."""

    def __init__(self, model: Flow, lr: float, total_steps: int = 1):
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(total_steps, 1))
        self.initialized = False

    def start_from_trained(self) -> None:
        """train --init loaded trained weights: Glow's ActNorms keep theirs, not the first batch's."""
        self.initialized = True

    def step(self, data: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        net = self.model.net
        c = self.model.config
        x = data if c.kind == "realnvp" else dequantize(data, c.dequant_levels)
        if not self.initialized and isinstance(net, Glow):
            net.initialize(x)
        self.initialized = True
        z, logdet = net(x)
        nll = -(standard_normal_log_prob(z) + logdet).mean()
        self.optimizer.zero_grad(set_to_none=True)
        nll.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()
        self.schedule.step()
        return {"nll": nll.item() / self.model.config.event_dim}


def make_points(name: str, n: int, seed: int) -> np.ndarray:
    """scikit-learn's toy 2-D densities, float32 [n, 2]."""
    from sklearn import datasets

    if name == "moons":
        x, _ = datasets.make_moons(n, noise=0.05, random_state=seed)
    elif name == "circles":
        x, _ = datasets.make_circles(n, noise=0.05, factor=0.5, random_state=seed)
    else:
        x, _ = datasets.make_blobs(n, centers=[[-2, -2], [2, -2], [0, 2.5]], cluster_std=0.5, random_state=seed)
    return x.astype(np.float32)


def prepare_data(source: str, image_size: int, channels: int | None, seed: int, options: dict | None = None):
    """The training data and the config it implies: points for RealNVP, images for Glow."""
    from ...errors import DataError
    from ...training.data import BUILTIN_IMAGE_DATA, ImageData, load_images, what_else

    if source in POINT_DATA:
        train, test = make_points(source, TRAIN_POINTS, seed), make_points(source, TEST_POINTS, seed + 1)
        config = {"kind": "realnvp", "dim": 2, "couplings": 12, "hidden": 128,
                  "data_mean": train.mean(axis=0).tolist(), "data_std": train.std(axis=0).tolist()}
        return ImageData(source, train, test), config
    if source not in BUILTIN_IMAGE_DATA and not Path(source).is_dir():   # said with the point sets too
        raise DataError(f"data {source!r}: expected one of {', '.join(POINT_DATA)} (2-D points: RealNVP), "
                        f"{', '.join(BUILTIN_IMAGE_DATA)} or a folder of images (Glow), found {what_else(source, 'images')}"
                        + (" (points from a file are not read)" if Path(source).is_file() else ""))
    images = load_images(source, image_size=image_size, channels=channels, seed=seed)
    c, h, _ = images.shape
    levels = DEQUANT_LEVELS if source == "digits" else IMAGE_LEVELS
    return images, {"kind": "glow", "image_channels": c, "image_size": h, "dequant_levels": levels}
