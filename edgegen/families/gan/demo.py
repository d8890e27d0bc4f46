"""The demo's showcase of GAN packages."""

from __future__ import annotations

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """64 samples, seed 0."""
    save_grid(pipe.sample(64, seed=0), folder / f"{name}_samples.png", nrow=8)
    return {}, [f"![{name} samples]({name}_samples.png)", ""]
