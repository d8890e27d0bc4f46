"""A small class-conditional UNet denoiser trained with the DDPM loss (Ho et al., 2020),
with label dropout for classifier-free guidance (Ho & Salimans, 2022).

UNet: sinusoidal time embedding + class embedding, residual blocks with GroupNorm,
self-attention (F.scaled_dot_product_attention) at the lowest resolution and in the middle.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...runtimes.samplers import BETA_SCHEDULES, PREDICTION_TYPES, make_betas
from ...training.common import training_labels
from ...training.ema import EMA

FAMILY = "diffusion"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_STEPS = 6000
DEFAULT_BATCH = 64
DEFAULT_LR = 1e-3
# scikit-learn's digits are 8x8: at their own size a CPU trains and samples (DDPM's 1,000
# steps included) in minutes; --image-size 16 or 32 for larger data.
DEFAULT_IMAGE_SIZE = 8


@dataclass
class Config:
    image_channels: int = 1
    image_size: int = DEFAULT_IMAGE_SIZE
    width: int = 32
    channel_mults: list = field(default_factory=lambda: [1, 2])
    num_classes: int = 10            # 0 trains an unconditional model
    label_dropout: float = 0.1       # share of labels replaced by the "no label" index
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"   # DDPM's; the capped cosine leaves alpha_T ~ 1e-9, whose x0 estimates blow up in unclipped samplers
    beta_start: float = 0.0001
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    groups: int = 8
    ema_decay: float = 0.999

    @property
    def null_label(self) -> int:
        """The class index that means "no label": the unconditional branch of guidance."""
        return self.num_classes

    def validate(self) -> list[str]:
        problems = []
        levels = len(self.channel_mults)
        if levels < 1 or self.image_size % (2 ** (levels - 1)):
            problems.append(f"image_size expected a multiple of {2 ** (levels - 1)} for {levels} levels, found {self.image_size}")
        if any(self.width * m % self.groups for m in self.channel_mults):
            problems.append(f"width x channel_mults expected multiples of groups={self.groups}, found {self.width} x {self.channel_mults}")
        if self.beta_schedule not in BETA_SCHEDULES:
            problems.append(f"beta_schedule expected one of {BETA_SCHEDULES}, found {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type expected one of {PREDICTION_TYPES}, found {self.prediction_type!r}")
        if not 0 <= self.label_dropout < 1:
            problems.append(f"label_dropout expected in [0, 1), found {self.label_dropout}")
        return problems


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in the transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SelfAttention(nn.Module):
    """Single-head attention over the pixels of a feature map; exports as one fused
    Attention op at opset 23."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # [b, 1, hw, c]
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        emb_dim = 4 * c.width
        self.time_mlp = nn.Sequential(nn.Linear(c.width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # num_classes + 1 rows, the last one "no label"; an unconditional model (0 classes) keeps
        # its single row so that every exported denoiser has the same three inputs.
        self.label_emb = nn.Embedding(c.num_classes + 1, emb_dim)
        self.conv_in = nn.Conv2d(c.image_channels, c.width, 3, padding=1)
        widths = [c.width * m for m in c.channel_mults]
        last = len(widths) - 1
        self.down, self.down_attn, self.downsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        ch = c.width
        skips = [ch]
        for level, w in enumerate(widths):
            self.down.append(ResBlock(ch, w, emb_dim, c.groups))
            self.down_attn.append(SelfAttention(w, c.groups) if level == last else nn.Identity())
            ch = w
            skips.append(ch)
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if level != last else nn.Identity())
            if level != last:
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, c.groups)
        self.mid_attn = SelfAttention(ch, c.groups)
        self.mid2 = ResBlock(ch, ch, emb_dim, c.groups)
        self.up, self.up_attn, self.upsample = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(2):  # one per skip stored at this level (block output, then downsample input)
                blocks.append(ResBlock(ch + skips.pop(), w, emb_dim, c.groups))
                ch = w
            self.up.append(blocks)
            self.up_attn.append(SelfAttention(w, c.groups) if level == last else nn.Identity())
            self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1))
                                 if level != 0 else nn.Identity())
        self.norm_out = nn.GroupNorm(c.groups, ch)
        self.conv_out = nn.Conv2d(ch, c.image_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor,
                skip_residuals: list[torch.Tensor] | None = None, mid_residual: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction; a ControlNet's residuals, when given, are added to the skips and
        to the middle block's output (as diffusers' down/mid_block_additional_residual)."""
        emb = embed(self, timestep, class_labels)
        h, skips = encode(self, sample, emb)
        if skip_residuals is not None:
            skips = [s + r for s, r in zip(skips, skip_residuals)]
            h = h + mid_residual
        for blocks, attn, up in zip(self.up, self.up_attn, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            h = up(attn(h))
        return self.conv_out(F.silu(self.norm_out(h)))


# The UNet's first half, shared with the ControlNet (which holds a trainable copy of exactly
# these modules: time_mlp, label_emb, conv_in, down, down_attn, downsample, mid1, mid_attn, mid2).
ENCODER_MODULES = ("time_mlp", "label_emb", "conv_in", "down", "down_attn", "downsample", "mid1", "mid_attn", "mid2")


def embed(m: nn.Module, timestep: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
    return m.time_mlp(timestep_embedding(timestep, m.config.width)) + m.label_emb(class_labels)


def encode(m: nn.Module, sample: torch.Tensor, emb: torch.Tensor, hint: torch.Tensor | None = None):
    """conv_in (plus a ControlNet's encoded hint), the down levels and the middle block ->
    (the middle block's output, the skips in the order the up path pops them last-first)."""
    h = m.conv_in(sample) if hint is None else m.conv_in(sample) + hint
    skips = [h]
    for block, attn, down in zip(m.down, m.down_attn, m.downsample):
        h = attn(block(h, emb))
        skips.append(h)
        if not isinstance(down, nn.Identity):
            h = down(h)
            skips.append(h)
    return m.mid2(m.mid_attn(m.mid1(h, emb)), emb), skips


class Diffusion(nn.Module):
    """The denoiser being trained and its EMA (what is exported)."""

    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.unet = UNet(c)
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.register_buffer("alphas_cumprod", alphas_cumprod(c), persistent=False)


def alphas_cumprod(c: Config) -> torch.Tensor:
    """The training noise schedule's cumulative signal shares, one per timestep."""
    betas = make_betas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end)
    return torch.from_numpy(np.cumprod(1.0 - betas)).float()


def build(config: Config) -> Diffusion:
    return Diffusion(config)


def training_target(c: Config, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """What the network learns to predict, by prediction type (a = alphas_cumprod[t])."""
    if c.prediction_type == "epsilon":
        return noise
    if c.prediction_type == "sample":
        return x0
    return a.sqrt() * noise - (1 - a).sqrt() * x0  # v_prediction


class Trainer:
    """Simple DDPM loss (MSE on the prediction target) at uniform random timesteps. The
    ControlNet and latent diffusion trainers reuse it with another trained module, another
    label dropout, or another space (predict / space below)."""

    def __init__(self, model: nn.Module, lr: float, total_steps: int = 1, trained: nn.Module | None = None,
                 ema_target: nn.Module | None = None):
        self.model = model
        self.trained = model.unet if trained is None else trained
        self.optimizer = torch.optim.AdamW(self.trained.parameters(), lr=lr, weight_decay=0.0)
        self.ema = EMA(self.trained, model.unet_ema if ema_target is None else ema_target, model.config.ema_decay)
        self.label_dropout = model.config.label_dropout

    def space(self, images: torch.Tensor) -> torch.Tensor:
        """What the denoiser learns to denoise: the images themselves."""
        return images

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.model.unet(noisy, t, labels)

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        c = self.model.config
        x0 = self.space(images)
        n = x0.shape[0]
        t = torch.randint(0, c.num_train_timesteps, (n,))
        a = self.model.alphas_cumprod[t][:, None, None, None]
        noise = torch.randn_like(x0)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        labels = training_labels(labels, n, c.num_classes, c.null_label, self.label_dropout)
        prediction = self.predict(noisy, t.float(), labels, images)
        loss = F.mse_loss(prediction, training_target(c, x0, noise, a))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trained.parameters(), 1.0)
        self.optimizer.step()
        self.ema.update()
        return {"loss": loss.item()}
