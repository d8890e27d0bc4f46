"""Anomaly scores against a threshold calibrated on normal pictures, and the frames a camera gives
when it fails (docs/python-api.md, "Anomaly scores"): black, white, mid-grey and uniform noise.

For each shipped model with an `anomaly_score` (the VAE, the VAE-GAN, the digit flow), the held-out
digits (the split no training saw) are cut in two halves: the first calibrates the threshold (its
99th percentile of scores), the second says how many normal pictures that threshold flags. Then
each frame is scored against it. Scores are deterministic (no sampling), so one run gives them.

    python benchmarks/anomaly_frames.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse

import numpy as np

import edgegen
from edgegen.anomaly import quantile_score
from edgegen.bench import machine_info, write_results
from edgegen.training.data import load_images

MODELS = ("vae-digits", "vaegan-digits", "flow-digits")
QUANTILE = 0.99


def frames(size: int) -> dict[str, np.ndarray]:
    shape = (1, 1, size, size)
    return {"black": np.zeros(shape), "white": np.ones(shape), "grey": np.full(shape, 0.5),
            "noise": np.random.default_rng(0).random(shape)}


def measure(name: str) -> dict:
    pipe = edgegen.load(name)
    size = pipe.image_shape[-1]
    held_out = load_images("digits", size, seed=0).test   # the data split the shipped models were trained beside
    half = len(held_out) // 2
    calibration, normal = pipe.anomaly_score(held_out[:half]), pipe.anomaly_score(held_out[half:])
    threshold = quantile_score(calibration, QUANTILE)   # as edgegen score calibrates it
    return {"model": name, "size": size, "threshold": threshold, "normal_flagged": float((normal > threshold).mean()),
            "normal_range": [float(normal.min()), float(normal.max())],
            "frames": {frame: float(pipe.anomaly_score(x)[0]) for frame, x in frames(size).items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = [measure(name) for name in MODELS]
    names = list(rows[0]["frames"])
    lines = [f"Threshold: the {QUANTILE:.0%} quantile of the scores of half the held-out digits; flagged: the share "
             "of the other half above it. A frame marked * scores below the threshold: it passes as normal.", "",
             "| model | threshold | normal flagged | normal scores | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for r in rows:
        shown = [f"{v:.4g}{'' if v > r['threshold'] else ' *'}" for v in r["frames"].values()]
        lines.append(f"| {r['model']} | {r['threshold']:.4g} | {r['normal_flagged']:.1%} | "
                     f"{r['normal_range'][0]:.4g}-{r['normal_range'][1]:.4g} | " + " | ".join(shown) + " |")
    write_results(args.out, "anomaly_frames", {"machine": machine_info(), "quantile": QUANTILE, "rows": rows},
                  "\n".join(lines))


if __name__ == "__main__":
    main()
