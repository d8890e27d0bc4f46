"""The hybrid-models issue's numbers for what exists of it so far: the class-conditional GAN
and the VAE-GAN.

- label accuracy: the digit classifier's reading of 1,000 samples (100 per class, averaged
  from 32x32 back down to the digits' own 8x8) against the requested class, and the Frechet
  distance of its features to the held-out digits, at several truncation thresholds;
- generator latency at batch 8, ONNX Runtime CPU against PyTorch eager, interleaved;
- VAE-GAN against the plain VAE, trained on the same digits (shipped checkpoints): sharpness
  as mean image-gradient energy of samples and reconstructions beside the real digits', the
  Frechet distance of the classifier's features of samples to the held-out digits, and the
  reconstruction error; both decoders' latency against PyTorch eager.

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


def gradient_energy(images: np.ndarray) -> float:
    """Mean squared difference between neighbouring pixels: blur lowers it."""
    dx, dy = np.diff(images, axis=-1), np.diff(images, axis=-2)
    return float((dx**2).mean() + (dy**2).mean())


def vae_against_vaegan(judge, scratch: Path) -> dict:
    digits = load_images("digits", image_size=32).test
    real = judge.features(digits.reshape(len(digits), 1, 8, 4, 8, 4).mean(axis=(3, 5)))
    models = {}
    for name in ("vae-digits", "vaegan-digits"):
        pkg = export_checkpoint(PRETRAINED / name, scratch / name)
        pipe = load(pkg, backend="ort-cpu")
        samples, recon = pipe.sample(1000, seed=0), pipe.reconstruct(digits)
        clipped = np.clip(recon, 1e-6, 1 - 1e-6)
        bce = -(digits * np.log(clipped) + (1 - digits) * np.log1p(-clipped)).reshape(len(digits), -1).sum(1).mean()
        small = samples.reshape(1000, 1, 8, 4, 8, 4).mean(axis=(3, 5))
        bench = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / name)
        models[name] = {"sample_gradient_energy": gradient_energy(samples),
                        "reconstruction_gradient_energy": gradient_energy(recon),
                        "sample_frechet_distance": frechet_distance(real, judge.features(small)),
                        "reconstruction_bce": float(bce), "decoder_vs_torch": bench["speedup_vs_torch_p50"]["decoder"]}
    return {"real_gradient_energy": gradient_energy(digits), "models": models}


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
    sharpness = vae_against_vaegan(judge, scratch)
    report = {"benchmark": "hybrids", "cgan": {"classifier_held_out_accuracy": judge.test_accuracy, "rows": rows,
                                               "latency": latency}, "vaegan": sharpness, "machine": machine_info()}
    lines = [f"Class-conditional GAN (digits, 32x32), 1,000 samples, 100 per class; digit classifier held-out "
             f"accuracy {judge.test_accuracy:.3f}; Frechet distance of its features to the held-out digits:", "",
             "| truncation | label accuracy | Frechet distance |", "|---|---|---|"]
    lines += [f"| {'none' if r['truncation'] is None else r['truncation']} | {100 * r['label_accuracy']:.1f}% | "
              f"{r['frechet_distance']:.2f} |" for r in rows]
    lines += ["", "Generator at batch 8, 2 threads, interleaved:", "", format_table(latency), ""]
    lines += ["VAE-GAN against the plain VAE (both shipped, same digits, 32x32); 1,000 samples from the prior "
              "and reconstructions of the 270 held-out digits:", "",
              "| model | sample gradient energy | reconstruction gradient energy | sample FD | reconstruction BCE nats/image | decoder vs torch |",
              "|---|---|---|---|---|---|"]
    for name, r in sharpness["models"].items():
        lines.append(f"| {name} | {r['sample_gradient_energy']:.4f} | {r['reconstruction_gradient_energy']:.4f} | "
                     f"{r['sample_frechet_distance']:.2f} | {r['reconstruction_bce']:.1f} | {r['decoder_vs_torch']:.2f}x |")
    lines += [f"| held-out digits | {sharpness['real_gradient_energy']:.4f} | | 0 | | |", ""]
    write_results(args.out, "hybrids", report, "\n".join(lines))


if __name__ == "__main__":
    main()
