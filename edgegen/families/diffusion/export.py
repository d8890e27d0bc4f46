"""The diffusion model's export: the EMA UNet, gated on held-out images noised across the
schedule with real and "no label" classes. ControlNet and latent diffusion build on it."""

from __future__ import annotations

import numpy as np

from ...export.spec import ExportSpec, GraphSpec, held_out_images, image_shape
from ...package import TensorSpec
from .pipeline import DiffusionConfig

# Fractions of the schedule the gate visits: both ends, and fractional timesteps (Euler's).
GATE_TIMESTEPS = (1.0, 0.0, 0.5, 0.25, 0.7513, 0.0421, 0.9, 0.333)


def _denoiser_inputs(ckpt, batch, rng, data):
    """Held-out images noised to several timesteps across the schedule (a different run of
    GATE_TIMESTEPS at each call), with real labels and the "no label" index mixed in."""
    return noised(ckpt, held_out_images(data, batch, rng) * 2 - 1, rng)


def noised(ckpt, x0: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    noisy, t = noised_inputs(ckpt.model.alphas_cumprod.numpy().astype(np.float64), x0, rng)
    labels = rng.integers(0, ckpt.config.num_classes + 1, size=len(x0))
    return {"sample": noisy, "timestep": t, "class_labels": labels.astype(np.int64)}


def noised_inputs(alphas_cumprod: np.ndarray, x0: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x0 noised to timesteps across the schedule (both ends and fractional ones, Euler's): the
    noisy samples and their float32 timesteps."""
    first = int(rng.integers(len(GATE_TIMESTEPS)))
    fractions = np.array([GATE_TIMESTEPS[(first + i) % len(GATE_TIMESTEPS)] for i in range(len(x0))])
    t = fractions * (len(alphas_cumprod) - 1)
    a = np.interp(t, np.arange(len(alphas_cumprod)), alphas_cumprod).reshape(-1, *([1] * (x0.ndim - 1)))
    noisy = np.sqrt(a) * x0 + np.sqrt(1 - a) * rng.standard_normal(x0.shape)
    return noisy.astype(np.float32), t.astype(np.float32)


def schedule(ckpt) -> dict:
    """The DiffusionConfig fields of a checkpoint (its subclasses' configs add their own)."""
    c = ckpt.config
    return dict(image_shape=image_shape(c), num_classes=c.num_classes, null_label=c.null_label,
                num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule, beta_start=c.beta_start,
                beta_end=c.beta_end, prediction_type=c.prediction_type, data=ckpt.data)


def denoiser_inputs(c) -> tuple[TensorSpec, ...]:
    return (TensorSpec("sample", "float32", ("batch", *image_shape(c))), TensorSpec("timestep", "float32", ("batch",)),
            TensorSpec("class_labels", "int64", ("batch",)))


SPEC = ExportSpec(
    family="diffusion",
    graphs=(GraphSpec("unet", lambda m: m.unet_ema, denoiser_inputs, ("prediction",), _denoiser_inputs),),
    runtime_config=lambda ckpt: DiffusionConfig(**schedule(ckpt)),
)
