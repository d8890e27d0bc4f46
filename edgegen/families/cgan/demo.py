"""The demo's showcase of class-conditional GAN packages."""

from __future__ import annotations

import numpy as np

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Each column one class, 0 to 9 (no truncation)."""
    labels = np.tile(np.arange(10), 8)
    save_grid(pipe.sample(len(labels), labels=labels, seed=0), folder / f"{name}_samples.png", nrow=10)
    return {}, [f"![{name} samples]({name}_samples.png)", "",
                "Columns are the classes 0 to 9 (the generator takes the class; no truncation).", ""]
