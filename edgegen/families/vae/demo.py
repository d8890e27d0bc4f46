"""The demo's showcase of VAE packages (the VAE-GAN's too)."""

from __future__ import annotations

import numpy as np

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Samples, reconstructions of held-out digits, and anomaly-score separation from noise and photos."""
    from ...evaluation import anomaly_aucs
    from ...training.data import load_images

    save_grid(pipe.sample(64, seed=0), folder / f"{name}_samples.png", nrow=8)
    originals = load_images("digits").test[:32]
    pairs = np.stack([originals, pipe.reconstruct(originals)], axis=1).reshape(-1, *originals.shape[1:])
    save_grid(pairs, folder / f"{name}_reconstructions.png", nrow=16)
    aucs = anomaly_aucs(pipe)
    lines = [f"![{name} samples]({name}_samples.png)", "",
             "Held-out digits (odd columns) and their reconstructions (even columns):", "",
             f"![reconstructions]({name}_reconstructions.png)", "",
             "Anomaly score ROC AUC (held-out digits should score lowest): "
             + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in aucs.items()), ""]
    return {"anomaly_auc": aucs}, lines
