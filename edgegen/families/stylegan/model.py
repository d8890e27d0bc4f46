"""A small StyleGAN2-style generator (Karras et al., 2020): a mapping network z -> w, and a
synthesis network from a learned constant through modulated, demodulated convolutions with
one style vector per layer, per-layer noise inputs and toRGB skips summed across
resolutions. Trained like the GAN family (non-saturating loss, lazy R1, EMA generator) with
style-mixing regularization.

Two departures from the paper, both for the edge: upsampling is a nearest-neighbour resize
followed by the layer's convolution (int8-friendly in ONNX Runtime, see docs/architecture.md) instead of
a transposed convolution with an FIR filter, and the modulation is applied to the activations
(x * style, a shared convolution, then * demodulation coefficients), the paper's own
non-fused form: a grouped convolution would need the batch size as a static attribute in
ONNX, this form keeps the batch dynamic. Path-length regularization is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..gan import model as gan

FAMILY = "stylegan"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 64
DEFAULT_LR = 2e-4
LRELU_GAIN = math.sqrt(2)   # keeps activations' scale through leaky ReLU, as StyleGAN2's bias_act


@dataclass
class Config(gan.AdversarialConfig):
    """The GAN's settings (latent_dim is z's size), and the style network's."""
    w_dim: int = 64
    mapping_layers: int = 4
    mapping_lr_mul: float = 0.1     # the mapping network's learning rate, relative to lr (slower, as StyleGAN's)
    style_lr_mul: float = 10.0      # the style affines' and the constant's (unit-scale weights, see EqualLinear)
    style_mixing: float = 0.5       # share of training batches whose styles come from two latents
    noise_seed: int = 0             # the "const" noise mode's fixed noise is drawn from this seed at run time

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.image_size < 8 or self.image_size & (self.image_size - 1):
            problems.append(f"image_size expected a power of two from 8 up (4x4 constant, x2 blocks), found {self.image_size}")
        if self.w_dim < 1 or self.mapping_layers < 1:
            problems.append(f"w_dim and mapping_layers expected positive, found {self.w_dim} and {self.mapping_layers}")
        if self.noise_seed < 0:
            problems.append(f"noise_seed expected a non-negative integer, found {self.noise_seed}")
        if not 0 <= self.style_mixing <= 1:
            problems.append(f"style_mixing expected a probability in [0, 1], found {self.style_mixing}")
        return problems

    @property
    def resolutions(self) -> list[int]:
        return [4 * 2**i for i in range(int(math.log2(self.image_size)) - 1)]

    @property
    def num_ws(self) -> int:
        """Style vectors the synthesis takes: per resolution two convolutions and a toRGB,
        the toRGB sharing its style with the next block's first convolution (as StyleGAN2)."""
        return 2 * len(self.resolutions)

    @property
    def noise_shapes(self) -> list[int]:
        """The side of each noise input, one per convolution: 4x4 has one, every later block two."""
        return [self.resolutions[0]] + [r for r in self.resolutions[1:] for _ in range(2)]

    def channels(self, resolution: int) -> int:
        return min(4 * self.width, self.width * self.image_size // resolution)


class EqualLinear(nn.Module):
    """A linear layer with StyleGAN's equalized learning rate: unit-variance weights scaled
    by 1/sqrt(fan_in) at run time. With PyTorch's default initialisation the mapping
    network's output shrank layer by layer until every z gave nearly the same w (measured:
    one image for all seeds after 3,000 steps); this keeps w at unit scale."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.full((cout,), float(bias_init)))
        self.scale = 1.0 / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class MappingNetwork(nn.Module):
    """z -> w: normalize z to the unit sphere's scale, then an MLP."""

    def __init__(self, c: Config):
        super().__init__()
        dims = [c.latent_dim] + [c.w_dim] * c.mapping_layers
        self.layers = nn.ModuleList(EqualLinear(a, b) for a, b in zip(dims, dims[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # clamp_min, not + 1e-8: torch.onnx's optimizer drops an addend that small (a zero z gave NaN)
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True).clamp_min(1e-8))
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * LRELU_GAIN
        return x


class ModulatedConv(nn.Module):
    """A convolution whose input channels are scaled by a style from w, and whose output
    channels are rescaled to unit expected variance (demodulation)."""

    def __init__(self, cin: int, cout: int, w_dim: int, kernel: int, demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) / math.sqrt(cin * kernel * kernel))
        self.affine = EqualLinear(w_dim, cin, bias_init=1.0)   # styles start near 1: the convolution as initialised
        self.demodulate, self.up, self.padding = demodulate, up, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)                                      # [n, cin]
        x = x * styles[:, :, None, None]
        if self.up:  # after the modulation: the scaling runs at the lower resolution
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.weight, padding=self.padding)
        if self.demodulate:
            # Mul + ReduceSum rather than a MatMul: the optimizer's int8 pass leaves it in float
            energy = (styles.square()[:, None, :] * self.weight.square().sum(dim=(2, 3))[None]).sum(dim=2)
            x = x * torch.rsqrt(energy.clamp_min(1e-8))[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv(cin, cout, w_dim, 3, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w) + noise * self.noise_strength + self.bias[None, :, None, None]
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class ToRGB(nn.Module):
    def __init__(self, cin: int, channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv(cin, channels, w_dim, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class SynthesisNetwork(nn.Module):
    """(ws [n, num_ws, w_dim], one noise map [n, 1, r, r] per convolution) -> image in about [-1, 1]."""

    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        first = c.channels(4)
        self.const = nn.Parameter(torch.randn(first, 4, 4))
        self.layers, self.torgbs = nn.ModuleList([SynthesisLayer(first, first, c.w_dim)]), nn.ModuleList()
        self.torgbs.append(ToRGB(first, c.image_channels, c.w_dim))
        for resolution in c.resolutions[1:]:
            cin, cout = c.channels(resolution // 2), c.channels(resolution)
            self.layers.append(SynthesisLayer(cin, cout, c.w_dim, up=True))
            self.layers.append(SynthesisLayer(cout, cout, c.w_dim))
            self.torgbs.append(ToRGB(cout, c.image_channels, c.w_dim))

    def forward(self, ws: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.layers[0](x, ws[:, 0], noise[0])
        image = self.torgbs[0](x, ws[:, 1])
        for block in range(1, len(self.torgbs)):
            first = 2 * block - 1   # this block's first convolution: its layer, style and noise index
            x = self.layers[first](x, ws[:, first], noise[first])
            x = self.layers[first + 1](x, ws[:, first + 1], noise[first + 1])
            image = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
            image = image + self.torgbs[block](x, ws[:, first + 2])
        return image


class ImageSynthesis(nn.Module):
    """The synthesis graph as exported: images in [0, 1] (the paper's outputs are unbounded
    near [-1, 1]; the runtime hands the user displayable pixels)."""

    def __init__(self, synthesis: SynthesisNetwork):
        super().__init__()
        self.synthesis = synthesis

    def forward(self, ws: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return (self.synthesis(ws, *noise) * 0.5 + 0.5).clamp(0.0, 1.0)


class Generator(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.mapping = MappingNetwork(c)
        self.synthesis = SynthesisNetwork(c)

    def random_noise(self, n: int) -> list[torch.Tensor]:
        return [torch.randn(n, 1, r, r) for r in self.config.noise_shapes]

    def forward(self, z: torch.Tensor, mixing: float = 0.0) -> torch.Tensor:
        """Training-time generation: random noise, and with probability `mixing` the styles
        after a random crossover layer taken from a second latent (style-mixing regularization)."""
        c = self.config
        ws = self.mapping(z)[:, None].repeat(1, c.num_ws, 1)
        if mixing > 0 and torch.rand(()) < mixing:
            crossover = int(torch.randint(1, c.num_ws, ()))
            ws[:, crossover:] = self.mapping(torch.randn_like(z))[:, None]
        return self.synthesis(ws, *self.random_noise(len(z)))


class Discriminator(nn.Module):
    """The GAN family's convolutions with StyleGAN's minibatch standard deviation: the
    features' spread across groups of samples enters as one more channel, so the
    discriminator sees a batch without variety (mode collapse) and penalises it."""

    def __init__(self, c: Config, group: int = 4):
        super().__init__()
        w, self.group = c.width, group
        self.features = nn.Sequential(*list(gan.Discriminator(c).net)[:-2])   # the convolutions, unflattened
        side = c.image_size // 8
        self.score = nn.Sequential(nn.Conv2d(4 * w + 1, 4 * w, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                                   nn.Linear(4 * w * side * side, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.features(image)
        n, c, height, width = h.shape
        g = min(self.group, n)
        while n % g:
            g -= 1
        # the standard deviation with StyleGAN2's epsilon under the root: a group of one sample (a batch of
        # 7, which no group of 2 to 4 divides) has none, and the R1 penalty's second backward through
        # std's sqrt(0) made every gradient NaN at step 1
        spread = (h.reshape(g, n // g, c, height, width).var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
        h = torch.cat([h, spread.repeat(g)[:, None, None, None].expand(n, 1, height, width)], dim=1)
        return self.score(h).squeeze(1)


class StyleGAN(gan.GAN):
    def __init__(self, c: Config):
        super().__init__(c, Generator, Discriminator)

    @torch.no_grad()
    def average_w(self, samples: int = 10_000) -> torch.Tensor:
        """The EMA mapping network's mean output over N(0, I) latents: the truncation centre
        (StyleGAN tracks it during training; computed here from the weights that ship)."""
        z = torch.randn(samples, self.config.latent_dim, generator=torch.Generator().manual_seed(0))
        return self.generator_ema.mapping(z).mean(dim=0)


def build(config: Config) -> StyleGAN:
    return StyleGAN(config)


class Trainer(gan.Trainer):
    """The GAN family's adversarial step (non-saturating loss, lazy R1, EMA) with style
    mixing; the mapping network's and the unit-scale style parameters' learning rates are
    scaled by mapping_lr_mul and style_lr_mul (StyleGAN's equalized rates, in effect)."""

    def __init__(self, model: StyleGAN, lr: float, total_steps: int = 1):
        super().__init__(model, lr, total_steps)
        g, c = model.generator, model.config
        styles = [p for name, p in g.synthesis.named_parameters() if ".affine." in name or name == "const"]
        others = [p for name, p in g.synthesis.named_parameters() if not (".affine." in name or name == "const")]
        self.opt_g = torch.optim.Adam([{"params": g.mapping.parameters(), "lr": lr * c.mapping_lr_mul},
                                       {"params": styles, "lr": lr * c.style_lr_mul},
                                       {"params": others}], lr=lr, betas=(0.5, 0.999))

    def step(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        g, d = self.model.generator, self.model.discriminator
        mixing = self.model.config.style_mixing
        return self._adversarial_step(images, lambda z: g(z, mixing), d, d)
