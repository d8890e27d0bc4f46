"""The diffusion issue's numbers, in one run on this machine:

- sampler x steps (DDPM 1000; DDIM 10, 20, 50; DPM-Solver++ 10, 20; Euler 20): the Frechet
  distance between a digit classifier's penultimate features of real held-out digits and of
  N generated ones (labels 0..9 in turn, guidance 3), the share of samples the classifier
  assigns to the requested label, and seconds per image;
- the pipeline's overhead: the time of a 20-step sample at batch 8 spent outside the
  denoiser calls.

    python benchmarks/diffusion.py CHECKPOINT [--n 1000] [--out benchmarks/results]

The classifier is trained here on the digits' train split (no network); its held-out
accuracy is reported beside the table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edgegen.bench import machine_info, write_results
from edgegen.export import export_checkpoint
from edgegen.metrics import frechet_distance
from edgegen.training.classifier import train_digit_judge
from edgegen.training.data import digit_labels
from edgegen.runtimes import load

CONFIGS = (("ddpm", 1000), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp-2m", 10), ("dpmpp-2m", 20), ("euler", 20))
# Guidance 1 measures the model and sampler alone; guidance 3 (the label target's setting)
# trades diversity, and so Frechet distance, for fidelity to the label.
GUIDANCES = (1.0, 3.0)


def pipeline_overhead(pipe, repeats: int = 30) -> dict:
    """Share of a 20-step, batch-8 sample spent outside session.run (guidance on: 16 per call)."""
    session = pipe.sessions["unet"]
    inner = {"seconds": 0.0}
    original = session.run

    def timed_run(feeds):
        start = time.perf_counter()
        out = original(feeds)
        inner["seconds"] += time.perf_counter() - start
        return out

    session.run = timed_run
    shares = []
    try:
        pipe.sample(8, steps=20, labels=np.arange(8) % 10, seed=0)  # warm-up
        for r in range(repeats):
            inner["seconds"] = 0.0
            start = time.perf_counter()
            pipe.sample(8, steps=20, labels=np.arange(8) % 10, seed=r)
            total = time.perf_counter() - start
            shares.append((total - inner["seconds"]) / total)
    finally:
        session.run = original
    return {"median_share_outside_denoiser": round(float(np.median(shares)), 4), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgegen-diffusion-"))
    try:
        pkg = export_checkpoint(args.checkpoint, work / "pkg")
        pipe = load(pkg, backend="ort-cpu", threads=args.threads)
        size = pipe.image_shape[-1]
        judge = train_digit_judge(size)
        _, _, real, _ = digit_labels(size)
        real_features = judge.features(real)
        labels = np.arange(args.n) % 10
        rows = []
        for guidance, (sampler, steps) in ((g, c) for g in GUIDANCES for c in CONFIGS):
            start = time.perf_counter()
            images = pipe.sample(args.n, steps=steps, sampler=sampler, guidance_scale=guidance, labels=labels, seed=0)
            seconds = time.perf_counter() - start
            rows.append({"guidance": guidance, "sampler": sampler, "steps": steps,
                         "frechet_distance": round(frechet_distance(real_features, judge.features(images)), 4),
                         "label_accuracy": round(float((judge.predict(images) == labels).mean()), 4),
                         "seconds_per_image": round(seconds / args.n, 6)})
            print(rows[-1], flush=True)
        overhead = pipeline_overhead(pipe)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    def row(guidance, sampler, steps):
        return next(r for r in rows if (r["guidance"], r["sampler"], r["steps"]) == (guidance, sampler, steps))

    summary = {}
    for g in GUIDANCES:
        ddpm, dpm20 = row(g, "ddpm", 1000), row(g, "dpmpp-2m", 20)
        summary[f"{g:g}"] = {
            "dpmpp20_fd_vs_ddpm1000": round(dpm20["frechet_distance"] / ddpm["frechet_distance"], 3),
            "dpmpp20_speedup_vs_ddpm1000": round(ddpm["seconds_per_image"] / dpm20["seconds_per_image"], 1),
            "dpmpp20_label_accuracy": dpm20["label_accuracy"],
        }
    report = {"machine": machine_info(), "checkpoint": str(args.checkpoint), "n": args.n, "guidance_scales": GUIDANCES,
              "classifier_held_out_accuracy": round(judge.test_accuracy, 4), "rows": rows, "overhead": overhead,
              "summary": summary}
    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores. {args.n} samples per row, "
             f"labels 0-9 in turn; digit classifier held-out accuracy {judge.test_accuracy:.3f}; real features from "
             f"the {len(real)} held-out digits.", "",
             "| guidance | sampler | steps | Frechet distance | label accuracy | seconds / image |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['guidance']:g} | {r['sampler']} | {r['steps']} | {r['frechet_distance']:.2f} | "
              f"{r['label_accuracy']:.3f} | {r['seconds_per_image']:.5f} |" for r in rows]
    lines += [""] + [f"Guidance {g}: DPM-Solver++ 20 steps has {s['dpmpp20_fd_vs_ddpm1000']:.2f}x DDPM-1000's Frechet "
                     f"distance, is {s['dpmpp20_speedup_vs_ddpm1000']:.0f}x faster, label accuracy "
                     f"{s['dpmpp20_label_accuracy']:.3f}." for g, s in summary.items()]
    lines += [f"Pipeline overhead (time outside the denoiser, 20 steps, batch 8 with guidance): "
              f"{overhead['median_share_outside_denoiser'] * 100:.1f}% (median of {overhead['repeats']}).", ""]
    write_results(args.out, "diffusion", report, "\n".join(lines))


if __name__ == "__main__":
    main()
