"""The demo's showcase of flow packages."""

from __future__ import annotations

from ...images import save_grid


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    """Points: samples over the learned log density. Images: samples at temperature 0.7,
    bits per dimension of held-out digits and anomaly-score separation."""
    from ...evaluation import anomaly_aucs
    from ...plots import save_density_plot
    from ...training.data import load_images

    picture = [f"![{name} samples]({name}_samples.png)", ""]
    if not pipe.is_image:
        save_density_plot(pipe, pipe.sample(2000, seed=0), folder / f"{name}_samples.png")
        return {}, picture + ["Samples over the learned log density.", ""]
    save_grid(pipe.sample(64, seed=0, temperature=0.7), folder / f"{name}_samples.png", nrow=8)
    digits = load_images("digits", image_size=pipe.image_shape[-1]).test
    extra = {"bits_per_dim_held_out": round(float(pipe.bits_per_dim(digits).mean()), 4),
             "anomaly_auc": anomaly_aucs(pipe)}
    return extra, picture + [
        f"Samples at temperature 0.7. Held-out digits: {extra['bits_per_dim_held_out']:.3f} bits per dimension; "
        "anomaly score ROC AUC " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in extra["anomaly_auc"].items()), ""]
