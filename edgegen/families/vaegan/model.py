"""VAE-GAN (Larsen et al., 2016): the VAE family's encoder and decoder, the decoder also
trained against a discriminator (non-saturating loss on reconstructions and prior samples)
and to match the discriminator's features of the real images, which is what sharpens the
blurry averages a pixel-wise likelihood alone settles for. Exported and served as a VAE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..gan import model as gan
from ..vae import model as vae
from ...training.common import bernoulli_nll

FAMILY = "vaegan"
DATA_RANGE = (0.0, 1.0)
DEFAULT_STEPS = 2500
DEFAULT_BATCH = 64
DEFAULT_LR = 1e-3


@dataclass
class Config(vae.Config):
    """The VAE's settings, and the adversarial ones."""
    adversarial_weight: float = 20.0     # relative to the per-image reconstruction sum (~300 nats)
    feature_weight: float = 10.0
    r1_gamma: float = 1.0
    r1_interval: int = 4


class Discriminator(nn.Module):
    """The GAN family's discriminator on images in [0, 1], exposing its last features."""

    def __init__(self, c: Config):
        super().__init__()
        layers = list(gan.Discriminator(gan.Config(c.image_channels, c.image_size, width=c.width)).net)
        self.features, self.score = nn.Sequential(*layers[:-1]), layers[-1]

    def forward(self, image):
        h = self.features(image * 2 - 1)
        return self.score(h).squeeze(1), h


class VAEGAN(vae.VAE):
    def __init__(self, c: Config):
        super().__init__(c)
        self.discriminator = Discriminator(c)


def build(config: Config) -> VAEGAN:
    return VAEGAN(config)


class Trainer:
    """Per step: the discriminator on real vs reconstructed and prior-sampled images (with
    lazy R1), then encoder and decoder on the negative ELBO plus the adversarial and
    feature-matching terms. Adam(0.5, 0.999) for both, as in the GAN family."""

    def __init__(self, model: VAEGAN, lr: float, total_steps: int = 1):
        self.model = model
        betas = (0.5, 0.999)
        vae_parameters = list(model.encoder.parameters()) + list(model.decoder.parameters())
        self.opt_vae = torch.optim.Adam(vae_parameters, lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr * 0.2, betas=betas)
        self.steps = 0

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        m, c = self.model, self.model.config
        d = m.discriminator
        recon, mu, logvar = m(images)
        prior = m.decoder(torch.randn_like(mu))
        regularize = c.r1_gamma > 0 and self.steps % max(c.r1_interval, 1) == 0
        self.steps += 1
        real = images.detach().requires_grad_(regularize)
        real_logits, _ = d(real)
        loss_d = F.softplus(-real_logits).mean() + 0.5 * (F.softplus(d(recon.detach())[0]).mean()
                                                          + F.softplus(d(prior.detach())[0]).mean())
        if regularize:
            (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss_d = loss_d + c.r1_gamma / 2 * max(c.r1_interval, 1) * grad.pow(2).sum(dim=(1, 2, 3)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        n = images.shape[0]
        rec = bernoulli_nll(recon, images)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        recon_logits, recon_features = d(recon)
        with torch.no_grad():
            _, real_features = d(images)
        adversarial = F.softplus(-recon_logits).mean() + F.softplus(-d(prior)[0]).mean()
        features = F.mse_loss(recon_features, real_features)
        loss = rec + c.kl_weight * kl + c.adversarial_weight * adversarial + c.feature_weight * features
        self.opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_vae.step()
        return {"recon": rec.item(), "kl": kl.item(), "adv": adversarial.item(), "loss_d": loss_d.item()}
