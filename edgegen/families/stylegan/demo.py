"""The demo's showcase of StyleGAN packages."""

from __future__ import annotations

import numpy as np

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Samples at truncation psi 0.7, and a style-mixing grid: in each row the coarse styles
    (layers 0-3) of one seed, the fine ones of the column's seed."""
    save_grid(pipe.sample(64, seed=0, truncation=0.7), folder / f"{name}_samples.png", nrow=8)
    coarse, fine = list(range(8)), [100 + i for i in range(8)]
    rows = [pipe.mix([a], fine, crossover_layer=4, truncation=0.7) for a in coarse]
    save_grid(np.concatenate(rows), folder / f"{name}_mixing.png", nrow=8)
    lines = [f"![{name} samples]({name}_samples.png)", "",
             "Samples at truncation psi 0.7 (const noise). Style mixing: each row keeps one seed's coarse "
             "styles (layers 0-3), each column gives its seed's fine styles (layers 4-7):", "",
             f"![style mixing]({name}_mixing.png)", ""]
    return {"sampling": {"truncation": 0.7, "noise_mode": "const", "mixing_crossover_layer": 4}}, lines
