"""A class-conditional GAN in the spirit of BigGAN: the generator's batch norms take their
scale and shift from a class embedding (conditional batch normalization), the discriminator
scores image and class together by projection (Miyato & Koyama, 2018). Trained like the GAN
family (non-saturating loss, lazy R1, EMA generator); the runtime adds the truncation trick."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..gan import model as gan

FAMILY = "cgan"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 64
DEFAULT_LR = 2e-4


@dataclass
class Config(gan.AdversarialConfig):
    """The GAN's settings, and the number of classes."""
    num_classes: int = 10

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.num_classes < 1:
            problems.append(f"num_classes expected at least 1 (a class-conditional GAN needs labelled data: the built-in "
                            f"digits, or a folder whose every picture lies in one of two or more subfolders, its classes), "
                            f"found {self.num_classes}")
        return problems


class ConditionalBatchNorm(nn.Module):
    """Batch statistics as usual, scale and shift per class (1 and 0 at the start)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x, labels):
        return self.norm(x) * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class Generator(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w, self.base = c.width, c.image_size // 8
        self.fc = nn.Linear(c.latent_dim, 4 * w * self.base * self.base)
        self.norm0 = ConditionalBatchNorm(4 * w, c.num_classes)
        self.conv1, self.norm1 = nn.Conv2d(4 * w, 2 * w, 3, padding=1), ConditionalBatchNorm(2 * w, c.num_classes)
        self.conv2, self.norm2 = nn.Conv2d(2 * w, w, 3, padding=1), ConditionalBatchNorm(w, c.num_classes)
        self.out = nn.Conv2d(w, c.image_channels, 3, padding=1)

    def forward(self, z, labels):
        x = self.fc(z).unflatten(1, (-1, self.base, self.base))
        x = F.relu(self.norm0(x, labels))
        for conv, norm in ((self.conv1, self.norm1), (self.conv2, self.norm2)):
            # nearest-neighbour resize + conv, as in the GAN family (int8-friendly, no checkerboards)
            x = F.relu(norm(conv(F.interpolate(x, scale_factor=2, mode="nearest")), labels))
        return torch.tanh(self.out(F.interpolate(x, scale_factor=2, mode="nearest")))


class ImageGenerator(nn.Module):
    """As exported: (z, labels) -> images in [0, 1]."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z, labels):
        return self.generator(z, labels) * 0.5 + 0.5


class Discriminator(nn.Module):
    """The GAN family's convolutions, then a score plus the projection of the features on the class embedding."""

    def __init__(self, c: Config):
        super().__init__()
        w = c.width
        self.features = nn.Sequential(*list(gan.Discriminator(c).net)[:-1])
        flat = 4 * w * (c.image_size // 8) ** 2
        self.score = nn.Linear(flat, 1)
        self.embed = nn.Embedding(c.num_classes, flat)

    def forward(self, image, labels):
        h = self.features(image)
        return self.score(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


def build(config: Config) -> gan.GAN:
    return gan.GAN(config, Generator, Discriminator)


class Trainer(gan.Trainer):
    """The GAN family's trainer, with real labels for real images and random ones for fakes."""

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        c = self.model.config
        n = images.shape[0]
        fake_labels = torch.randint(0, c.num_classes, (n,))
        g, d = self.model.generator, self.model.discriminator
        return self._adversarial_step(images, lambda z: g(z, fake_labels), lambda x: d(x, labels),
                                      lambda x: d(x, fake_labels))
