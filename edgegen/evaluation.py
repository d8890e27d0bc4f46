"""Quality measures over the built-in data, shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

from .metrics import roc_auc
from .training.data import load_images, noise_images


def anomaly_aucs(pipe) -> dict[str, float]:
    """ROC AUC of a pipeline's `anomaly_score`: held-out digits against uniform noise and
    against greyscale crops of the shipped photographs (1.0: every digit scores lower)."""
    shape = pipe.image_shape
    digits = load_images("digits", image_size=shape[-1], channels=shape[0]).test
    crops = load_images("natural", image_size=shape[-1], channels=shape[0]).test
    noise = noise_images(len(digits), shape, seed=1)
    held_out = pipe.anomaly_score(digits)
    return {"digits_vs_noise": round(roc_auc(held_out, pipe.anomaly_score(noise)), 4),
            "digits_vs_natural_crops": round(roc_auc(held_out, pipe.anomaly_score(crops)), 4)}
