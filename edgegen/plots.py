"""Plots drawn with matplotlib (an optional dependency: `pip install matplotlib`); the flow's density
map also without it."""

from __future__ import annotations

import io
import os

import numpy as np

from .errors import BackendError
from .images import picture_format
from .storage import atomic_write_bytes


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendError("plots: expected matplotlib, found it not installed (pip install matplotlib)") from None
    return plt


MIN_HALF_SPAN = 0.5   # of the plotted square beyond the samples' middle, on each axis


def save_density_plot(pipe, samples: np.ndarray, path: str | os.PathLike, grid: int = 200) -> None:
    """A 2-D flow's samples scattered over its log-density heat map (the forward graph on a grid),
    as a PNG or JPEG by the extension of `path`: with matplotlib, titled and with a colour bar;
    without it (a device's runtime alone), the same map drawn with numpy and Pillow."""
    kind = picture_format(path, "RGB")
    low, high = np.percentile(samples, 0.5, axis=0), np.percentile(samples, 99.5, axis=0)
    # samples that collapse to a point (--n 1, temperature 0) span nothing: a unit square around them
    pad = np.maximum(0.25 * (high - low), MIN_HALF_SPAN - (high - low) / 2)
    xs = np.linspace(low[0] - pad[0], high[0] + pad[0], grid, dtype=np.float32)
    ys = np.linspace(low[1] - pad[1], high[1] + pad[1], grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    log_density = pipe.log_prob(mesh).reshape(grid, grid)
    try:
        plt = _pyplot()
    except BackendError:
        from .images import write_picture

        write_picture(_density_picture(np.clip(log_density, log_density.max() - 12, None), samples, xs, ys), path)
        return
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    image = ax.imshow(np.clip(log_density, log_density.max() - 12, None), origin="lower", cmap="viridis",
                      extent=(xs[0], xs[-1], ys[0], ys[-1]), aspect="auto")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="white", alpha=0.5, linewidths=0)
    fig.colorbar(image, ax=ax, label="log density (nats)")
    ax.set_title(f"{pipe.package.manifest.name}: {len(samples)} samples over the learned density")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind.lower(), bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), follow_symlink=True)


# viridis at five points, from low to high: enough for a heat map whose reading is "brighter is likelier"
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)


def _density_picture(log_density: np.ndarray, samples: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """The heat map (rows from the top: y decreasing) with the samples as white dots, as an RGB image."""
    from PIL import Image

    span = log_density.max() - log_density.min()
    level = (log_density - log_density.min()) / (span if span > 0 else 1) * (len(_VIRIDIS) - 1)
    lower = np.minimum(level.astype(int), len(_VIRIDIS) - 2)
    rgb = _VIRIDIS[lower] + (level - lower)[..., None] * (_VIRIDIS[lower + 1] - _VIRIDIS[lower])
    rgb = rgb[::-1].copy()   # the first row drawn is the highest y
    grid = len(xs)
    cols = np.round((samples[:, 0] - xs[0]) / (xs[-1] - xs[0]) * (grid - 1)).astype(int)
    rows = grid - 1 - np.round((samples[:, 1] - ys[0]) / (ys[-1] - ys[0]) * (grid - 1)).astype(int)
    inside = (cols >= 0) & (cols < grid) & (rows >= 0) & (rows < grid)
    rgb[rows[inside], cols[inside]] = 0.5 * rgb[rows[inside], cols[inside]] + 0.5 * 255   # white at half, as the plot's
    return Image.fromarray(rgb.round().astype(np.uint8)).resize((2 * grid, 2 * grid), Image.Resampling.NEAREST)


def save_spectrograms(clips: dict, sample_rate: int, path: str | os.PathLike) -> None:
    """One spectrogram per clip, side by side, titled by its name."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(clips), figsize=(3 * len(clips), 2.6), squeeze=False)
    for ax, (name, audio) in zip(axes[0], clips.items()):
        ax.specgram(audio, NFFT=256, Fs=sample_rate, noverlap=192, cmap="magma")
        ax.set_title(name)
        ax.set_xlabel("s")
    axes[0][0].set_ylabel("Hz")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), follow_symlink=True)
