"""The hybrid-models issue's numbers: the class-conditional GAN, the VAE-GAN, StyleGAN,
ControlNet and latent diffusion, from the shipped checkpoints.

- label accuracy: the digit classifier's reading of 1,000 samples (100 per class, averaged
  from 32x32 back down to the digits' own 8x8) against the requested class, and the Frechet
  distance of its features to the held-out digits, at several truncation thresholds;
- generator latency at batch 8, ONNX Runtime CPU against PyTorch eager, interleaved;
- VAE-GAN against the plain VAE, trained on the same digits (shipped checkpoints): sharpness
  as mean image-gradient energy of samples and reconstructions beside the real digits', the
  Frechet distance of the classifier's features of samples to the held-out digits, and the
  reconstruction error; both decoders' latency against PyTorch eager;
- StyleGAN: the Frechet distance of 1,000 samples at truncation psi 1, 0.7 and 0.5 beside the
  GAN family's generator, and how the classifier spreads them over the ten digits (a
  collapsed generator draws few); mapping and synthesis latency against PyTorch eager;
- ControlNet: hints made from the held-out digits; how closely samples follow them (the mean
  absolute difference between a sample's coarse version and its hint, and how often the
  classifier reads the digit the hint came from), at conditioning scale 1 against scale 0
  (the base model); the fused graph's latency against PyTorch eager and the plain UNet's;
- latent diffusion: label accuracy and Frechet distance of class-conditional samples, seconds
  per image against pixel-space diffusion at the same 32x32 size and the same steps, each
  graph's latency against PyTorch eager.

    python benchmarks/hybrids.py [--only cgan vaegan stylegan controlnet ldm] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edgegen.bench import bench_feeds, bench_package, format_table, interleaved_timings, machine_info, write_results
from edgegen.demo import PRETRAINED
from edgegen.export import export_checkpoint
from edgegen.metrics import frechet_distance
from edgegen.training.classifier import train_digit_judge
from edgegen.training.data import digit_labels, load_images
from edgegen.runtimes import load

TRUNCATIONS = (None, 2.0, 1.0, 0.5)


def gradient_energy(images: np.ndarray) -> float:
    """Mean squared difference between neighbouring pixels: blur lowers it."""
    dx, dy = np.diff(images, axis=-1), np.diff(images, axis=-2)
    return float((dx**2).mean() + (dy**2).mean())


def vae_against_vaegan(judge, scratch: Path) -> dict:
    digits = load_images("digits", image_size=32).test
    real = judge.features(digits)
    models = {}
    for name in ("vae-digits", "vaegan-digits"):
        pkg = export_checkpoint(PRETRAINED / name, scratch / name)
        pipe = load(pkg, backend="ort-cpu")
        samples, recon = pipe.sample(1000, seed=0), pipe.reconstruct(digits)
        clipped = np.clip(recon, 1e-6, 1 - 1e-6)
        bce = -(digits * np.log(clipped) + (1 - digits) * np.log1p(-clipped)).reshape(len(digits), -1).sum(1).mean()
        small = samples
        bench = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / name)
        models[name] = {"sample_gradient_energy": gradient_energy(samples),
                        "reconstruction_gradient_energy": gradient_energy(recon),
                        "sample_frechet_distance": frechet_distance(real, judge.features(small)),
                        "reconstruction_bce": float(bce), "decoder_vs_torch": bench["speedup_vs_torch_p50"]["decoder"]}
    return {"real_gradient_energy": gradient_energy(digits), "models": models}


def class_spread(judge, images: np.ndarray) -> dict:
    """How the classifier spreads samples over the digits: classes drawn at least 2% of the
    time, the largest class's share, and the entropy of the histogram in bits (log2 10 = 3.32)."""
    counts = np.bincount(judge.predict(images), minlength=10) / len(images)
    entropy = -float(sum(p * np.log2(p) for p in counts if p > 0))
    return {"classes_over_2pct": int((counts >= 0.02).sum()), "largest_share": float(counts.max()), "entropy_bits": entropy}


def stylegan_figures(judge, real, scratch: Path) -> dict:
    pkg = export_checkpoint(PRETRAINED / "stylegan-digits", scratch / "stylegan")
    pipe = load(pkg, backend="ort-cpu")
    rows = []
    for psi in (1.0, 0.7, 0.5):
        images = pipe.sample(1000, seed=0, truncation=psi)
        rows.append({"model": f"stylegan psi {psi}", "frechet_distance": frechet_distance(real, judge.features(images)),
                     **class_spread(judge, images)})
    gan = load(export_checkpoint(PRETRAINED / "gan-digits", scratch / "gan"), backend="ort-cpu")
    images = gan.sample(1000, seed=0)
    rows.append({"model": "gan (DCGAN-style, same digits)", "frechet_distance": frechet_distance(real, judge.features(images)),
                 **class_spread(judge, images)})
    latency = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / "stylegan-digits")
    return {"rows": rows, "latency": latency}


def controlnet_figures(judge, scratch: Path, steps: int = 20) -> dict:
    from edgegen.families.controlnet.pipeline import coarse_hint

    pkg = export_checkpoint(PRETRAINED / "controlnet-digits", scratch / "controlnet")
    pipe = load(pkg, backend="ort-cpu")
    _, _, digits, labels = digit_labels(8)
    digits, labels = np.concatenate([digits, digits]), np.concatenate([labels, labels])   # two seeds' worth
    hints = pipe.hint(digits)
    rows = []
    for scale in (1.0, 0.5, 0.0):
        samples = pipe.sample(len(digits), control=hints, conditioning_scale=scale, steps=steps, seed=0)
        rows.append({"conditioning_scale": scale,
                     "hint_l1": float(np.abs(coarse_hint(samples, pipe.config.hint_factor) - hints).mean()),
                     "hint_label_accuracy": float((judge.predict(samples) == labels).mean())})
    latency = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / "controlnet-digits")
    # what the control costs per step: the fused graph against the base UNet alone, interleaved
    fused = load(pkg, backend="ort-cpu", threads=2).sessions["unet"]
    plain = load(export_checkpoint(PRETRAINED / "diffusion-digits", scratch / "diffusion"), backend="ort-cpu",
                 threads=2).sessions["unet"]
    feeds = bench_feeds(fused.inputs, 8)
    plain_feeds = {k: feeds[k] for k in ("sample", "timestep", "class_labels")}
    timings = interleaved_timings({"fused": lambda: fused.run(feeds), "plain": lambda: plain.run(plain_feeds)}, 400, 20)
    per_step = {k: float(np.median(v) * 1e3) for k, v in timings.items()}
    return {"samples": len(digits), "steps": steps, "rows": rows, "latency": latency, "fused_vs_plain_p50_ms": per_step}


def ldm_figures(judge, real, scratch: Path, steps: int = 20) -> dict:
    from edgegen.training.train import train

    pkg = export_checkpoint(PRETRAINED / "ldm-digits", scratch / "ldm")
    pipe = load(pkg, backend="ort-cpu")
    labels = np.arange(500) % 10
    images = pipe.sample(len(labels), labels=labels, steps=steps, seed=0)
    quality = {"label_accuracy": float((judge.predict(images) == labels).mean()),
               "frechet_distance": frechet_distance(real, judge.features(images))}
    # Pixel-space diffusion at the same 32x32 and the same UNet settings; its weights come from
    # a short run because only its latency is compared (it depends on the shapes, not the weights).
    pixel_ckpt = train("diffusion", scratch / "pixel32-ckpt", image_size=32, steps=30, progress=False)
    pixel = load(export_checkpoint(pixel_ckpt, scratch / "pixel32"), backend="ort-cpu", threads=2)
    latent = load(pkg, backend="ort-cpu", threads=2)
    seconds = {"ldm (4x8x8 latents + decoder)": [], "pixel-space diffusion 32x32": []}
    for _ in range(5):   # interleaved
        for name, p in zip(seconds, (latent, pixel)):
            start = time.perf_counter()
            p.sample(8, labels=np.arange(8), steps=steps, seed=0)
            seconds[name].append((time.perf_counter() - start) / 8)
    per_image = {k: float(np.median(v)) for k, v in seconds.items()}
    latency = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / "ldm-digits")
    return {"quality": quality, "seconds_per_image": per_image, "steps": steps, "latency": latency}


def cgan_figures(judge, real, scratch: Path) -> dict:
    pkg = export_checkpoint(PRETRAINED / "cgan-digits", scratch / "cgan")
    pipe = load(pkg, backend="ort-cpu")
    labels = np.arange(1000) % 10
    rows = []
    for t in TRUNCATIONS:
        images = pipe.sample(len(labels), labels=labels, truncation=t, seed=0)
        rows.append({"truncation": t, "label_accuracy": float((judge.predict(images) == labels).mean()),
                     "frechet_distance": frechet_distance(real, judge.features(images))})
    latency = bench_package(pkg, batch=8, iters=200, backend="ort-cpu", threads=2, vs_torch=PRETRAINED / "cgan-digits")
    return {"classifier_held_out_accuracy": judge.test_accuracy, "rows": rows, "latency": latency}


SECTIONS = ("cgan", "vaegan", "stylegan", "controlnet", "ldm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="edgegen-hybrids-"))
    judge = train_digit_judge(8)   # at the digits' own 8x8: 32x32 samples are averaged back down
    real = judge.features(load_images("digits", image_size=8).test)
    report = {"benchmark": "hybrids", "machine": machine_info(), "classifier_held_out_accuracy": judge.test_accuracy}
    lines = [f"Digit classifier (the judge; trained on the digits' train split at 8x8): held-out accuracy "
             f"{judge.test_accuracy:.3f}. Frechet distances use its features against the 270 held-out digits.", ""]
    if "cgan" in args.only:
        report["cgan"] = cgan = cgan_figures(judge, real, scratch)
        lines += cgan_lines(cgan)
    if "vaegan" in args.only:
        report["vaegan"] = sharpness = vae_against_vaegan(judge, scratch)
        lines += vaegan_lines(sharpness)
    if "stylegan" in args.only:
        report["stylegan"] = r = stylegan_figures(judge, real, scratch)
        lines += ["StyleGAN (digits, 32x32), 1,000 samples each (const noise), beside the GAN family's generator:", "",
                  "| model | Frechet distance | classes drawn >= 2% | largest class share | class entropy (bits, max 3.32) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['model']} | {x['frechet_distance']:.2f} | {x['classes_over_2pct']} | {100 * x['largest_share']:.1f}% | "
                  f"{x['entropy_bits']:.2f} |" for x in r["rows"]]
        lines += ["", "Mapping and synthesis at batch 8, 2 threads, interleaved:", "", format_table(r["latency"]), ""]
    if "controlnet" in args.only:
        report["controlnet"] = r = controlnet_figures(judge, scratch)
        lines += [f"ControlNet on the shipped diffusion-digits (8x8): hints from the {r['samples'] // 2} held-out digits "
                  f"(twice: {r['samples']} samples), no class label, DPM-Solver++ {r['steps']} steps:", "",
                  "| conditioning scale | mean abs difference of the sample's 2x2 averages to the hint | classifier reads the hint's digit |",
                  "|---|---|---|"]
        lines += [f"| {x['conditioning_scale']:g}{' (the base model)' if x['conditioning_scale'] == 0 else ''} | "
                  f"{x['hint_l1']:.4f} | {100 * x['hint_label_accuracy']:.1f}% |" for x in r["rows"]]
        step = r["fused_vs_plain_p50_ms"]
        lines += ["", f"Per denoiser call at batch 8, 2 threads, interleaved: the fused graph {step['fused']:.3f} ms p50, "
                  f"the base UNet alone {step['plain']:.3f} ms ({step['fused'] / step['plain']:.2f}x). The fused graph "
                  "against PyTorch eager:", "", format_table(r["latency"]), ""]
    if "ldm" in args.only:
        report["ldm"] = r = ldm_figures(judge, real, scratch)
        q, sec = r["quality"], r["seconds_per_image"]
        pixel, latent = sec["pixel-space diffusion 32x32"], sec["ldm (4x8x8 latents + decoder)"]
        lines += [f"Latent diffusion (digits, 32x32 images, 4x8x8 latents): 500 class-conditional samples (guidance 3, "
                  f"DPM-Solver++ {r['steps']} steps): label accuracy {100 * q['label_accuracy']:.1f}%, Frechet distance "
                  f"{q['frechet_distance']:.2f}.", "",
                  f"Seconds per image at batch 8, {r['steps']} steps with guidance, 2 threads, interleaved: latent "
                  f"{1e3 * latent:.2f} ms, pixel space at 32x32 {1e3 * pixel:.2f} ms ({pixel / latent:.1f}x).", "",
                  "Each graph at batch 8:", "", format_table(r["latency"]), ""]
    name = "hybrids" if list(args.only) == list(SECTIONS) else "hybrids_" + "_".join(args.only)
    write_results(args.out, name, report, "\n".join(lines))


def cgan_lines(r: dict) -> list[str]:
    lines = ["Class-conditional GAN (digits, 32x32), 1,000 samples, 100 per class:", "",
             "| truncation | label accuracy | Frechet distance |", "|---|---|---|"]
    lines += [f"| {'none' if x['truncation'] is None else x['truncation']} | {100 * x['label_accuracy']:.1f}% | "
              f"{x['frechet_distance']:.2f} |" for x in r["rows"]]
    return lines + ["", "Generator at batch 8, 2 threads, interleaved:", "", format_table(r["latency"]), ""]


def vaegan_lines(sharpness: dict) -> list[str]:
    lines = ["VAE-GAN against the plain VAE (both shipped, same digits, 32x32); 1,000 samples from the prior "
             "and reconstructions of the 270 held-out digits:", "",
             "| model | sample gradient energy | reconstruction gradient energy | sample FD | reconstruction BCE nats/image | decoder vs torch |",
             "|---|---|---|---|---|---|"]
    for name, r in sharpness["models"].items():
        lines.append(f"| {name} | {r['sample_gradient_energy']:.4f} | {r['reconstruction_gradient_energy']:.4f} | "
                     f"{r['sample_frechet_distance']:.2f} | {r['reconstruction_bce']:.1f} | {r['decoder_vs_torch']:.2f}x |")
    return lines + [f"| held-out digits | {sharpness['real_gradient_energy']:.4f} | | 0 | | |", ""]


if __name__ == "__main__":
    main()
