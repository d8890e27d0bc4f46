"""A compact super-resolution GAN in the spirit of Real-ESRGAN's SRVGGNetCompact: a plain
stack of 3x3 convolutions at the low resolution, a pixel-shuffle upsampler, and the input's
bilinear upscale added back, so the network learns only the missing detail.

Training has two phases, as ESRGAN's has: the first `pixel_fraction` of the steps minimise
the L1 pixel loss alone (a PSNR-oriented start), while (in its last `feature_steps`) a small
feature network learns to tell which degradation a crop went through; then the generator also
meets a patch discriminator and a feature loss computed by that network, frozen. No
downloaded VGG: the feature network is trained here, on the same photographs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from ...training.data import ImageData, random_crops
from ...training.ema import EMA
from .data import MAX_ZOOM, held_out_crops, photo_split
from .degrade import Degradation, bicubic, degrade, jpeg
from .pipeline import TRAINED_SCALES

FAMILY = "sr"
DATA_RANGE = None              # images stay in [0, 1]
DEFAULT_DATA = "natural"
DEFAULT_IMAGE_SIZE = None      # the high-resolution training crop: LOW_RES_CROP times the scale
LOW_RES_CROP = 16              # input pixels per training crop side (64 at x4, 48 at x3)
DEFAULT_STEPS = 4000
DEFAULT_BATCH = 16
DEFAULT_LR = 7e-4
SCALES = TRAINED_SCALES
TRAIN_CROPS = 3000


@dataclass
class Config:
    image_channels: int = 3
    image_size: int = 4 * LOW_RES_CROP
    scale: int = 4
    width: int = 32
    body_convs: int = 6
    pixel_fraction: float = 0.9      # steps of pixel loss only, before the adversarial phase
    feature_steps: int = 1000        # the feature network learns in the pixel phase's last this many steps
    feature_weight: float = 0.003    # relative feature differences summed over 3 layers: ~1.8
    adversarial_weight: float = 0.001
    blur_max: float = Degradation.blur_max
    noise_max: float = Degradation.noise_max
    jpeg_min: int = Degradation.jpeg_min

    @property
    def receptive_radius(self) -> int:
        """Low-resolution pixels of context each output pixel sees on each side: one per 3x3 conv."""
        return self.body_convs + 2

    @property
    def degradation(self) -> Degradation:
        return Degradation(self.blur_max, self.noise_max, self.jpeg_min)

    def validate(self) -> list[str]:
        problems = self.degradation.problems()
        if self.image_channels != 3:
            problems.append(f"image_channels expected 3 (RGB; the runtime upscales grey and RGBA images through it), "
                            f"found {self.image_channels}")
        if self.scale not in SCALES:
            problems.append(f"scale expected one of {SCALES}, found {self.scale}")
        elif self.image_size % self.scale or self.image_size // self.scale < 8:
            problems.append(f"image_size expected a multiple of scale {self.scale} of at least {8 * self.scale}, "
                            f"found {self.image_size}")
        if self.feature_steps < 0:
            problems.append(f"feature_steps expected 0 or more, found {self.feature_steps}")
        if self.width < 1 or self.body_convs < 0:
            problems.append(f"width and body_convs expected positive, found {self.width}, {self.body_convs}")
        if not 0 <= self.pixel_fraction <= 1:
            problems.append(f"pixel_fraction expected 0 to 1, found {self.pixel_fraction}")
        return problems


class Generator(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        # ReLU rather than the compact model's PReLU: int8 Conv+Relu fuse into one quantized
        # kernel in ONNX Runtime and TensorRT, where a PReLU would sit in float between them
        layers = [nn.Conv2d(c.image_channels, c.width, 3, padding=1), nn.ReLU()]
        for _ in range(c.body_convs):
            layers += [nn.Conv2d(c.width, c.width, 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(c.width, c.image_channels * c.scale ** 2, 3, padding=1), nn.PixelShuffle(c.scale)]
        self.body = nn.Sequential(*layers)
        self.scale = c.scale

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        # the input upscaled bilinearly is the base the network adds detail to: a short CPU
        # training starts from bilinear quality (Real-ESRGAN's compact model, trained far longer,
        # adds to nearest-neighbour)
        return self.body(low) + F.interpolate(low, scale_factor=self.scale, mode="bilinear", align_corners=False)


def bilinear_base(feed: dict, outputs: dict) -> dict:
    """The output Generator adds its learned correction to, for optimize's gate ("detail"): the
    input upscaled bilinearly, clipped to [0, 1] as Upscaler clips its output."""
    low = torch.from_numpy(np.ascontiguousarray(feed["image"], dtype=np.float32))
    scale = outputs["upscaled"].shape[-1] // low.shape[-1]
    base = F.interpolate(low, scale_factor=scale, mode="bilinear", align_corners=False)
    return {"upscaled": base.clamp(0, 1).numpy().astype(np.float64)}


class Upscaler(nn.Module):
    """The generator as exported: the output clipped to [0, 1] inside the graph."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.generator(image).clamp(0.0, 1.0)


class Discriminator(nn.Module):
    """A patch discriminator on high-resolution images (one logit per 8x8 patch), spectrally
    normalized for a stable adversarial phase."""

    def __init__(self, c: Config):
        super().__init__()
        w = c.width
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(c.image_channels, w, 3, 1, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(4 * w, 4 * w, 4, 2, 1)), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 1, 3, 1, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


DEGRADATION_CLASSES = ("clean", "blurred", "noisy", "jpeg", "resampled")


class FeatureNet(nn.Module):
    """The perceptual-style loss network, trained here: it learns which degradation a crop went
    through (DEGRADATION_CLASSES), so its features respond to blur, noise, blocking and
    resampling, the differences the feature loss should see."""

    def __init__(self, c: Config):
        super().__init__()
        ch = c.image_channels
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Conv2d(ch, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(64, 96, 3, padding=1), nn.ReLU()),
        ])
        self.head = nn.Linear(96, len(DEGRADATION_CLASSES))

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            image = stage(image)
            out.append(image)
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image)[-1].mean(dim=(2, 3)))


class SuperResolution(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.generator = Generator(c)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.discriminator = Discriminator(c)
        self.features = FeatureNet(c)


def build(config: Config) -> SuperResolution:
    return SuperResolution(config)


def prepare_data(source: str, image_size: int, channels: int | None, seed: int, options: dict | None = None):
    """High-resolution RGB crops: of the shipped photographs but HELD_OUT_PHOTOS ("natural"; the
    held-out crops come from those), or of a folder's images, a tenth of the images held out."""
    from ...errors import DataError

    if channels not in (None, 3):
        raise DataError(f"channels: expected 3 for super-resolution (it upscales grey images as RGB), found {channels}")
    if image_size is None:   # a 0 given is refused by the crops, not replaced
        image_size = LOW_RES_CROP * (options or {}).get("scale", Config.scale)
    train, _ = photo_split(source, seed, image_size)
    data = ImageData(source, random_crops(train, image_size, TRAIN_CROPS, np.random.default_rng(seed), MAX_ZOOM),
                     held_out_crops(source, image_size, seed))
    return data, {"image_channels": 3, "image_size": image_size}


def degraded_batch(images: np.ndarray, c: Config, rng: np.random.Generator) -> np.ndarray:
    """Low-resolution inputs [N, 3, H / scale, W / scale] for high-resolution images [N, 3, H, W]."""
    return np.stack([degrade(image, c.scale, rng, c.degradation) for image in images])


def _one_degradation(image: np.ndarray, kind: int, c: Config, rng: np.random.Generator) -> np.ndarray:
    """`image` through the DEGRADATION_CLASSES[kind] alone, at a strength drawn per image, at its own size."""
    if kind == 1:
        return _blurred(image, rng.uniform(0.6, 2.0))
    if kind == 2:
        return np.clip(image + rng.normal(0, rng.uniform(0.01, 0.05), image.shape).astype(np.float32), 0, 1)
    if kind == 3:
        return jpeg(image, int(rng.integers(20, 80)))
    if kind == 4:
        small = image[:, ::c.scale, ::c.scale]
        return bicubic(small, c.scale)[:, :image.shape[1], :image.shape[2]]
    return image


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    from .degrade import from_integers, to_integers

    return from_integers(np.asarray(Image.fromarray(to_integers(image)).filter(ImageFilter.GaussianBlur(radius=sigma))))


class Trainer:
    """Pixel phase: L1 loss; the feature network learns the degradation classes on the side.
    Adversarial phase: L1 + feature_weight x the feature loss (per layer, relative to the
    target's feature size) + adversarial_weight x the non-saturating GAN loss against the
    patch discriminator. Adam with a cosine decay; an EMA of the generator is what is exported."""

    def __init__(self, model: SuperResolution, lr: float, total_steps: int = 1):
        from ...training.common import adam_with_cosine

        self.model = model
        self.opt_g, self.schedule = adam_with_cosine(model.generator.parameters(), lr, total_steps)
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr / 2, betas=(0.5, 0.999))
        self.opt_f = torch.optim.Adam(model.features.parameters(), lr=1e-3)
        self.ema = EMA(model.generator, model.generator_ema, 0.999)
        self.pixel_steps = int(round(model.config.pixel_fraction * total_steps))
        self.rng = np.random.default_rng(torch.initial_seed())   # the degradations follow the training seed
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        c, m = self.model.config, self.model
        low = torch.from_numpy(degraded_batch(images.numpy(), c, self.rng))
        upscaled = m.generator(low)
        loss = F.l1_loss(upscaled, images)
        losses = {"l1": loss.item()}
        if self.steps < self.pixel_steps:
            if self.steps >= self.pixel_steps - self.model.config.feature_steps:
                losses["feature_ce"] = self._train_features(images.numpy())
        else:
            m.features.requires_grad_(False)
            feature = sum(F.l1_loss(a, b) / (b.abs().mean() + 1e-6)
                          for a, b in zip(m.features.features(upscaled), m.features.features(images)))
            adversarial = F.softplus(-m.discriminator(upscaled)).mean()
            loss = loss + c.feature_weight * feature + c.adversarial_weight * adversarial
            losses.update(feature=feature.item(), g_adv=adversarial.item())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.schedule.step()
        self.ema.update()
        if self.steps >= self.pixel_steps:
            losses["d"] = self._train_discriminator(images, upscaled.detach())
        self.steps += 1
        return losses

    def _train_features(self, images: np.ndarray) -> float:
        kinds = self.rng.integers(len(DEGRADATION_CLASSES), size=len(images))
        batch = np.stack([_one_degradation(image, int(k), self.model.config, self.rng) for image, k in zip(images, kinds)])
        loss = F.cross_entropy(self.model.features(torch.from_numpy(batch)), torch.from_numpy(kinds))
        self.opt_f.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_f.step()
        return loss.item()

    def _train_discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        d = self.model.discriminator
        loss = F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.item()
