"""The demo's showcase of diffusion packages (latent diffusion's too)."""

from __future__ import annotations

import numpy as np

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Each column one class, 0 to 9: DPM-Solver++ 20 steps, guidance 3."""
    labels = np.tile(np.arange(10), 8)
    images = pipe.sample(len(labels), steps=20, sampler="dpmpp-2m", guidance_scale=3.0, labels=labels, seed=0)
    save_grid(images, folder / f"{name}_samples.png", nrow=10)
    latent = getattr(pipe, "to_space", None) is not None and "decoder" in pipe.sessions
    lines = [f"![{name} samples]({name}_samples.png)", "",
             "Columns are the classes 0 to 9 (DPM-Solver++, 20 steps, guidance 3). `edgegen bench` times one "
             "denoiser call; a 20-step guided sample makes 20 calls at twice the batch."
             + (" Latent diffusion: the UNet denoises 4x8x8 latents, the decoder makes the 32x32 images."
                if latent else ""), ""]
    return {"sampling": {"sampler": "dpmpp-2m", "steps": 20, "guidance_scale": 3.0}}, lines
