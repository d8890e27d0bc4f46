"""Import a diffusers DDPM/DDIM-layout pipeline (a `UNet2DModel` and its scheduler) as a diffusion
package: the UNet's graph gated against PyTorch, the scheduler mapped to edgegen's samplers.

A UNet2DModel is unconditional: its graph takes the sample and the timestep, no class labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import CheckpointError
from ...export.diffusers_import import load_component, read_scheduler
from ...package import files_sha256
from ...export.spec import ExportSpec, GraphSpec
from ...package import TensorSpec
from ...runtimes.samplers import make_sampler
from ...training.checkpoint import Checkpoint
from .export import noised_inputs
from .pipeline import DiffusionConfig


RECORDED_FEEDS = 8   # of batch 2: optimize calibrates on half and gates on the other half


class UNetDenoiser(torch.nn.Module):
    """A diffusers UNet as a graph with named tensors: (sample, timestep) -> prediction."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep):
        return self.unet(sample, timestep).sample


def smooth_images(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Pictures in [-1, 1] with structure at a few scales (coarse noise upsampled): what a
    denoiser sees better than white noise, for a gate with no training data at hand."""
    n, c, h, w = shape
    out = np.zeros(shape, np.float32)
    for cells in (2, 4, 8):
        coarse = rng.uniform(-1, 1, (n, c, cells, cells)).astype(np.float32)
        out += np.kron(coarse, np.ones((-(-h // cells), -(-w // cells)), np.float32))[:, :, :h, :w] / 3
    return np.clip(out, -1, 1)


def sample_sides(sample_size, where: Path) -> list[int]:
    """[height, width] of a UNet config's sample_size: a side, or the two (diffusers' pipelines read
    a rectangle's as sample_size[0] and [1])."""
    sides = [sample_size] * 2 if isinstance(sample_size, int) else sample_size
    if not (isinstance(sides, (list, tuple)) and len(sides) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sides)):
        raise CheckpointError(f"{where}: expected sample_size as a side or [height, width], found {sample_size!r}")
    return list(sides)


def import_unet2d(folder: Path, layout: dict) -> tuple[Checkpoint, ExportSpec]:
    unet, weights = load_component(folder, layout, "unet", ("UNet2DModel",))
    c = unet.config
    if c.get("num_class_embeds") or c.get("class_embed_type"):
        raise CheckpointError(f"{folder / 'unet'}: expected an unconditional UNet2DModel, found class embeddings "
                              f"(num_class_embeds {c.get('num_class_embeds')}, class_embed_type {c.get('class_embed_type')!r}); "
                              "diffusers' DDPM and DDIM pipelines do not condition on classes either")
    if c.out_channels != c.in_channels:
        why = "learned variances beside the noise, which are not imported" if c.out_channels == 2 * c.in_channels else \
            "a prediction of another shape than the sample's, which no sampler steps with"
        raise CheckpointError(f"{folder / 'unet'}: expected out_channels {c.in_channels} (a prediction of the sample's "
                              f"shape), found {c.out_channels} ({why})")
    embedding = c.get("time_embedding_type", "positional")
    if embedding != "positional":   # a learned table's Gather took the float timestep (a traceback); Fourier
        # features of log(t) are a score-SDE model's, and give NaN at t = 0, where every schedule here ends
        why = {"learned": "a table looked up by integer timestep", "fourier": "Gaussian Fourier features of log(t), a "
               "score-SDE model's, NaN at the timestep 0 every DDPM-style schedule ends at"}.get(embedding, "unknown")
        raise CheckpointError(f"{folder / 'unet'}: expected time_embedding_type 'positional' (the sinusoidal embedding "
                              f"of DDPM's timesteps, which edgegen's samplers give), found {embedding!r} ({why})")
    sizes = sample_sides(c.sample_size, folder / "unet")
    # each down block but the last halves the sides, rounding up, and its up block doubles them back:
    # an odd side meets a skip connection one pixel short, in diffusers' own forward too
    halvings = len(c.down_block_types) - 1
    if any(side % 2 ** halvings for side in sizes):
        raise CheckpointError(f"{folder / 'unet'}: expected sample_size sides that are multiples of {2 ** halvings} "
                              f"(its down blocks halve them {halvings} time{'s' if halvings > 1 else ''}; "
                              f"UNet2DModel's forward fails on others), found {c.sample_size!r}")
    settings = read_scheduler(folder, layout.get("_class_name"))
    shape = [c.in_channels, *sizes]
    alphas = make_sampler("ddim", **settings.schedule).alphas_cumprod

    def inputs(config) -> tuple[TensorSpec, ...]:
        return TensorSpec("sample", "float32", ("batch", *shape)), TensorSpec("timestep", "float32", ("batch",))

    def realistic(ckpt, batch, rng, data) -> dict[str, np.ndarray]:
        sample, t = noised_inputs(alphas, smooth_images((batch, *shape), rng), rng)
        return {"sample": sample, "timestep": t}

    source = {"source": "diffusers", "pipeline": layout.get("_class_name"), "unet": "UNet2DModel",
              "scheduler": layout.get("scheduler", [None, None])[1]}
    spec = ExportSpec(
        family="diffusion",
        graphs=(GraphSpec("unet", lambda m: m, inputs, ("prediction",), realistic),),
        runtime_config=lambda ckpt: DiffusionConfig(image_shape=shape, num_classes=0, null_label=0, data=source,
                                                    **settings.config_fields()),
        needs_data=False,
        recorded_feeds=RECORDED_FEEDS,
    )
    ckpt = Checkpoint(folder, "diffusion", dict(c), UNetDenoiser(unet).eval(), source, {}, files_sha256(weights))
    return ckpt, spec


def import_ddpm_layout(folder: Path, layout: dict, scratch: Path) -> tuple[Checkpoint, ExportSpec]:
    """A UNet2DModel pipeline (DDPMPipeline, DDIMPipeline, ...) as a checkpoint and the spec of its
    graphs (`edgegen export --from-diffusers DIR` exports them)."""
    extra = sorted(set(k for k in layout if not k.startswith("_")) - {"unet", "scheduler"})
    if extra:
        raise CheckpointError(f"diffusers pipeline {str(folder)!r} ({layout.get('_class_name')}): expected a unet and "
                              f"a scheduler beside a UNet2DModel, found also {extra}")
    return import_unet2d(folder, layout)
