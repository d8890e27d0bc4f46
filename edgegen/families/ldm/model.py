"""Latent diffusion (Rombach et al., 2022): a small KL-regularized convolutional autoencoder
compresses images 4x per side into a few latent channels, and the diffusion family's UNet
learns to denoise those latents. One training run does both stages: the autoencoder first
(reconstruction + a small KL term), then, with it frozen, the UNet on its latents scaled to
unit variance (Stable Diffusion's scale factor, measured here on the first UNet batch).

Three graphs: encoder (image -> scaled latent), unet (the diffusion family's signature, over
latents), decoder (scaled latent -> image). The sampling loop is the diffusion pipeline's.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..diffusion import model as diffusion

FAMILY = "ldm"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_STEPS = 8000
# the autoencoder trains first and the UNet after, a step each at the least (train refuses fewer:
# one step left the UNet untrained, and the export took it)
MIN_STEPS, MIN_STEPS_WHY = 2, "whose autoencoder trains first and its UNet after, a step each at the least"
DEFAULT_BATCH = 64
DEFAULT_LR = 1e-3
DEFAULT_IMAGE_SIZE = 32
DOWNSAMPLING = 4    # two stride-2 stages


@dataclass
class Config(diffusion.Config):
    """The diffusion UNet's settings (applied in latent space) and the autoencoder's."""
    image_size: int = DEFAULT_IMAGE_SIZE
    latent_channels: int = 4
    autoencoder_width: int = 32
    kl_weight: float = 1e-4
    autoencoder_share: float = 0.3     # the first 30% of the steps train the autoencoder

    @property
    def latent_size(self) -> int:
        return self.image_size // DOWNSAMPLING

    def unet_config(self) -> diffusion.Config:
        """The UNet's own config: the diffusion family's, over latents."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(diffusion.Config)}
        return diffusion.Config(**{**values, "image_channels": self.latent_channels, "image_size": self.latent_size})

    def validate(self) -> list[str]:
        levels = len(self.channel_mults)
        step = DOWNSAMPLING * 2 ** max(levels - 1, 0)   # the autoencoder's, then the UNet's halvings of the latents
        if self.image_size % step:
            return [f"image_size expected a multiple of {step} (the autoencoder's downsampling by {DOWNSAMPLING}, then "
                    f"the UNet's {levels} levels), found {self.image_size}"]
        # the UNet's rules apply at the latent size: say so, since the user gave the image size
        problems = [f"in latent space (image_size {self.image_size} / {DOWNSAMPLING} = {self.latent_size}): {p}"
                    for p in self.unet_config().validate()]
        if self.latent_channels < 1 or self.autoencoder_width < 1:
            problems.append(f"latent_channels and autoencoder_width expected positive, found "
                            f"{self.latent_channels} and {self.autoencoder_width}")
        if not 0 < self.autoencoder_share < 1:
            problems.append(f"autoencoder_share expected in (0, 1), found {self.autoencoder_share}")
        return problems


class Autoencoder(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        w, channels, latent = c.autoencoder_width, c.image_channels, c.latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * latent, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, 2 * w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, channels, 3, padding=1),
        )
        # latents are multiplied by it before the UNet sees them; saved with the weights
        self.register_buffer("scale_factor", torch.ones(()))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> (mean, logvar) of the latent."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class ImageEncoder(nn.Module):
    """As exported: images in [0, 1] -> the posterior mean, scaled for the UNet."""

    def __init__(self, autoencoder: Autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.posterior(image * 2 - 1)[0] * self.autoencoder.scale_factor


class ImageDecoder(nn.Module):
    """As exported: scaled latents -> images in [0, 1]."""

    def __init__(self, autoencoder: Autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        image = self.autoencoder.decoder(latent / self.autoencoder.scale_factor)
        return (image * 0.5 + 0.5).clamp(0.0, 1.0)


class LatentDiffusion(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.autoencoder = Autoencoder(c)
        self.unet = diffusion.UNet(c.unet_config())
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.register_buffer("alphas_cumprod", diffusion.alphas_cumprod(c), persistent=False)


def build(config: Config) -> LatentDiffusion:
    return LatentDiffusion(config)


class Trainer(diffusion.Trainer):
    """Stage 1: the autoencoder (MSE reconstruction + kl_weight x KL to N(0, I)). Stage 2:
    the diffusion family's DDPM loss on the frozen autoencoder's scaled latent samples."""

    def __init__(self, model: nn.Module, lr: float, total_steps: int = 1, trained: nn.Module | None = None,
                 ema_target: nn.Module | None = None):
        super().__init__(model, lr, total_steps, trained, ema_target)
        share = round(total_steps * model.config.autoencoder_share)
        self.autoencoder_steps = min(max(1, share), total_steps - 1)   # the UNet's at least one
        self.autoencoder_optimizer = torch.optim.Adam(model.autoencoder.parameters(), lr=lr)
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        self.steps += 1
        if self.steps <= self.autoencoder_steps:
            return self._autoencoder_step(images)
        if self.steps == self.autoencoder_steps + 1:
            self.model.autoencoder.requires_grad_(False)
            with torch.no_grad():   # unit variance for the UNet, as Stable Diffusion's 0.18215
                self.model.autoencoder.scale_factor.fill_(1.0 / self._latents(images, scaled=False).std().item())
        return super().step(images, labels)

    def _autoencoder_step(self, images: torch.Tensor) -> dict[str, float]:
        ae = self.model.autoencoder
        mean, logvar = ae.posterior(images)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        reconstruction = F.mse_loss(ae.decoder(z), images)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = reconstruction + self.model.config.kl_weight * kl
        self.autoencoder_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.autoencoder_optimizer.step()
        return {"reconstruction": reconstruction.item(), "kl": kl.item()}

    def _latents(self, images: torch.Tensor, scaled: bool = True) -> torch.Tensor:
        with torch.no_grad():
            ae = self.model.autoencoder
            mean, logvar = ae.posterior(images)
            z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
            return z * ae.scale_factor if scaled else z

    def space(self, images: torch.Tensor) -> torch.Tensor:
        return self._latents(images)
