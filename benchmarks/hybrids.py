"""The hybrid-models issue's numbers for what exists of it so far: the class-conditional GAN.

- label accuracy: the digit classifier's reading of 1,000 samples (100 per class, averaged
  from 32x32 back down to the digits' own 8x8) against the requested class, and the Frechet
  distance of its features to the held-out digits, at several truncation thresholds;
- generator latency at batch 8, ONNX Runtime CPU against PyTorch eager, interleaved.

    python benchmarks/hybrids.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edgegen.bench import bench_package, format_table, machine_info, write_results
from edgegen.demo import PRETRAINED
from edgegen.export import export_checkpoint
from edgegen.metrics import frechet_distance
from edgegen.models.classifier import train_digit_judge
from edgegen.models.data import load_images
from edgegen.runtimes import load

TRUNCATIONS = (None, 2.0, 1.0, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="edgegen-hybrids-"))
    pkg = export_checkpoint(PRETRAINED / "cgan-digits", scratch / "cgan")
    pipe = load(pkg, backend="ort-cpu")
    judge = train_digit_judge(8)   # at the digits' own 8x8: samples are averaged back down from 32x32
    real = judge.features(load_images("digits", image_size=8).test)
    labels = np.arange(1000) % 10
    rows = []
    for t in TRUNCATIONS:
        images = pipe.sample(len(labels), labels=labels, truncation=t, seed=0)
        images = images.reshape(len(labels), 1, 8, 4, 8, 4).mean(axis=(3, 5))
        rows.append({"truncation": t, "label_accuracy": float((judge.predict(images) == labels).mean()),
                     "frechet_distance": frechet_distance(real, judge.features(images))})
    latency = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / "cgan-digits")
    report = {"benchmark": "hybrids", "cgan": {"classifier_held_out_accuracy": judge.test_accuracy, "rows": rows,
                                               "latency": latency}, "machine": machine_info()}
    lines = [f"Class-conditional GAN (digits, 32x32), 1,000 samples, 100 per class; digit classifier held-out "
             f"accuracy {judge.test_accuracy:.3f}; Frechet distance of its features to the held-out digits:", "",
             "| truncation | label accuracy | Frechet distance |", "|---|---|---|"]
    lines += [f"| {'none' if r['truncation'] is None else r['truncation']} | {100 * r['label_accuracy']:.1f}% | "
              f"{r['frechet_distance']:.2f} |" for r in rows]
    lines += ["", "Generator at batch 8, 2 threads, interleaved:", "", format_table(latency), ""]
    write_results(args.out, "hybrids", report, "\n".join(lines))


if __name__ == "__main__":
    main()
