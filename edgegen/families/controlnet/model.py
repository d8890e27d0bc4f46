"""ControlNet (Zhang et al., 2023) for the diffusion family's UNet: a trainable copy of the
UNet's encoder half, fed a hint image through a small convolutional encoder, whose outputs
reach the frozen UNet's skips and middle block through zero-initialized 1x1 convolutions
(so training starts from exactly the base model). Trained with the DDPM loss on the base
model's data, the hint made from each training image; class labels are dropped half the
time so that the hint alone steers the samples, as ControlNet drops its text prompts.

The hint, here: a coarse version of the image (2x2 average pooling, upsampled back), the
"coarse/blurred target" kind of control; `coarse_hint` makes it from any image.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ...errors import CheckpointError, ConfigError, DataError, EdgegenWarning
from .. import PRETRAINED
from ...shipped import checkpoint_named
from ..diffusion import model as diffusion
from .pipeline import coarse_hint

FAMILY = "controlnet"
DATA_RANGE = (-1.0, 1.0)
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 64
DEFAULT_LR = 5e-4
DEFAULT_IMAGE_SIZE = None   # the base model's
SHAPE_FROM_BASE = True      # its image size and channels, under train --init too (not the start's)
CONTROL_OPTIONS = {"hint_factor", "control_label_dropout", "ema_decay"}   # what a ControlNet may set itself
DEFAULT_BASE = PRETRAINED / "diffusion-digits"


@dataclass
class Config(diffusion.Config):
    """The base diffusion model's settings (read from its checkpoint), and the control's."""
    hint_factor: int = 2              # the hint: images average-pooled by this factor, upsampled back
    control_label_dropout: float = 0.5
    base_checkpoint: str = ""         # where the frozen UNet came from (provenance; not read when loading)

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.hint_factor < 1 or self.image_size % self.hint_factor:
            problems.append(f"hint_factor expected a divisor of image_size {self.image_size}, found {self.hint_factor}")
        if not 0 <= self.control_label_dropout <= 1:
            problems.append(f"control_label_dropout expected in [0, 1], found {self.control_label_dropout}")
        return problems


def _zero_conv(channels: int, out: int | None = None) -> nn.Conv2d:
    conv = nn.Conv2d(channels, out or channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ControlNet(nn.Module):
    """(sample, timestep, class_labels, control) -> (residual per UNet skip, middle residual)."""

    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        unet = diffusion.UNet(c)
        for name in diffusion.ENCODER_MODULES:   # the same module names: the base's weights load into them
            setattr(self, name, getattr(unet, name))
        self.hint_encoder = nn.Sequential(
            nn.Conv2d(c.image_channels, 16, 3, padding=1), nn.SiLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), _zero_conv(32, c.width))
        with torch.no_grad():
            _, skips = diffusion.encode(unet, torch.zeros(1, c.image_channels, c.image_size, c.image_size),
                                        diffusion.embed(unet, torch.zeros(1), torch.zeros(1, dtype=torch.long)))
        self.skip_convs = nn.ModuleList(_zero_conv(s.shape[1]) for s in skips)
        self.mid_conv = _zero_conv(unet.mid2.conv2.out_channels)

    def forward(self, sample, timestep, class_labels, control):
        """control: the hint image in [0, 1], as users have it."""
        emb = diffusion.embed(self, timestep, class_labels)
        h, skips = diffusion.encode(self, sample, emb, hint=self.hint_encoder(control * 2 - 1))
        return [conv(s) for conv, s in zip(self.skip_convs, skips)], self.mid_conv(h)


class ControlledUNet(nn.Module):
    """The graph as exported: the frozen UNet and the ControlNet fused, the residuals scaled
    per image by conditioning_scale (0: the base model exactly)."""

    def __init__(self, unet: diffusion.UNet, controlnet: ControlNet):
        super().__init__()
        self.unet, self.controlnet = unet, controlnet

    def forward(self, sample, timestep, class_labels, control, conditioning_scale):
        skips, mid = self.controlnet(sample, timestep, class_labels, control)
        scale = conditioning_scale[:, None, None, None]
        return self.unet(sample, timestep, class_labels, [s * scale for s in skips], mid * scale)


class ControlNetModel(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.unet = diffusion.UNet(c).requires_grad_(False)   # the base model's EMA weights, frozen
        self.controlnet = ControlNet(c)
        self.controlnet_ema = copy.deepcopy(self.controlnet).requires_grad_(False)
        self.register_buffer("alphas_cumprod", diffusion.alphas_cumprod(c), persistent=False)

    def exported(self) -> ControlledUNet:
        return ControlledUNet(self.unet, self.controlnet_ema)


def build(config: Config) -> ControlNetModel:
    return ControlNetModel(config)


def default_data(options: dict) -> str:
    """The data --base was trained on, as its training recorded it (a built-in set's name or a
    folder's path): a ControlNet learns on its base's data, whose class embedding it keeps."""
    from ...package import read_json
    from ...training.checkpoint import data_trained_on

    base = Path(options.get("base") or DEFAULT_BASE)
    try:   # the config alone: the weights load in prepare_data
        source, gone = data_trained_on(read_json(base / "config.json", CheckpointError).get("data", {}))
    except (CheckpointError, AttributeError):
        return "digits"   # prepare_data says what is wrong with the base
    if gone:
        raise DataError(f"--data: expected the data --base {str(base)!r} was trained on at {source!r}, found nothing "
                        "at that path (moved or deleted?): give its new place with --data")
    return source


def prepare_data(data, image_size, channels, seed, options):
    """The base diffusion checkpoint decides the model's shape: its config becomes this
    one's, at its image size and channels."""
    from ...training.checkpoint import load_checkpoint, data_trained_on
    from ...training.data import data_class_names, data_classes, load_images

    base = Path(checkpoint_named(options.pop("base", None) or DEFAULT_BASE))   # a shipped diffusion model's name too
    ckpt = load_checkpoint(base)
    if ckpt.family != "diffusion":
        raise ConfigError(f"--base {str(base)!r}: expected a diffusion checkpoint, found a {ckpt.family} one")
    c = ckpt.config
    for flag, given, base_value in (("--image-size", image_size, c.image_size), ("--channels", channels, c.image_channels)):
        if given not in (None, base_value):   # each said alone: "found 16 / None" named a flag not given
            raise ConfigError(f"{flag}: expected the base model's {base_value} (the base checkpoint {str(base)!r} "
                              f"fixes it; leave it out), found {given}")
    shaping = sorted(set(options) - CONTROL_OPTIONS)
    if shaping:
        raise ConfigError(f"controlnet options: expected only {sorted(CONTROL_OPTIONS)} (the base checkpoint fixes the "
                          f"architecture), found {shaping}")
    # the class embedding is the base's, frozen: data of other classes refused before the warning below, which
    # it would make moot, and before a folder's loading (the digits' classes, or a folder's subfolders)
    if (classes := data_classes(data)) != c.num_classes:
        raise ConfigError(f"--data {data!r}: expected data with the base model's {c.num_classes} classes, "
                          f"found {classes} (a folder needs a --base diffusion checkpoint trained on it)")
    if (named := data_class_names(data)) != (base_named := ckpt.data.get("classes")):   # its frozen embedding's meaning
        raise ConfigError(f"--data {data!r}: expected the base model's classes ({_said_classes(base_named)}), found "
                          f"{_said_classes(named)}: a ControlNet steers the base's classes as it learned them")
    trained_on, moved = data_trained_on(ckpt.data)   # moved: given anew with --data, no warning
    if not moved and (str(Path(data).resolve()) if Path(trained_on).is_absolute() else data) != trained_on:
        warnings.warn(f"--data {data!r}: the base {str(base)!r} was trained on {trained_on!r}; a ControlNet learns to "
                      "steer the base on the data the base knows (without --data, train takes the base's)",
                      EdgegenWarning, stacklevel=2)
    images = load_images(data, image_size=c.image_size, channels=c.image_channels, seed=seed, classes=c.num_classes > 0)
    return images, {**dataclasses.asdict(c), "base_checkpoint": str(base.resolve())}


def _said_classes(names: list[str] | None) -> str:
    return ", ".join(names) if names else "unnamed ids"


class Trainer(diffusion.Trainer):
    """The diffusion family's DDPM loss through the frozen UNet, gradients into the ControlNet only."""

    def __init__(self, model: ControlNetModel, lr: float, total_steps: int = 1):
        from ...training.checkpoint import load_checkpoint

        base = self.base = load_checkpoint(model.config.base_checkpoint).model.unet_ema.state_dict()
        model.unet.load_state_dict(base)
        # the trainable copy starts as the base's encoder half; the hint encoder and zero convolutions stay at zero
        model.controlnet.load_state_dict({k: v for k, v in base.items() if k.split(".")[0] in diffusion.ENCODER_MODULES},
                                         strict=False)
        model.controlnet_ema.load_state_dict(model.controlnet.state_dict())
        super().__init__(model, lr, total_steps, trained=model.controlnet, ema_target=model.controlnet_ema)
        self.label_dropout = model.config.control_label_dropout

    def start_from_trained(self) -> None:
        """train --init loaded a ControlNet checkpoint whole: the frozen UNet is the base's this run
        records (--base), the control the checkpoint's. A base other than the one the control was
        trained beside (its UNet's weights differ: another model, not the same one moved) is said:
        a mistyped --base was taken without a word (helper 150)."""
        beside = self.model.unet.state_dict()
        if any(not torch.equal(beside[name], weights) for name, weights in self.base.items()):
            warnings.warn(f"--base {self.model.config.base_checkpoint!r}: expected the base the --init ControlNet was "
                          "trained beside (or that one moved), found another model (its UNet's weights differ): the "
                          "control, which learned to steer that one, is fine-tuned on this one from here",
                          EdgegenWarning, stacklevel=2)
        self.model.unet.load_state_dict(self.base)

    def predict(self, noisy, t, labels, images):
        hint = torch.from_numpy(coarse_hint((images.numpy() + 1) * 0.5, self.model.config.hint_factor))
        skips, mid = self.model.controlnet(noisy, t, labels, hint)
        return self.model.unet(noisy, t, labels, skips, mid)
