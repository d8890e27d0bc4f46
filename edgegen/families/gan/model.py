"""A DCGAN-style GAN whose generator upsamples by nearest-neighbour resize + conv."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...training.ema import EMA
from ..vae.model import image_model_problems, upsample_block

FAMILY = "gan"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_STEPS = 2500
DEFAULT_BATCH = 64
DEFAULT_LR = 2e-4


@dataclass
class AdversarialConfig:
    """What every GAN-trained family shares (the cGAN's and StyleGAN's configs extend it)."""
    image_channels: int = 1
    image_size: int = 32
    latent_dim: int = 64
    width: int = 32
    ema_decay: float = 0.999
    r1_gamma: float = 1.0
    r1_interval: int = 4      # lazy regularization (StyleGAN2): the penalty every 4th step, 4x as strong

    def validate(self) -> list[str]:
        return image_model_problems(self)


OUTPUT_LAYERS = ("subpixel", "resize")
# Checkpoints written before output_layer existed: their generators end in resize + conv.
LEGACY_DEFAULTS = {"output_layer": "resize"}


@dataclass
class Config(AdversarialConfig):
    """DCGAN's size (ngf = ndf = 64: 256-128-64 channels) and a sub-pixel output layer: the
    int8 variant pays from this size on (measured: docs/optimization.md)."""
    width: int = 64
    # subpixel: a conv to 4x the channels at half size, then depth-to-space (Shi et al., 2016);
    # resize: nearest resize, then a conv with one output channel per colour at full size,
    # which ONNX Runtime's CPU kernels run slowly (they vectorize over output channels).
    output_layer: str = "subpixel"

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.output_layer not in OUTPUT_LAYERS:
            problems.append(f"output_layer expected one of {', '.join(OUTPUT_LAYERS)}, found {self.output_layer!r}")
        return problems


class Generator(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w, base = c.width, c.image_size // 8
        self.fc = nn.Linear(c.latent_dim, 4 * w * base * base)
        if c.output_layer == "subpixel":
            output = [nn.Conv2d(w, 4 * c.image_channels, 3, padding=1), nn.PixelShuffle(2)]
        else:
            output = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, c.image_channels, 3, padding=1)]
        self.net = nn.Sequential(
            nn.Unflatten(1, (4 * w, base, base)), nn.BatchNorm2d(4 * w), nn.ReLU(),
            upsample_block(4 * w, 2 * w), upsample_block(2 * w, w), *output, nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z))


class ImageGenerator(nn.Module):
    """The generator as exported: tanh's [-1, 1] mapped to images in [0, 1] inside the
    graph, so the runtime hands the engine's output to the user as it is."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z) * 0.5 + 0.5


class Discriminator(nn.Module):
    """No normalization layers: with the R1 penalty (as in StyleGAN2) this trained clearer
    digits here than DCGAN's BatchNorm discriminator, which overpowered the generator."""

    def __init__(self, c: Config):
        super().__init__()
        w = c.width
        self.net = nn.Sequential(
            nn.Conv2d(c.image_channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(4 * w * (c.image_size // 8) ** 2, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).squeeze(1)


class GAN(nn.Module):
    """The generator being trained, its exponential moving average (what is exported: EMA
    weights give visibly cleaner samples than the last step's), and the discriminator."""

    def __init__(self, c: Config, generator: type[nn.Module] | None = None, discriminator: type[nn.Module] | None = None):
        """generator / discriminator: the classes to build (the GAN family's by default; the
        class-conditional GAN and StyleGAN bring their own)."""
        super().__init__()
        self.config = c
        self.generator = (generator or Generator)(c)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.discriminator = (discriminator or Discriminator)(c)


def build(config: Config) -> GAN:
    return GAN(config)


class Trainer:
    """Non-saturating GAN loss with the R1 gradient penalty on real images (Mescheder et
    al., 2018), Adam(0.5, 0.999) as in DCGAN, and an EMA of the generator."""

    def __init__(self, model: GAN, lr: float, total_steps: int = 1):
        self.model = model
        betas = (0.5, 0.999)
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)
        self.ema = EMA(model.generator, model.generator_ema, model.config.ema_decay)
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        d = self.model.discriminator
        return self._adversarial_step(images, self.model.generator, d, d)

    def _adversarial_step(self, images, generate, score_real, score_fake) -> dict[str, float]:
        """One discriminator and one generator update. generate(z) -> fake images;
        score_real / score_fake(images) -> logits (conditional GANs close over the labels)."""
        c = self.model.config
        z = torch.randn(images.shape[0], c.latent_dim)
        fake = generate(z)
        regularize = c.r1_gamma > 0 and self.steps % max(c.r1_interval, 1) == 0
        self.steps += 1
        real = images.detach().requires_grad_(regularize)
        real_logits, fake_logits = score_real(real), score_fake(fake.detach())
        loss_d = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        if regularize:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            penalty = grad.pow(2).sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + c.r1_gamma / 2 * max(c.r1_interval, 1) * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        loss_g = F.softplus(-score_fake(fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.ema.update()
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item()}
