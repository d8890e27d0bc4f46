"""The demo's showcase of ControlNet packages."""

from __future__ import annotations

import numpy as np

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Held-out digits, their coarse hints, and samples that follow the hints with no class
    label (conditioning scale 1), then the same seeds at scale 0 (the base model, unconditional)."""
    from ...training.data import load_images

    digits = load_images("digits", image_size=pipe.image_shape[-1]).test[:10]
    hints = pipe.hint(digits)
    options = {"steps": 20, "sampler": "dpmpp-2m", "seed": 0}
    rows = [digits, hints, pipe.sample(10, control=hints, conditioning_scale=1.0, **options),
            pipe.sample(10, control=hints, conditioning_scale=0.0, **options)]
    save_grid(np.concatenate(rows), folder / f"{name}_samples.png", nrow=10)
    lines = [f"![{name} samples]({name}_samples.png)", "",
             "Rows: held-out digits, their coarse hints (2x2 averages), samples that follow the hints "
             "(conditioning scale 1, no class label, DPM-Solver++ 20 steps), and the same seeds at scale 0 "
             "(exactly the base diffusion model, unconditional).", ""]
    return {"sampling": {**options, "conditioning_scales": [1.0, 0.0]}}, lines
