"""The torch side: Config, build(config), Trainer and the training defaults edgegen's train() reads."""

from dataclasses import dataclass

import torch
import torch.nn as nn

DATA_RANGE = None            # images stay in [0, 1]
DEFAULT_STEPS = 300
DEFAULT_BATCH = 64
DEFAULT_LR = 1e-2
DEFAULT_IMAGE_SIZE = 8


@dataclass
class Config:
    image_channels: int = 1
    image_size: int = 8
    latent_dim: int = 8

    def validate(self) -> list[str]:
        return [] if self.latent_dim > 0 else [f"latent_dim expected positive, found {self.latent_dim}"]


class LinearAutoencoder(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        pixels = c.image_channels * c.image_size * c.image_size
        self.shape = (c.image_channels, c.image_size, c.image_size)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, c.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(c.latent_dim, pixels), nn.Unflatten(1, self.shape), nn.Sigmoid())

    def forward(self, image):
        return self.decoder(self.encoder(image))


def build(config: Config) -> LinearAutoencoder:
    return LinearAutoencoder(config)


class Trainer:
    def __init__(self, model, lr, total_steps=1):
        self.model, self.opt = model, torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, images, labels=None) -> dict:
        loss = nn.functional.mse_loss(self.model(images), images)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"mse": loss.item()}
