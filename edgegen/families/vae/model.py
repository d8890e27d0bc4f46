"""A convolutional VAE: encoder to (mu, logvar), decoder by nearest-neighbour resize + conv."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ...training.common import bernoulli_nll

FAMILY = "vae"
DATA_RANGE = (0.0, 1.0)
DEFAULT_STEPS = 1500
DEFAULT_BATCH = 64
DEFAULT_LR = 2e-3


@dataclass
class Config:
    image_channels: int = 1
    image_size: int = 32
    latent_dim: int = 16
    width: int = 32
    kl_weight: float = 1.0

    def validate(self) -> list[str]:
        return image_model_problems(self)


def image_model_problems(c) -> list[str]:
    """What the VAE and GAN configs share: three x2 stages and positive sizes."""
    problems = []
    if c.image_size % 8:
        problems.append(f"image_size expected a multiple of 8 (three x2 stages), found {c.image_size}")
    if c.latent_dim < 1 or c.width < 1:
        problems.append(f"latent_dim and width expected positive, found {c.latent_dim} and {c.width}")
    return problems


class Encoder(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w = c.width
        self.features = nn.Sequential(
            nn.Conv2d(c.image_channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        flat = 4 * w * (c.image_size // 8) ** 2
        self.mu = nn.Linear(flat, c.latent_dim)
        self.logvar = nn.Linear(flat, c.latent_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(image)
        return self.mu(h), self.logvar(h)


def upsample_block(cin: int, cout: int) -> nn.Sequential:
    """Nearest-neighbour x2 then a 3x3 conv: no checkerboard artifacts, and unlike
    ConvTranspose it has int8 kernels in ONNX Runtime's CPU provider."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Decoder(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w = c.width
        self.base = c.image_size // 8
        self.fc = nn.Linear(c.latent_dim, 4 * w * self.base**2)
        self.net = nn.Sequential(
            nn.ReLU(), nn.Unflatten(1, (4 * w, self.base, self.base)),
            upsample_block(4 * w, 2 * w), upsample_block(2 * w, w), upsample_block(w, w),
            nn.Conv2d(w, c.image_channels, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z))


class VAE(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(image)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decoder(z), mu, logvar


def build(config: Config) -> VAE:
    return VAE(config)


def loss_terms(model: VAE, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Negative ELBO per image: Bernoulli reconstruction plus KL to N(0, I)."""
    recon, mu, logvar = model(images)
    n = images.shape[0]
    rec = bernoulli_nll(recon, images)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
    return {"recon": rec, "kl": kl, "loss": rec + model.config.kl_weight * kl}


class Trainer:
    def __init__(self, model: VAE, lr: float, total_steps: int = 1):
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        terms = loss_terms(self.model, images)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optimizer.step()
        return {k: v.item() for k, v in terms.items()}
